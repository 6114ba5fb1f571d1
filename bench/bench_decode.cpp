// End-to-end decode benchmarks: the plain model (CausalLM) and the looped
// model at B = 8 with and without its KV cache, on random-weight models.
// SPDX-License-Identifier: MIT
//
// Counters: tok/s, and GB/s = weight bytes read per token × tok/s (the decode
// floor is BM_MemBandwidth_Read in bench_ops; a plain decode step reads every
// weight once, a looped one reads the reasoning block B times). Run with
// OMP_NUM_THREADS=1 / 2. The side-by-side comparison with llama.cpp on GGUF
// files is bench/compare_llamacpp.sh; the cache table over generated lengths is
// `loopus bench` (docs/performance.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "loopus/analysis/trace.hpp"
#include "loopus/core/random.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"

namespace {

using namespace loopus;

/// Shapes: 0 = stories15M (dim 288, 6 layers, ff 768, vocab 32000),
///         1 = stories110M (dim 768, 12 layers, ff 2048, vocab 32000).
std::shared_ptr<ModelWeights> model(int shape, DType dt) {
  static std::shared_ptr<ModelWeights> cache[2][3];
  const int di = dt == DType::kF32 ? 0 : dt == DType::kBF16 ? 1 : 2;
  auto& w = cache[shape][di];
  if (!w) {
    SynthParams p;
    p.dim = shape == 0 ? 288 : 768;
    p.layers = shape == 0 ? 6 : 12;
    p.heads = p.kv_heads = shape == 0 ? 6 : 12;
    p.ff = shape == 0 ? 768 : 2048;
    p.vocab = 32000;
    p.dtype = dt;
    p.seed = 7;
    w = synth_weights(p);
  }
  return w;
}

std::vector<int32_t> prompt_ids(int n, int vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = int32_t(1 + (i * 7919) % (vocab - 1));
  return v;
}

/// Greedy generation of n_gen tokens after a 16-token prompt; only the
/// generation is timed (manual time). bytes_per_token 0: no GB/s counter.
template <class LM>
void run_generation(benchmark::State& st, LM& lm, int n_gen, double bytes_per_token) {
  const auto prompt = prompt_ids(16, lm.n_vocab());
  std::vector<float> logits(size_t(lm.n_vocab()));
  for (auto _ : st) {
    lm.reset();
    lm.eval(prompt, logits.data());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n_gen; ++i) {
      const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      lm.eval(std::span<const int32_t>(&id, 1), logits.data());
    }
    st.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  st.counters["tok/s"] = benchmark::Counter(double(st.iterations()) * n_gen, benchmark::Counter::kIsRate);
  if (bytes_per_token > 0)
    st.counters["GB/s"] =
        benchmark::Counter(double(st.iterations()) * n_gen * bytes_per_token / 1e9, benchmark::Counter::kIsRate);
}

/// Plain decode: args {shape, dtype (0 f32, 1 bf16), n_gen}.
void BM_Decode(benchmark::State& st) {
  const DType dt = st.range(1) == 0 ? DType::kF32 : DType::kBF16;
  auto w = model(int(st.range(0)), dt);
  const int n_gen = int(st.range(2));
  CausalLM<Cpu> lm(w, ContextParams{16 + n_gen + 1, 512});
  run_generation(st, lm, n_gen, double(w->bytes_per_token()));
}
BENCHMARK(BM_Decode)
    ->ArgNames({"shape", "bf16", "n_gen"})
    ->Args({0, 0, 64})
    ->Args({1, 0, 64})
    ->Args({1, 1, 64})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

/// Looped decode at B = 8 (split 0..0 | middle | last, gate mix 0.5):
/// args {cache (0 per-depth, 1 none), n_gen}. Shape stories15M, f32. Without
/// a cache every token reruns the whole sequence 8 times, so the ratio of the
/// two grows with n_gen (the paper's Fig. 3).
void BM_LoopedDecode(benchmark::State& st) {
  auto w = model(0, DType::kF32);
  auto lw = recast(w, LayerSplit::from_specs("0..0", "5..5", w->hp.n_layer));
  LoopParams lp;
  lp.halting.max_loops = 8;
  const int n_gen = int(st.range(1));
  const ContextParams cp{16 + n_gen + 1, 512};
  // weights read per token with a cache: the reasoning block 8 times, the rest once
  double per_tok = double(w->bytes_per_token());
  for (int l : lw->split.reasoning) {
    const LayerWeights& L = w->layers[size_t(l)];
    for (const Weight* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) per_tok += 7.0 * double(m->nbytes());
  }
  if (st.range(0) == 0) {
    LoopedModel<Cpu, FixedMixGate, PerDepthCache> lm(lw, lp, cp, FixedMixGate(0.5f));
    run_generation(st, lm, n_gen, per_tok);
  } else {
    LoopedModel<Cpu, FixedMixGate, NoCache> lm(lw, lp, cp, FixedMixGate(0.5f));
    run_generation(st, lm, n_gen, 0);  // compute bound: a weight-bytes rate would mean nothing
  }
}
BENCHMARK(BM_LoopedDecode)
    ->ArgNames({"nocache", "n_gen"})
    ->Args({0, 64})
    ->Args({1, 64})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

/// An observer that asks for nothing and does nothing: what the loop probe costs when it is set.
struct NullObserver : LoopObserver {
  void on_loop(const LoopEvent&) override {}
};

/// The loop probe's cost: looped decode at B = 8 with the selective gate and the
/// per-depth cache, args {observer: 0 none (the default), 1 a no-op observer,
/// 2 a TraceRecorder decoding every iteration (what `loopus trace` does)}.
/// 0 against BM_LoopedDecode's per-depth row, and 0 against 1, show that an
/// unused probe costs nothing.
void BM_LoopedDecodeObserved(benchmark::State& st) {
  auto w = model(0, DType::kF32);
  auto lw = recast(w, LayerSplit::from_specs("0..0", "5..5", w->hp.n_layer));
  SplitMix64 rng(3);
  lw->gate = std::make_shared<SelectiveGateWeights>(
      SelectiveGateWeights::official_init(w->hp.n_embd, [&] { return rng.uniform(); }));
  LoopParams lp;
  lp.halting.max_loops = 8;
  const int n_gen = 64;
  LoopedModel<Cpu, SelectiveGate, PerDepthCache> lm(lw, lp, ContextParams{16 + n_gen + 1, 512},
                                                    SelectiveGate(lw->gate));
  NullObserver none;
  analysis::TraceRecorder rec(5);
  if (st.range(0) == 1) lm.set_observer(&none);
  if (st.range(0) == 2) lm.set_observer(&rec);
  run_generation(st, lm, n_gen, 0);
}
BENCHMARK(BM_LoopedDecodeObserved)
    ->ArgNames({"observer"})
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
