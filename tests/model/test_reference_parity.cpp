// Parity with the reference implementations: golden logits from HF transformers and the official LoopUS code.
// SPDX-License-Identifier: MIT
//
// The goldens (tests/golden/{hf,loopus}/*.json) come from
// tests/reference/gen_hf_golden.py and gen_loopus_golden.py; see
// docs/loopus_parity.md. Each one names the `loopus synth` parameters of its
// model. The test regenerates that model in-process, writes it as a Hugging
// Face / LoopUS folder and as GGUF, loads each back and compares the logits.
// A per-tensor fingerprint recorded by the generator first proves the weights
// are the ones the golden was made from, so a changed synth reads as "regenerate
// the goldens", not as a forward-pass bug.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "model/golden_util.hpp"
#include "test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

// Context for a failure; with LOOPUS_PARITY_VERBOSE=1 also printed on success
// (the measured errors, for CI logs and reports).
#define LOOPUS_PARITY_NOTE(expr) \
  INFO(expr);                    \
  if (std::getenv("LOOPUS_PARITY_VERBOSE")) MESSAGE(expr)

namespace {

using test::b64_f32;
using test::fingerprint_matches;
using test::golden_files;
using test::golden_logits;
using test::max_abs_diff;
using test::read_json;
using test::synth_looped;
using test::synth_params;

int32_t argmax(const float* x, int64_t n) { return int32_t(std::max_element(x, x + n) - x); }

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return "[" + s + "]";
}

// ---- looped-model helpers ----

LoopParams fixed(int n) { return LoopParams{HaltingParams::parse("fixed", n)}; }
LoopParams threshold(float thr, int n) {
  LoopParams lp;
  lp.halting.rule = HaltRule::kThreshold;  // q > thr on the post-gate last state, as the official forward
  lp.halting.threshold = thr;
  lp.halting.max_loops = n;
  return lp;
}

template <class Cache>
LoopedModel<Cpu, SelectiveGate, Cache> looped(const std::shared_ptr<const LoopedWeights>& lw, LoopParams lp,
                                              Cache cache = {}, int64_t n_batch = 512) {
  return LoopedModel<Cpu, SelectiveGate, Cache>(lw, lp, ContextParams{.n_ctx = 64, .n_batch = n_batch},
                                                SelectiveGate(lw->gate), cache);
}

/// Feeds the prompt, then each golden new id but the last (teacher forcing, so
/// one flipped argmax does not derail the rest), like the official generate():
/// one eval per official forward call. Returns per-call last-position logits
/// [calls, V] and the loops each call ran.
template <class Model>
std::pair<std::vector<float>, std::vector<int>> replay(Model& m, const std::vector<int32_t>& prompt,
                                                       const std::vector<int32_t>& new_ids) {
  const int64_t V = m.n_vocab();
  std::vector<float> out(new_ids.size() * size_t(V));
  std::vector<int> depth;
  m.eval(prompt, out.data());
  depth.push_back(m.last_loops());
  for (size_t k = 0; k + 1 < new_ids.size(); ++k) {
    const int32_t id = new_ids[k];
    m.eval(std::span<const int32_t>(&id, 1), out.data() + (k + 1) * size_t(V));
    depth.push_back(m.last_loops());
  }
  return {out, depth};
}

constexpr float kParityTol = 1e-4f;

}  // namespace

