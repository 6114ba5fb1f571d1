// One model code, every backend: LoopedModel<Reference, G, C> (opaque storage, scalar kernels) against
// LoopedModel<Cpu, G, C> for every gate, cache policy and halting rule; CausalLM likewise.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/language_model.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "test_util.hpp"

using namespace loopus;

static_assert(LanguageModel<CausalLM<Reference>>);
static_assert(LanguageModel<LoopedModel<Reference, NoGate, NoCache>>);
static_assert(LanguageModel<LoopedModel<Cpu, SelectiveGate, PerDepthCache>>);

namespace {

template <class B>
concept BorrowsHost = requires(float* p) {
  Ops<B>::borrow_host(p, 1);
};

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 290, 17};
const std::vector<int32_t> kSteps = {448, 259, 411, 302, 288};
constexpr int kB = 4;

/// stories260K split E = layer 0, M = layers 1-3, D = layer 4, with a random official-init
/// gate and a random q head (synth_loop_parts, the parity goldens' generator).
std::shared_ptr<const LoopedWeights> looped() {
  static std::shared_ptr<const LoopedWeights> lw = [] {
    auto w = recast(load_weights(test::data_file("models/stories260K/stories260K.gguf")),
                    LayerSplit::from_specs("0..0", "4..4", 5));
    synth_loop_parts(*w, 7);
    return w;
  }();
  return lw;
}

struct Trace {
  std::vector<std::vector<float>> logits;  ///< all prompt logits, then each step's
  std::vector<int> loops;
};

/// The prompt in one call (all logits), then each step alone (last logits).
template <class Model>
Trace run(Model& m) {
  Trace tr;
  const size_t V = size_t(m.n_vocab());
  std::vector<float> all(kPrompt.size() * V);
  m.eval(kPrompt, all.data(), true);
  tr.logits.push_back(all);
  if constexpr (requires { m.last_loops(); }) tr.loops.push_back(m.last_loops());
  for (int32_t id : kSteps) {
    std::vector<float> l(V);
    m.eval(std::span<const int32_t>(&id, 1), l.data());
    tr.logits.push_back(l);
    if constexpr (requires { m.last_loops(); }) tr.loops.push_back(m.last_loops());
  }
  return tr;
}

template <class Gate>
Gate make_gate(const LoopedWeights& lw) {
  if constexpr (std::is_same_v<Gate, SelectiveGate>) return SelectiveGate(lw.gate);
  else if constexpr (std::is_same_v<Gate, FixedMixGate>) return FixedMixGate(0.5f);
  else return Gate{};
}

template <class Backend, class Gate, class Cache>
Trace run_config(const HaltingParams& hp, Cache cache) {
  LoopParams lp;
  lp.halting = hp;
  const auto lw = looped();
  LoopedModel<Backend, Gate, Cache> m(lw, lp, {.n_ctx = 32, .n_batch = 8}, make_gate<Gate>(*lw), cache);
  return run(m);
}

double max_rel_diff(const Trace& a, const Trace& b) {
  double worst = 0;
  for (size_t c = 0; c < a.logits.size(); ++c) {
    double scale = 1e-6, diff = 0;
    for (size_t i = 0; i < a.logits[c].size(); ++i) {
      scale = std::max(scale, double(std::abs(b.logits[c][i])));
      diff = std::max(diff, double(std::abs(a.logits[c][i] - b.logits[c][i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

/// Every halting rule: fixed B, q threshold, CDF hazard, convergence, KL (thresholds that
/// stop at different depths on this model: checked below by the spread of loop counts).
std::vector<std::string> halt_specs() { return {"fixed", "q:0.55", "cdf:0.5", "conv:3.0", "kl:0.02"}; }

template <class Gate, class Cache>
void compare_backends(Cache cache, const std::string& cache_name, std::vector<int>& loop_counts) {
  for (const std::string& spec : halt_specs()) {
    CAPTURE(spec);
    CAPTURE(cache_name);
    const HaltingParams hp = HaltingParams::parse(spec, kB);
    const Trace ref = run_config<Reference, Gate>(hp, cache);
    const Trace cpu = run_config<Cpu, Gate>(hp, cache);
    CHECK_EQ(ref.loops, cpu.loops);
    CHECK_LT(max_rel_diff(cpu, ref), 2e-4);
    loop_counts.insert(loop_counts.end(), cpu.loops.begin(), cpu.loops.end());
  }
}

}  // namespace

TEST_CASE_TEMPLATE(
    "[backend] LoopedModel<Reference, G, C> equals LoopedModel<Cpu, G, C> for every cache and halting rule", Gate,
    NoGate, FixedMixGate, SelectiveGate) {
  std::vector<int> loops;
  PerDepthCache drop;
  PerDepthCache latest;
  latest.exit_fill = ExitFill::kLatest;
  compare_backends<Gate>(drop, "per-depth drop", loops);
  compare_backends<Gate>(latest, "per-depth latest", loops);
  compare_backends<Gate>(SharedCache{}, "shared", loops);
  compare_backends<Gate>(NoCache{}, "none", loops);
  // The halting rules really stopped early somewhere and ran to B elsewhere, so the
  // early-exit paths (exit fill, KL decoding, q head) were compared, not just full loops.
  CHECK(std::count(loops.begin(), loops.end(), kB) > 0);
  CHECK(std::count_if(loops.begin(), loops.end(), [](int l) { return l < kB; }) > 0);
}

TEST_CASE_TEMPLATE("[backend] CausalLM and the B = 1 looped model on each backend equal CausalLM<Cpu>", Backend,
                   Reference, Cpu) {
  const auto w = looped()->base;
  CausalLM<Backend> m(w, {.n_ctx = 32, .n_batch = 8});
  CausalLM<Cpu> cpu(w, {.n_ctx = 32, .n_batch = 8});
  const Trace a = run(m), b = run(cpu);
  CHECK_LT(max_rel_diff(a, b), 2e-4);
  // The looped model with B = 1 and NoGate is the plain model on every backend.
  LoopParams lp;
  lp.halting.max_loops = 1;
  LoopedModel<Backend, NoGate, PerDepthCache> one(looped(), lp, {.n_ctx = 32, .n_batch = 8});
  CHECK_LT(max_rel_diff(run(one), b), 2e-4);
}

TEST_CASE(
    "[backend] logits through head_to_host's staging path (Reference: no borrow_host) equal Cpu's in-place ones") {
  static_assert(!BorrowsHost<Reference>, "Reference must stage, as a device does");
  static_assert(BorrowsHost<Cpu>);
  // 150 tokens: three staging chunks of at most 64 rows, the last one partial
  const int64_t T = 150;
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(t == 0 ? 1 : 3 + (t * 37) % 500);
  const auto w = looped()->base;
  CausalLM<Reference> ref(w, {.n_ctx = 160, .n_batch = 160});
  CausalLM<Cpu> cpu(w, {.n_ctx = 160, .n_batch = 160});
  const size_t V = size_t(cpu.n_vocab());
  std::vector<float> a(size_t(T) * V, -1e30f), b(size_t(T) * V, 1e30f);
  ref.eval(ids, a.data(), true);
  cpu.eval(ids, b.data(), true);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  CHECK_LT(worst, 2e-4 * scale);  // every row written (the sentinels would show), and right
}
