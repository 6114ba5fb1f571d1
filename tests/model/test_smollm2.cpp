// The real SmolLM2-135M-Instruct (Q4_1 GGUF, 30 layers; fetched by scripts/get_models.sh) recast as a
// looped model: with B = 1 and no gate it is the plain model; with B > 1 it runs and stays finite.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "loopus/io/gguf.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "loopus/tokenizer/load.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

const char* kSmol = "SmolLM2-135M-Instruct.Q4_1.gguf";
const char* kSmolEnv = "LOOPUS_SMOLLM2";

LoopParams fixed_loops(int B) {
  LoopParams lp;
  lp.halting.max_loops = B;
  return lp;
}

/// All-position logits of `ids` from a fresh sequence.
template <class Model>
std::vector<float> all_logits(Model& m, const std::vector<int32_t>& ids) {
  std::vector<float> out(ids.size() * size_t(m.n_vocab()));
  m.reset();
  m.eval(ids, out.data(), /*all_logits=*/true);
  return out;
}

template <class Model>
std::vector<int32_t> greedy(Model& m, const std::vector<int32_t>& prompt, int n) {
  Sampler s(SamplerParams{.temperature = 0.f});
  m.reset();
  return generate(m, prompt, GenerateParams{.n_predict = n}, s, [](int32_t) {}).ids;
}

}  // namespace

TEST_CASE("[loopus] SmolLM2-135M recast 0..1 | 2..28 | 29..29: B = 1 is the plain model, B > 1 stays finite") {
  LOOPUS_MODEL_OR_SKIP(path, kSmol, kSmolEnv);
  const auto w = load_weights(path);
  REQUIRE_EQ(w->hp.n_layer, 30);
  const auto tok = load_tokenizer_from_gguf_meta(io::open_gguf(path, io::LoadMode::kMmap).meta, path);
  std::vector<int32_t> prompt = tok->encode("The capital of France is");
  REQUIRE_GE(prompt.size(), 4u);
  const ContextParams cp{.n_ctx = 64, .n_batch = 32};
  const auto lw = recast(w, LayerSplit::from_specs("0..1", "29..29", 30));
  CHECK_EQ(lw->split.reasoning.size(), 27u);

  CausalLM<Cpu> plain(w, cp);
  const auto ref = all_logits(plain, prompt);
  const auto ref_ids = greedy(plain, prompt, 8);

  SUBCASE("B = 1 without a gate: the same logits, bit for bit, and the same greedy ids") {
    LoopedModel<Cpu, NoGate, PerDepthCache> m(lw, fixed_loops(1), cp);
    const auto got = all_logits(m, prompt);
    REQUIRE_EQ(got.size(), ref.size());
    size_t n_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) n_diff += got[i] != ref[i];
    CHECK_EQ(n_diff, 0u);
    CHECK_EQ(greedy(m, prompt, 8), ref_ids);
  }
  SUBCASE("B = 3 with a 0.5 mix gate: every loop runs, all logits finite") {
    LoopedModel<Cpu, FixedMixGate, PerDepthCache> m(lw, fixed_loops(3), cp, FixedMixGate(0.5f));
    const auto got = all_logits(m, prompt);
    size_t n_bad = 0;
    for (float x : got) n_bad += !std::isfinite(x);
    CHECK_EQ(n_bad, 0u);
    CHECK_EQ(m.last_loops(), 3);
    Sampler s(SamplerParams{.temperature = 0.f});
    m.reset();
    const auto r = generate(m, prompt, GenerateParams{.n_predict = 4}, s, [](int32_t) {});
    CHECK_EQ(r.ids.size(), 4u);
    CHECK_EQ(r.loops_per_token, std::vector<int>(4, 3));
  }
}
