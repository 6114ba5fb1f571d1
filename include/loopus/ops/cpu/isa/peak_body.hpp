// Peak-throughput probes for bench/bench_ops.cpp: as many independent multiply-add chains as hide latency.
// SPDX-License-Identifier: MIT
// No include guard: included into each instruction set's namespace after its VecF.

/// iters × 12 chains of f32 FMAs on kLanes-wide vectors; returns a value that depends on all of
/// them. Multiply-adds done: iters · 12 · kLanes.
inline float fma_chains(int64_t iters) {
  constexpr int kChains = 12;
  VecF a[kChains];
  for (int c = 0; c < kChains; ++c) a[c] = VecF::set1(float(c) * 1e-3f);
  const VecF m = VecF::set1(0.999999f), b = VecF::set1(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) a[c] = fma(a[c], m, b);
  VecF s = VecF::zero();
  for (int c = 0; c < kChains; ++c) s = s + a[c];
  return hsum(s);
}
