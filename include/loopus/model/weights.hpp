// ModelWeights: the tensors of a decoder-only transformer, in the library's canonical layout.
// SPDX-License-Identifier: MIT
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "loopus/core/buffer.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/model/hparams.hpp"

namespace loopus {
namespace io { class TensorFile; }

/// One transformer block. Matrices are [out, in]; norms are [1, d] f32.
struct LayerWeights {
  Weight attn_norm;           ///< [1, d]
  Weight wq, wk, wv, wo;      ///< [q_dim, d], [kv_dim, d], [kv_dim, d], [d, q_dim]
  Weight q_norm, k_norm;      ///< [1, head_dim] (Qwen3 only)
  Weight ffn_norm;            ///< [1, d]
  Weight w_gate, w_up, w_down;///< [ff, d], [ff, d], [d, ff]
};

/// Every tensor of the model plus the hyperparameters. Weights point either
/// into the source file's memory (kept alive by `source`) or into `owned`.
struct ModelWeights {
  HParams hp;
  Weight tok_embd;            ///< [V, d]
  std::vector<LayerWeights> layers;
  Weight out_norm;            ///< [1, d]
  Weight output;              ///< [V, d]; same data as tok_embd when tied
  std::shared_ptr<const io::TensorFile> source;
  std::vector<AlignedBuffer> owned;
  std::string path;           ///< where it was loaded from

  /// Bytes of weight data read per decoded token (all matrices + norms; the
  /// embedding contributes one row). The numerator of the bandwidth floor.
  size_t bytes_per_token() const {
    size_t b = output.nbytes() + out_norm.nbytes() + tok_embd.row_bytes();
    for (const auto& l : layers)
      for (const Weight* w : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.q_norm, &l.k_norm, &l.ffn_norm,
                              &l.w_gate, &l.w_up, &l.w_down})
        if (!w->empty()) b += w->nbytes();
    return b;
  }
  /// Number of parameters (a tied head is counted once).
  int64_t n_params() const {
    int64_t n = tok_embd.numel() + out_norm.numel() + (output.data == tok_embd.data ? 0 : output.numel());
    for (const auto& l : layers)
      for (const Weight* w : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.q_norm, &l.k_norm, &l.ffn_norm,
                              &l.w_gate, &l.w_up, &l.w_down})
        n += w->empty() ? 0 : w->numel();
    return n;
  }
  /// The storage dtype of the large matrices ("f32", "bf16", "mixed").
  std::string matrix_dtype() const {
    if (layers.empty()) return std::string(dtype_name(output.dtype));
    DType t = layers[0].wq.dtype;
    for (const auto& l : layers)
      for (const Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
        if (w->dtype != t) return "mixed";
    return std::string(dtype_name(t));
  }
};

}  // namespace loopus
