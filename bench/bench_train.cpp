// Training benchmarks: one batch of LoopUS random deep supervision, and one
// batch of the plain fine-tune (the --no-loop control), on random-weight
// models of the stories260K and stories15M shapes.
// SPDX-License-Identifier: MIT
//
// A batch is what `loopus adapt` does per step: the encoder without gradients,
// n_steps supervised steps (each: the no-grad L_prev decode, n_apply block
// applications and the decoder forward + backward, an AdamW update). The
// schedule is 4 / 4 / 2 (n_steps / n_supervision / n_apply), the setting of the
// PyTorch comparison in docs/performance.md.
//
// Counters: tok/s, and GFLOP/s from the matmul FLOPs of that schedule (2 per
// weight per token forward, 4 backward; attention and elementwise work are not
// counted, so GFLOP/s is a lower bound). The floor is the FMA peak of
// BM_PeakFlops in bench_ops (about 102 GFLOP/s per core here). Run with
// OMP_NUM_THREADS=1 / 2.
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "loopus/model/looped_weights.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/train/adapt.hpp"

namespace {

using namespace loopus;

struct Shape {
  SynthParams p;
  const char* enc;
  const char* dec;
  int64_t seq_len;
};

/// 0 = stories260K (dim 64, 5 layers, 8/4 heads, ff 172, vocab 512, split 0..0 | 1..3 | 4..4, T 128)
/// 1 = stories15M (dim 288, 6 layers, 6/6 heads, ff 768, vocab 32000, split 0..0 | 1..4 | 5..5, T 256)
Shape shape(int i) {
  Shape s;
  s.p.seed = 7;
  if (i == 0) {
    s.p.dim = 64, s.p.layers = 5, s.p.heads = 8, s.p.kv_heads = 4, s.p.ff = 172, s.p.vocab = 512;
    s.enc = "0..0", s.dec = "4..4", s.seq_len = 128;
  } else {
    s.p.dim = 288, s.p.layers = 6, s.p.heads = 6, s.p.kv_heads = 6, s.p.ff = 768, s.p.vocab = 32000;
    s.enc = "0..0", s.dec = "5..5", s.seq_len = 256;
  }
  return s;
}

/// Matmul FLOPs per token of one batch (see the header comment).
double flops_per_token(const Shape& s, const train::StepConfig& sc, bool plain, int n_enc, int n_mid, int n_dec) {
  const double d = s.p.dim, hd = d / s.p.heads;
  const double layer = d * (s.p.heads * hd) * 2 + d * (s.p.kv_heads * hd) * 2 + 3 * d * s.p.ff;
  const double head = d * s.p.vocab;
  const double enc = 2 * n_enc * layer;
  if (plain) return enc + 6 * (n_mid + n_dec) * layer + 6 * head;
  const double step = 6.0 * sc.n_apply * n_mid * layer + 2 * (n_dec * layer + head) + 6 * (n_dec * layer + head);
  return enc + sc.n_supervision * step;
}

/// args {shape, mode (0: LoopUS 4/4/2, 1: plain control)}
void BM_TrainBatch(benchmark::State& st) {
  const Shape s = shape(int(st.range(0)));
  const bool plain = st.range(1) == 1;
  auto base = synth_weights(s.p);
  auto lw = recast(base, LayerSplit::from_specs(s.enc, s.dec, s.p.layers));
  synth_loop_parts(*lw, s.p.seed);
  train::TrainSelect sel;
  if (plain) sel.gate = sel.q_head = false;
  train::TrainModel<Cpu, float> m(lw, sel, 0);

  train::AdaptConfig cfg;
  cfg.batch = 4;
  cfg.seq_len = s.seq_len;
  cfg.max_steps = int64_t(1) << 40;  // the schedule barely moves; the work per batch does not depend on it
  cfg.lr = 3e-4;
  cfg.no_loop = plain;
  cfg.step.n_steps = 4;
  cfg.step.n_supervision = 4;
  cfg.step.n_apply = 2;
  SplitMix64 r(11);
  std::vector<int32_t> ids(size_t(32 * s.seq_len));
  for (auto& x : ids) x = int32_t(r.next() % uint64_t(s.p.vocab));
  train::PackedData data(std::move(ids), s.seq_len);
  train::Adapter<Cpu, float> ad(m, data, cfg);
  ad.step();  // warm-up: first touch of every buffer
  for (auto _ : st) benchmark::DoNotOptimize(ad.step().micro.back().loss);

  const double tok = double(cfg.batch * cfg.seq_len);
  const auto& split = lw->split;
  const double f = flops_per_token(s, cfg.step, plain, int(split.encoder.size()), int(split.reasoning.size()),
                                   int(split.decoder.size()));
  st.counters["tok/s"] = benchmark::Counter(double(st.iterations()) * tok, benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * tok * f / 1e9, benchmark::Counter::kIsRate);
  st.counters["MFLOP/tok"] = f / 1e6;
}
BENCHMARK(BM_TrainBatch)
    ->ArgNames({"shape", "plain"})
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
