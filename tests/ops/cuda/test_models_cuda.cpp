// The models on the CUDA backend: stories260K greedy ids against llama.cpp's golden, the official LoopUS
// parity goldens, the cache policies' equivalences, every gate / cache / halting rule against the CPU,
// and a bf16 model. Needs a CUDA GPU; reported as skipped without one.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cuda/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "model/golden_util.hpp"
#include "ops/cuda/cuda_util.hpp"
#include "test_util.hpp"

using namespace loopus;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

std::shared_ptr<const ModelWeights> stories() {
  static auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  return w;
}

/// Greedy ids (argmax, ties to the lowest id) after the whole prompt in one eval, then one token per eval.
template <class Model>
Ids greedy(Model& m, const Ids& prompt, int n) {
  std::vector<float> l(size_t(m.n_vocab()));
  m.eval(prompt, l.data());
  Ids out;
  for (int k = 0; k < n; ++k) {
    const int32_t id = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(id);
    m.eval(std::span<const int32_t>(&id, 1), l.data());
  }
  return out;
}

LoopParams fixed(int B) { return LoopParams{HaltingParams::parse("fixed", B)}; }

/// Per-call last-position logits of the prompt and then each id but the last (teacher forcing).
template <class Model>
std::vector<float> replay(Model& m, const Ids& prompt, const Ids& new_ids) {
  const int64_t V = m.n_vocab();
  std::vector<float> out(new_ids.size() * size_t(V));
  m.eval(prompt, out.data());
  for (size_t k = 0; k + 1 < new_ids.size(); ++k)
    m.eval(std::span<const int32_t>(&new_ids[k], 1), out.data() + (k + 1) * size_t(V));
  return out;
}

}  // namespace

TEST_CASE("[cuda] stories260K greedy: the 4 x 64 ids of llama.cpp's golden, exactly") {
  LOOPUS_GPU_OR_SKIP();
  const json g = test::read_json(test::source_dir() / "tests/golden/llamacpp/stories260K_greedy.json");
  const int n_gen = g.at("decode").at("n_gen").get<int>();
  int same = 0, total = 0;
  for (const auto& c : g.at("cases")) {
    const Ids prompt = c.at("prompt_ids").get<Ids>(), want = c.at("generated_ids").get<Ids>();
    REQUIRE_FALSE(c.at("stopped_at_eog").get<bool>());
    CausalLM<Cuda> lm(stories(), {.n_ctx = int64_t(prompt.size()) + n_gen + 16, .n_batch = 64});
    const Ids got = greedy(lm, prompt, n_gen);
    CHECK_EQ(got, want);
    for (size_t i = 0; i < want.size(); ++i) same += got[i] == want[i];
    total += int(want.size());
  }
  MESSAGE("stories260K on CUDA: " << same << "/" << total << " greedy ids equal llama.cpp's");
}

TEST_CASE("[cuda] official LoopUS parity goldens: B = 1, 2, 8 within 1e-3 (no cache, per-depth, generate)") {
  LOOPUS_GPU_OR_SKIP();
  const auto files = test::golden_files("loopus");
  REQUIRE_FALSE(files.empty());
  for (const auto& path : files) {
    CAPTURE(path.filename().string());
    const json g = test::read_json(path);
    const Ids ids = g.at("input_ids");
    const int64_t T = int64_t(ids.size()), V = g.at("synth").at("vocab").get<int64_t>();
    const std::shared_ptr<const LoopedWeights> lw = test::synth_looped(g.at("synth"));
    const ContextParams cp{.n_ctx = 64, .n_batch = 512};
    for (const auto& e : g.at("nocache_fixed")) {
      const int B = e.at("loops");
      CAPTURE(B);
      const auto want = test::golden_logits(e, "logits_f32le_b64", "logits_shape", T, V);
      std::vector<float> got(size_t(T * V));
      LoopedModel<Cuda, SelectiveGate, NoCache> nc(lw, fixed(B), cp, SelectiveGate(lw->gate));
      nc.eval(ids, got.data(), true);
      CHECK_LT(test::max_abs_diff(got, want), 1e-3f);
      LoopedModel<Cuda, SelectiveGate, PerDepthCache> pd(lw, fixed(B), {.n_ctx = 64, .n_batch = 5},
                                                         SelectiveGate(lw->gate));
      pd.eval(ids, got.data(), true);  // chunked prefill: exact for fixed B
      CHECK_LT(test::max_abs_diff(got, want), 1e-3f);
    }
    const auto& e = g.at("generate_fixed");
    const Ids prompt = e.at("prompt_ids"), new_ids = e.at("new_ids");
    const auto want = test::golden_logits(e, "step_logits_f32le_b64", "step_logits_shape", int64_t(new_ids.size()), V);
    LoopedModel<Cuda, SelectiveGate, PerDepthCache> pd(lw, fixed(e.at("max_loops")), cp, SelectiveGate(lw->gate));
    CHECK_LT(test::max_abs_diff(replay(pd, prompt, new_ids), want), 1e-3f);
  }
}