TEST_CASE("[loopus] reference parity: CausalLM<Cpu> matches HF transformers logits (Llama and Qwen3)") {
  const auto files = golden_files("hf");
  REQUIRE_MESSAGE(!files.empty(), "no goldens in tests/golden/hf (run tests/reference/gen_hf_golden.py)");
  for (const auto& path : files) {
    CAPTURE(path.filename().string());
    const auto g = read_json(path);
    const SynthParams p = synth_params(g.at("synth"));
    const std::vector<int32_t> ids = g.at("input_ids");
    const int64_t T = int64_t(ids.size()), V = p.vocab;
    const auto want = golden_logits(g, "logits_f32le_b64", "logits_shape", T, V);
    const double tol = g.value("tolerance_max_abs", double(kParityTol));

    auto w = synth_weights(p);
    const fs::path dir = test::temp_dir("parity_hf_" + path.stem().string());
    save_hf(*w, (dir / "hf").string());
    save_gguf(*w, (dir / "model.gguf").string());
    if (!fingerprint_matches(dir / "hf", g.at("weights_fingerprint"), g.value("weights_fingerprint_rtol", 1e-9)))
      continue;

    auto run = [&](std::shared_ptr<const ModelWeights> mw, auto backend_tag) {
      using B = decltype(backend_tag);
      CausalLM<B> lm(mw, {.n_ctx = 64, .n_batch = 64});
      std::vector<float> got(size_t(T * V));
      lm.eval(ids, got.data(), /*all_logits=*/true);
      return max_abs_diff(got.data(), want.data(), got.size());
    };
    const float e_mem = run(w, Cpu{});
    const float e_hf = run(load_weights((dir / "hf").string()), Cpu{});
    const float e_gguf = run(load_weights((dir / "model.gguf").string()), Cpu{});
    const float e_ref = run(load_weights((dir / "hf").string()), Reference{});
    LOOPUS_PARITY_NOTE("max |logit - transformers|: in-memory " << e_mem << ", HF folder " << e_hf << ", GGUF "
                                                                << e_gguf << ", Reference backend " << e_ref);
    CHECK_LT(e_mem, tol);
    CHECK_LT(e_hf, tol);
    CHECK_LT(e_gguf, tol);
    CHECK_LT(e_ref, tol);
    fs::remove_all(dir);
  }
}

