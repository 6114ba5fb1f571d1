// HParams: the architecture of a decoder-only transformer, read from the file, never from code.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>

namespace loopus {

enum class Arch { kLlama, kQwen3 };

/// How RoPE pairs dimensions inside a head.
enum class RopeStyle {
  kInterleaved,  ///< pairs (2i, 2i+1): llama2.c, GGUF llama (Q/K rows permuted vs HF)
  kHalf,         ///< pairs (i, i + rot/2), HF "rotate_half" (GGUF rope type NEOX, e.g. qwen3)
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
  int n_rot = 0;        ///< rotary dims per head (== head_dim for every supported model)
  float rms_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  bool qk_norm = false;       ///< Qwen3: RMSNorm over each head of q and k before RoPE
  bool tied_output = false;   ///< lm_head shares token_embd

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  std::string arch_name() const { return arch == Arch::kQwen3 ? "qwen3" : "llama"; }
};

}  // namespace loopus
