// synth: random-weight models of any shape (seeded, platform-independent) for tests and benchmarks.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>

#include "loopus/core/dtype.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/core/random.hpp"
#include "loopus/model/hparams.hpp"
#include "loopus/model/weights.hpp"

namespace loopus {

struct SynthParams {
  Arch arch = Arch::kLlama;
  int dim = 64, layers = 2, heads = 4, kv_heads = 2, head_dim = 0, ff = 128, vocab = 512, ctx = 2048;
  float rope_theta = 10000.f, rms_eps = 1e-5f;
  DType dtype = DType::kF32;  ///< storage of the matrices (norms stay f32)
  bool tied = false;
  uint64_t seed = 1;
  // Phi-3 only (arch kPhi3):
  float partial_rotary = 1.f;  ///< rotary dims = int(head_dim * partial_rotary)
  int sliding_window = 0;      ///< 0: none
  int rope_orig_ctx = 0;       ///< > 0: longrope with random factors, original context rope_orig_ctx
};

/// Random weights in Hugging Face layout (rotate-half RoPE rows). Matrices are
/// U(+-sqrt(3 / fan_in)) so activations keep unit scale through the layers,
/// norm gains 1 +- 0.2, embeddings U(+-1): the logits are far from uniform,
/// which makes comparisons against other implementations meaningful.
/// Phi-3 (arch kPhi3) draws the same tensors in the same order (its fused
/// tensors are only a storage layout), then the longrope factors if asked.
inline std::shared_ptr<ModelWeights> synth_weights(const SynthParams& p) {
  auto w = std::make_shared<ModelWeights>();
  HParams& hp = w->hp;
  hp.arch = p.arch;
  hp.n_embd = p.dim;
  hp.n_layer = p.layers;
  hp.n_head = p.heads;
  hp.n_head_kv = p.kv_heads;
  hp.head_dim = p.head_dim > 0 ? p.head_dim : (p.heads > 0 ? p.dim / p.heads : 0);
  hp.n_rot = p.arch == Arch::kPhi3 ? int(float(hp.head_dim) * p.partial_rotary) : hp.head_dim;
  if (p.arch == Arch::kPhi3) hp.sliding_window = p.sliding_window;
  hp.n_ff = p.ff;
  hp.n_vocab = p.vocab;
  hp.n_ctx_train = p.ctx;
  hp.rms_eps = p.rms_eps;
  hp.rope_theta = p.rope_theta;
  hp.rope_style = RopeStyle::kHalf;
  hp.qk_norm = p.arch == Arch::kQwen3;
  hp.tied_output = p.tied;
  detail::check_hparams(hp, "synth");
  {
    const double d = hp.n_embd, V = hp.n_vocab, qd = hp.q_dim(), kvd = hp.kv_dim(), ff = hp.n_ff;
    const double matrices = V * d * (p.tied ? 1 : 2) + double(hp.n_layer) * (2 * qd * d + 2 * kvd * d + 3 * ff * d);
    check_memory(matrices * double(dtype_size(p.dtype)),
                 "synth: a model of " + std::to_string(hp.n_layer) + " layers, dim " + std::to_string(hp.n_embd) +
                     ", ff " + std::to_string(hp.n_ff) + ", vocab " + std::to_string(hp.n_vocab));
  }
  w->path = "synth";
  SplitMix64 rng(p.seed);
  auto make = [&](int64_t rows, int64_t cols, double lo, double hi, DType t) {
    const int64_t n = rows * cols;
    AlignedBuffer b(size_t(n) * dtype_size(t));
    for (int64_t i = 0; i < n; ++i) {
      const float v = float(lo + (hi - lo) * rng.uniform());
      if (t == DType::kF32) b.as<float>()[i] = v;
      else if (t == DType::kBF16) b.as<uint16_t>()[i] = f32_to_bf16(v);
      else b.as<uint16_t>()[i] = f32_to_f16(v);
    }
    w->owned.push_back(std::move(b));
    return Weight{w->owned.back().data(), t, rows, cols};
  };
  auto mat = [&](int64_t rows, int64_t cols) {
    const double a = std::sqrt(3.0 / double(cols));
    return make(rows, cols, -a, a, p.dtype);
  };
  auto gain = [&](int64_t n) { return make(1, n, 0.8, 1.2, DType::kF32); };
  const int64_t d = hp.n_embd;
  w->tok_embd = make(hp.n_vocab, d, -1.0, 1.0, p.dtype);
  w->layers.resize(size_t(hp.n_layer));
  for (auto& L : w->layers) {
    L.attn_norm = gain(d);
    L.wq = mat(hp.q_dim(), d);
    L.wk = mat(hp.kv_dim(), d);
    L.wv = mat(hp.kv_dim(), d);
    L.wo = mat(d, hp.q_dim());
    if (hp.qk_norm) {
      L.q_norm = gain(hp.head_dim);
      L.k_norm = gain(hp.head_dim);
    }
    L.ffn_norm = gain(d);
    L.w_gate = mat(hp.n_ff, d);
    L.w_up = mat(hp.n_ff, d);
    L.w_down = mat(d, hp.n_ff);
  }
  w->out_norm = gain(d);
  w->output = p.tied ? w->tok_embd : mat(hp.n_vocab, d);
  if (p.arch == Arch::kPhi3 && p.rope_orig_ctx > 0) {  // drawn last: the other tensors keep their streams
    RopeScaling& r = hp.rope_scaling;
    r.orig_ctx = p.rope_orig_ctx;
    r.attn_factor = detail::longrope_attn_factor(hp.n_ctx_train, r.orig_ctx);
    for (int i = 0; i < hp.n_rot / 2; ++i) r.short_factor.push_back(float(1.0 + 0.5 * rng.uniform()));
    for (int i = 0; i < hp.n_rot / 2; ++i) r.long_factor.push_back(float(1.0 + 15.0 * rng.uniform()));
    detail::check_hparams(hp, "synth");
  }
  return w;
}

}  // namespace loopus