TEST_CASE("[loopus] reference parity: LoopedModel<Cpu> matches the official LoopUS code (LDSForCausalLM)") {
  const auto files = golden_files("loopus");
  REQUIRE_MESSAGE(!files.empty(), "no goldens in tests/golden/loopus (run tests/reference/gen_loopus_golden.py)");
  for (const auto& path : files) {
    CAPTURE(path.filename().string());
    const auto g = read_json(path);
    const auto& s = g.at("synth");
    const std::vector<int32_t> ids = g.at("input_ids");
    const int64_t T = int64_t(ids.size()), V = s.at("vocab").get<int64_t>();
    const double tol = g.value("tolerance_max_abs", double(kParityTol));

    auto mem = synth_looped(s);
    const fs::path dir = test::temp_dir("parity_lds_" + path.stem().string());
    save_lds(*mem, (dir / "lds").string(), "loopus-synth");
    save_looped_gguf(*mem, (dir / "model.gguf").string());
    if (!fingerprint_matches(dir / "lds", g.at("weights_fingerprint"), g.value("weights_fingerprint_rtol", 1e-9)))
      continue;

    const std::vector<std::pair<std::string, std::shared_ptr<const LoopedWeights>>> sources = {
        {"in-memory", mem},
        {"LoopUS folder", load_looped((dir / "lds").string(), "", "")},
        {"GGUF", load_looped((dir / "model.gguf").string(), "", "")},
    };
    for (const auto& source : sources) {
      const std::string& src = source.first;  // (no structured bindings: clang 14 cannot capture them)
      const std::shared_ptr<const LoopedWeights>& lw = source.second;
      CAPTURE(src);
      REQUIRE(lw->gate);
      REQUIRE(lw->q_head);

      // ---- no cache, fixed N: the whole sequence, all positions ----
      for (const auto& e : g.at("nocache_fixed")) {
        const int n = e.at("loops");
        CAPTURE(n);
        const auto want = golden_logits(e, "logits_f32le_b64", "logits_shape", T, V);
        std::vector<float> got(size_t(T * V));
        auto m = looped<NoCache>(lw, fixed(n));
        m.eval(ids, got.data(), true);
        const float e_nc = max_abs_diff(got.data(), want.data(), got.size());
        auto pd = looped<PerDepthCache>(lw, fixed(n), {}, /*n_batch=*/5);  // chunked prefill, exact for fixed N
        pd.eval(ids, got.data(), true);
        const float e_pd = max_abs_diff(got.data(), want.data(), got.size());
        LOOPUS_PARITY_NOTE("fixed N=" << n << ": NoCache " << e_nc << ", PerDepthCache (chunks of 5) " << e_pd);
        CHECK_LT(e_nc, tol);
        CHECK_LT(e_pd, tol);
      }

      // ---- no cache, threshold halting: one depth for the call, from the last token ----
      {
        const auto& e = g.at("nocache_threshold");
        const float thr = e.at("q_threshold");
        const auto want = golden_logits(e, "logits_f32le_b64", "logits_shape", T, V);
        std::vector<float> got(size_t(T * V));
        auto m = looped<NoCache>(lw, threshold(thr, e.at("max_loops")));
        m.eval(ids, got.data(), true);
        const float err = max_abs_diff(got.data(), want.data(), got.size());
        LOOPUS_PARITY_NOTE("no-cache threshold " << thr << ": loops " << m.last_loops() << " (official "
                                                 << e.at("depth") << "), max err " << err);
        CHECK_EQ(m.last_loops(), e.at("depth").get<int>());
        CHECK_LT(err, tol);
      }

      // ---- official generate(), cached, halting off ----
      {
        const auto& e = g.at("generate_fixed");
        const std::vector<int32_t> prompt = e.at("prompt_ids"), new_ids = e.at("new_ids");
        const int n = e.at("max_loops");
        const auto want = golden_logits(e, "step_logits_f32le_b64", "step_logits_shape", int64_t(new_ids.size()), V);
        auto pd = looped<PerDepthCache>(lw, fixed(n));
        const std::vector<float> got = replay(pd, prompt, new_ids).first;
        auto nc = looped<NoCache>(lw, fixed(n));
        const std::vector<float> got_nc = replay(nc, prompt, new_ids).first;
        const float e_pd = max_abs_diff(got.data(), want.data(), got.size());
        const float e_nc = max_abs_diff(got_nc.data(), want.data(), got.size());
        LOOPUS_PARITY_NOTE("generate, fixed N=" << n << ": PerDepthCache " << e_pd << ", NoCache " << e_nc);
        CHECK_LT(e_pd, tol);
        CHECK_LT(e_nc, tol);
        for (size_t k = 0; k < new_ids.size(); ++k) CHECK_EQ(argmax(got.data() + k * size_t(V), V), new_ids[k]);
      }

      // ---- official generate() with q-threshold halting: deeper caches dropped on exit ----
      {
        const auto& e = g.at("generate_threshold");
        const std::vector<int32_t> prompt = e.at("prompt_ids"), new_ids = e.at("new_ids");
        const std::vector<int> depths = e.at("depths");
        const float thr = e.at("q_threshold");
        const int n = e.at("max_loops");
        const auto want = golden_logits(e, "step_logits_f32le_b64", "step_logits_shape", int64_t(new_ids.size()), V);
        // default-constructed: the official drop rule is the default (no option needed)
        auto pd = looped<PerDepthCache>(lw, threshold(thr, n), PerDepthCache{});
        CHECK(LoopRunSpec{}.exit_fill == "drop");
        const auto run = replay(pd, prompt, new_ids);
        const std::vector<float>& got = run.first;
        const std::vector<int>& depth = run.second;
        const float err = max_abs_diff(got.data(), want.data(), got.size());
        LOOPUS_PARITY_NOTE("generate, threshold " << thr << ", default PerDepthCache (drop): loops per call " << join(depth)
                                                  << " (official " << join(depths) << "), max err " << err);
        CHECK_EQ(join(depth), join(depths));
        CHECK_LT(err, tol);
        for (size_t k = 0; k < new_ids.size(); ++k) CHECK_EQ(argmax(got.data() + k * size_t(V), V), new_ids[k]);
        // The golden must exercise the drop rule: filling the deeper caches
        // instead (kLatest) has to give different logits somewhere.
        auto latest = looped<PerDepthCache>(lw, threshold(thr, n), PerDepthCache{.exit_fill = ExitFill::kLatest});
        const std::vector<float> got_l = replay(latest, prompt, new_ids).first;
        CHECK_GT(max_abs_diff(got_l.data(), want.data(), got.size()), 1e-3f);
      }
    }
    fs::remove_all(dir);
  }
}
