// HParams: the architecture of a decoder-only transformer, read from the file, never from code.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
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

/// Limits on a model's dimensions (check_hparams): a file claiming more is a LimitError before anything is allocated.
inline constexpr int kMaxEmbd = 1 << 20, kMaxLayers = 4096, kMaxVocab = 1 << 24, kMaxFF = 1 << 22, kMaxHeads = 4096,
                     kMaxHeadDim = 1 << 16;

namespace detail {

/// Validates hyperparameters from any source (a file's metadata, synth); path names the source in the error.
inline void check_hparams(const HParams& hp, const std::string& path) {
  auto bad = [&](const std::string& what) { throw FormatError(path + ": invalid hyperparameters: " + what); };
  if (hp.n_embd <= 0 || hp.n_layer <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 || hp.head_dim <= 0 || hp.n_ff <= 0 ||
      hp.n_vocab <= 0)
    bad("dims must be positive (d=" + std::to_string(hp.n_embd) + ", layers=" + std::to_string(hp.n_layer) +
        ", heads=" + std::to_string(hp.n_head) + "/" + std::to_string(hp.n_head_kv) +
        ", head_dim=" + std::to_string(hp.head_dim) + ", ff=" + std::to_string(hp.n_ff) +
        ", vocab=" + std::to_string(hp.n_vocab) + ")");
  if (hp.n_head % hp.n_head_kv != 0) bad("n_head must be a multiple of n_head_kv");
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2) bad("rope dims must be even and <= head_dim");
  if (!(hp.rms_eps > 0) || !(hp.rope_theta > 0)) bad("rms eps and rope theta must be > 0");
  // The documented limits (docs/security.md, "Bounded resources"): far above any real model, low
  // enough that no product of two dims overflows and a file claiming more fails before allocating.
  if (hp.n_embd > kMaxEmbd || hp.n_layer > kMaxLayers || hp.n_vocab > kMaxVocab || hp.n_ff > kMaxFF ||
      hp.n_head > kMaxHeads || hp.n_head_kv > kMaxHeads || hp.head_dim > kMaxHeadDim ||
      int64_t(hp.n_head) * hp.head_dim > kMaxFF)
    throw LimitError(path + ": hyperparameters beyond loopus's limits (d=" + std::to_string(hp.n_embd) +
                     " <= " + std::to_string(kMaxEmbd) + ", layers=" + std::to_string(hp.n_layer) +
                     " <= " + std::to_string(kMaxLayers) + ", vocab=" + std::to_string(hp.n_vocab) + " <= " +
                     std::to_string(kMaxVocab) + ", ff=" + std::to_string(hp.n_ff) + " <= " + std::to_string(kMaxFF) +
                     ", heads=" + std::to_string(hp.n_head) + "/" + std::to_string(hp.n_head_kv) +
                     " <= " + std::to_string(kMaxHeads) + ", head_dim=" + std::to_string(hp.head_dim) +
                     " <= " + std::to_string(kMaxHeadDim) + ", heads x head_dim <= " + std::to_string(kMaxFF) + ")");
  if (hp.n_ctx_train < 0) bad("the training context length must be >= 0");
  if (hp.sliding_window < 0) bad("sliding_window must be >= 0");
  const RopeScaling& rs = hp.rope_scaling;
  if (rs.active() || !rs.short_factor.empty()) {
    if (rs.short_factor.size() != size_t(hp.n_rot / 2) || rs.long_factor.size() != size_t(hp.n_rot / 2))
      bad("longrope short/long factors need n_rot/2 = " + std::to_string(hp.n_rot / 2) + " values each (got " +
          std::to_string(rs.short_factor.size()) + " and " + std::to_string(rs.long_factor.size()) + ")");
    for (const auto* v : {&rs.short_factor, &rs.long_factor})
      for (float x : *v)
        if (!(x > 0) || !std::isfinite(x)) bad("longrope factors must be finite and > 0");
    if (rs.orig_ctx <= 0) bad("longrope needs original_max_position_embeddings > 0");
    if (!(rs.attn_factor > 0) || !std::isfinite(rs.attn_factor)) bad("longrope attention factor must be > 0");
  }
}

/// HF's default longrope attention factor for a context extended from orig to n_ctx.
inline float longrope_attn_factor(int n_ctx, int orig) {
  const double scale = double(n_ctx) / double(orig);
  return scale <= 1.0 ? 1.f : float(std::sqrt(1.0 + std::log(scale) / std::log(double(orig))));
}

}  // namespace detail

}  // namespace loopus