TEST_CASE("[cuda] B = 8 fixed: the per-depth cache gives exactly the ids of no cache") {
  LOOPUS_GPU_OR_SKIP();
  auto lw = recast(stories(), LayerSplit::from_specs("0..0", "4..4", 5));
  for (float alpha : {1.0f, 0.5f}) {
    LoopedModel<Cuda, FixedMixGate, PerDepthCache> cached(lw, fixed(8), {.n_ctx = 128, .n_batch = 64},
                                                          FixedMixGate(alpha));
    LoopedModel<Cuda, FixedMixGate, NoCache> nocache(lw, fixed(8), {.n_ctx = 128, .n_batch = 64}, FixedMixGate(alpha));
    CHECK_EQ(greedy(cached, {1, 403, 407}, 48), greedy(nocache, {1, 403, 407}, 48));
  }
}

TEST_CASE("[cuda] every gate, cache and halting rule: LoopedModel<Cuda> follows LoopedModel<Cpu>") {
  LOOPUS_GPU_OR_SKIP();
  auto w = recast(stories(), LayerSplit::from_specs("0..0", "4..4", 5));
  synth_loop_parts(*w, 7);
  const std::shared_ptr<const LoopedWeights> lw = w;
  const Ids prompt = {1, 403, 407, 261, 378, 290, 17};
  for (const char* gate : {"selective", "none", "mix:0.5"})
    for (const char* cache : {"per-depth", "shared", "none"})
      for (const char* halt : {"fixed", "q:0.5", "conv:0.05", "kl:0.01"}) {
        CAPTURE(gate);
        CAPTURE(cache);
        CAPTURE(halt);
        LoopRunSpec spec;
        spec.gate = gate;
        spec.cache = cache;
        spec.halt = halt;
        spec.loops = 4;
        auto run = [&]<class B>() {
          std::vector<float> logits;
          std::vector<int> loops;
          with_looped_model<B>(lw, spec, ContextParams{.n_ctx = 64, .n_batch = 64}, [&](auto& m) {
            std::vector<float> l(size_t(m.n_vocab()));
            m.eval(prompt, l.data());
            logits.insert(logits.end(), l.begin(), l.end());
            loops.push_back(m.last_loops());
            for (int32_t id : {448, 259, 411, 302, 288}) {
              m.eval(std::span<const int32_t>(&id, 1), l.data());
              logits.insert(logits.end(), l.begin(), l.end());
              loops.push_back(m.last_loops());
            }
          });
          return std::make_pair(logits, loops);
        };
        const auto cpu = run.template operator()<Cpu>();
        const auto gpu = run.template operator()<Cuda>();
        CHECK_EQ(gpu.second, cpu.second);  // the same halting decisions
        CHECK_LT(test::rel_err(gpu.first, cpu.first), 1e-3);
      }
}

TEST_CASE("[cuda] a bf16 Qwen3-shaped model: CausalLM<Cuda> within 1e-2 of CausalLM<Cpu>, prefill and decode") {
  LOOPUS_GPU_OR_SKIP();
  SynthParams p;
  p.arch = Arch::kQwen3;
  p.dim = 256;
  p.layers = 3;
  p.heads = 8;
  p.kv_heads = 2;
  p.head_dim = 64;
  p.ff = 512;
  p.vocab = 1000;
  p.dtype = DType::kBF16;
  const auto w = synth_weights(p);
  Ids prompt(40);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 37 + 5) % 1000);
  auto run = [&]<class B>() {
    CausalLM<B> lm(w, {.n_ctx = 128, .n_batch = 64});
    std::vector<float> all(prompt.size() * 1000), l(1000);
    lm.eval(prompt, all.data(), true);  // T = 40: cuBLAS on the GPU
    for (int32_t id : {3, 14, 159}) {
      lm.eval(std::span<const int32_t>(&id, 1), l.data());  // T = 1: the GEMV
      all.insert(all.end(), l.begin(), l.end());
    }
    return all;
  };
  const auto cpu = run.template operator()<Cpu>();
  const auto gpu = run.template operator()<Cuda>();
  CHECK_LT(test::rel_err(gpu, cpu), 1e-2);
}
