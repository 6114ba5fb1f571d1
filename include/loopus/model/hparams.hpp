// HParams: the architecture of a decoder-only transformer, read from the file, never from code.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/core/rope.hpp"

namespace loopus {

enum class Arch { kLlama, kQwen3, kPhi3 };

/// Phi-3 "longrope" (alias "su") RoPE scaling, as Hugging Face transformers
/// applies it: pair i of the rotary dims turns at theta^(-2i/n_rot) / factor[i],
/// with the short factors while the sequence (largest position + 1) fits in
/// orig_ctx and the long ones beyond; cos and sin are both multiplied by
/// attn_factor (sqrt(1 + ln(n_ctx_train / orig_ctx) / ln(orig_ctx)) unless the
/// config gives one). Empty factors: no scaling.
struct RopeScaling {
  std::vector<float> short_factor, long_factor;  ///< n_rot / 2 each, or both empty
  int orig_ctx = 0;                              ///< original_max_position_embeddings
  float attn_factor = 1.f;

  bool active() const { return !long_factor.empty(); }
  /// The factors for a sequence of seq_len tokens (positions 0..seq_len-1); nullptr when inactive.
  const float* factors(int64_t seq_len) const {
    if (!active()) return nullptr;
    return seq_len > orig_ctx ? long_factor.data() : short_factor.data();
  }
  float mscale() const { return active() ? attn_factor : 1.f; }
};

struct HParams {
  Arch arch = Arch::kLlama;
  int n_embd = 0;       ///< d, hidden size
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;     ///< independent of n_embd / n_head for Qwen3
  int n_ff = 0;         ///< intermediate size of the SwiGLU MLP
  int n_vocab = 0;
  int n_ctx_train = 2048;
  int n_rot = 0;        ///< rotary dims per head (< head_dim with Phi-3's partial_rotary_factor)
  float rms_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  bool qk_norm = false;       ///< Qwen3: RMSNorm over each head of q and k before RoPE
  bool tied_output = false;   ///< lm_head shares token_embd
  int sliding_window = 0;     ///< Phi-3: attention window (0 = none); longer sequences are refused
  RopeScaling rope_scaling;   ///< Phi-3 longrope; inactive for every other model

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  std::string arch_name() const {
    return arch == Arch::kQwen3 ? "qwen3" : arch == Arch::kPhi3 ? "phi3" : "llama";
  }
};

}  // namespace loopus
