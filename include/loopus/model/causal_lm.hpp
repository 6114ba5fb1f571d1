// CausalLM<Backend>: the plain (non-looped) model with its KV cache: embed -> all layers -> head.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "loopus/core/error.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/model/transformer.hpp"

namespace loopus {

/// Runtime sizes of a context (the llama.cpp n_ctx / n_batch pair).
struct ContextParams {
  int64_t n_ctx = 2048;    ///< positions the KV cache holds (1..kMaxContext)
  int64_t n_batch = 512;   ///< tokens per forward chunk during prefill
};

/// The longest context a model accepts (ContextParams::n_ctx); within it, a
/// context whose KV cache cannot fit in memory is refused up front (check_memory).
inline constexpr int64_t kMaxContext = int64_t(1) << 24;

namespace detail {
/// Checks a context before its buffers exist: n_ctx in 1..kMaxContext, and its
/// KV cache (kv_slots layer caches of n_ctx rows of K and V) plus `extra_floats`
/// within check_memory(). `what_cache` describes the slots for the message.
inline void check_context(const HParams& hp, const ContextParams& cp, int64_t kv_slots, double extra_floats,
                          const std::string& what_cache) {
  if (cp.n_ctx < 1) throw UsageError("ContextParams::n_ctx must be >= 1, got " + std::to_string(cp.n_ctx));
  if (cp.n_ctx > kMaxContext)
    throw LimitError("a context of " + std::to_string(cp.n_ctx) + " tokens is beyond the limit of " +
                     std::to_string(kMaxContext) + " tokens");
  const double kv = double(kv_slots) * double(cp.n_ctx) * double(hp.kv_dim()) * 2;
  check_memory(4 * (kv + extra_floats), "a context of " + std::to_string(cp.n_ctx) + " tokens (KV cache of " +
                                            what_cache + ", " + std::to_string(2 * hp.kv_dim()) +
                                            " floats per token each)");
}
}  // namespace detail

/// The original pretrained model, one sequence, with a KV cache. A
/// LanguageModel (model/language_model.hpp): logits come back in host memory.
template <class Backend>
class CausalLM {
 public:
  CausalLM(std::shared_ptr<const ModelWeights> w, ContextParams cp = {})
      : tf_(w, std::min(cp.n_batch, cp.n_ctx)), cp_(cp) {
    const HParams& hp = tf_.hp();
    detail::check_context(hp, cp, hp.n_layer, double(tf_.max_tokens()) * hp.n_embd,
                          std::to_string(hp.n_layer) + " layers");
    cache_.allocate(hp.n_layer, cp.n_ctx, hp.kv_dim());
    x_.reshape({tf_.max_tokens(), hp.n_embd});
    tf_.reserve_context(cp.n_ctx);
  }

  void reset() { n_past_ = 0; }
  /// Keeps the first n tokens (Rewindable): later eval() calls overwrite the rest of the cache.
  void rewind(int64_t n) {
    if (n < 0 || n > n_past_)
      throw UsageError("rewind: " + std::to_string(n) + " is outside 0.." + std::to_string(n_past_));
    n_past_ = n;
  }
  bool can_rewind() const { return true; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cp_.n_ctx; }
  int n_vocab() const { return tf_.hp().n_vocab; }
  const HParams& hp() const { return tf_.hp(); }
  const KvCache<Backend>& cache() const { return cache_; }
  Transformer<Backend>& transformer() { return tf_; }

  /// Appends ids to the sequence. Writes the logits of the last token to
  /// logits[V], or of every token to logits[n, V] when all_logits.
  void eval(std::span<const int32_t> ids, float* logits, bool all_logits = false) {
    eval_tail(ids, logits, all_logits ? int64_t(ids.size()) : 1);
  }
  /// Appends ids; writes the logits of the last k of them to logits[k, V].
  void eval_tail(std::span<const int32_t> ids, float* logits, int64_t k) {
    const HParams& hp = tf_.hp();
    const int64_t n = int64_t(ids.size());
    if (n_past_ + n > cp_.n_ctx)
      throw LimitError("context full: " + std::to_string(n_past_ + n) + " tokens > n_ctx " + std::to_string(cp_.n_ctx));
    if (n > 0 && (k < 1 || k > n))
      throw UsageError("eval_tail: k = " + std::to_string(k) + " must be in 1.." + std::to_string(n));
    const int64_t first = n - k;  // first row whose logits are wanted
    for (int64_t t0 = 0; t0 < n; t0 += tf_.max_tokens()) {
      const int64_t T = std::min(tf_.max_tokens(), n - t0);
      const Span<Backend> x = x_.rows(0, T);
      tf_.embed(ids.data() + t0, T, x);
      for (int l = 0; l < hp.n_layer; ++l) tf_.layer(l, x, T, n_past_, cache_.slot(l));
      if (t0 + T > first) {
        const int64_t r0 = std::max<int64_t>(first - t0, 0);
        tf_.head_to_host(x_.rows(r0, T - r0), T - r0, logits + (t0 + r0 - first) * hp.n_vocab);
      }
      n_past_ += T;
    }
  }

 private:
  Transformer<Backend> tf_;
  ContextParams cp_;
  KvCache<Backend> cache_;
  Tensor<Backend> x_;
  int64_t n_past_ = 0;
};

}  // namespace loopus
