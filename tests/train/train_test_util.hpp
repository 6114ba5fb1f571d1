// Helpers of the training tests: tiny LoopUS models (as `loopus synth --loopus` builds them) and finite differences.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loopus/model/looped_weights.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/train.hpp"

namespace loopus::test {

/// Host address of a Cpu tensor (Cpu memory is host memory; tests read and
/// perturb parameters and tapes in place through it).
template <class S>
S* ptr(Tensor<Cpu, S>& t) {
  return TrainOps<Cpu>::data(t.span());
}
template <class S>
const S* ptr(const Tensor<Cpu, S>& t) {
  return TrainOps<Cpu>::data(t.span());
}
/// A Cpu span over a host vector (Cpu memory is host memory).
template <class S>
Span<Cpu, S> span_of(std::vector<S>& v) {
  return TrainOps<Cpu>::borrow_host(v.data(), int64_t(v.size()));
}
/// A tensor's values widened to double (any backend, through download).
template <class Backend, class S>
std::vector<double> host_vec(const Tensor<Backend, S>& t) {
  std::vector<S> v(static_cast<size_t>(t.numel()));
  TrainOps<Backend>::download(t.span(), v.data());
  return std::vector<double>(v.begin(), v.end());
}

/// The LoopUS checkpoint `loopus synth --loopus` writes for these parameters:
/// synth_weights, recast, then synth_loop_parts (official-init gate, random q head).
inline std::shared_ptr<LoopedWeights> synth_loopus(const SynthParams& p, const std::string& enc,
                                                   const std::string& dec) {
  auto w = synth_weights(p);
  auto lw = recast(w, LayerSplit::from_specs(enc, dec, w->hp.n_layer));
  synth_loop_parts(*lw, p.seed);
  return lw;
}

/// The tiny model shape of the training tests (4 layers, dim 16, GQA 4/2);
/// Qwen3 gets head_dim 6 so it differs from dim / heads.
inline SynthParams tiny_params(uint64_t seed, Arch arch = Arch::kLlama, int vocab = 32) {
  SynthParams sp;
  sp.arch = arch;
  sp.dim = 16;
  sp.layers = 4;
  sp.heads = 4;
  sp.kv_heads = 2;
  sp.head_dim = arch == Arch::kQwen3 ? 6 : 0;
  sp.ff = 24;
  sp.vocab = vocab;
  sp.seed = seed;
  return sp;
}

/// n deterministic token ids in [0, vocab).
inline std::vector<int32_t> random_ids(int64_t n, int vocab, uint64_t seed) {
  SplitMix64 r(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(r.next() % uint64_t(vocab));
  return v;
}

/// Deterministic pseudo-random doubles in [lo, hi).
inline std::vector<double> rand_vec(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  SplitMix64 r(seed);
  std::vector<double> v(n);
  for (auto& x : v) x = lo + (hi - lo) * r.uniform();
  return v;
}

/// Relative error ||a − b|| / max(||a||, ||b||) (0 when both vanish).
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  const double den = std::sqrt(std::max(na, nb));
  return den == 0 ? 0 : std::sqrt(num) / den;
}

/// Central differences of loss() with respect to x[idx] for every idx (all when empty).
inline std::vector<double> numeric_grad(double* x, size_t n, const std::function<double()>& loss,
                                        const std::vector<size_t>& idx = {}, double eps = 1e-6) {
  std::vector<double> g;
  auto one = [&](size_t i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double lp = loss();
    x[i] = keep - eps;
    const double lm = loss();
    x[i] = keep;
    g.push_back((lp - lm) / (2 * eps));
  };
  if (idx.empty())
    for (size_t i = 0; i < n; ++i) one(i);
  else
    for (size_t i : idx) one(i);
  return g;
}

}  // namespace loopus::test
