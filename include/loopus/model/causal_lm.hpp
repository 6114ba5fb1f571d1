// CausalLM<Backend>: the plain (non-looped) model with its KV cache: embed -> all layers -> head.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <memory>
#include <span>

#include "loopus/core/error.hpp"
#include "loopus/model/transformer.hpp"

namespace loopus {

/// Runtime sizes of a context (the llama.cpp n_ctx / n_batch pair).
struct ContextParams {
  int64_t n_ctx = 2048;    ///< positions the KV cache holds
  int64_t n_batch = 512;   ///< tokens per forward chunk during prefill
};

/// The original pretrained model, one sequence, with a KV cache. A
/// LanguageModel (model/language_model.hpp): logits come back in host memory.
template <class Backend>
class CausalLM {
 public:
  CausalLM(std::shared_ptr<const ModelWeights> w, ContextParams cp = {})
      : tf_(w, std::min(cp.n_batch, cp.n_ctx)), cp_(cp) {
    const HParams& hp = tf_.hp();
    cache_.allocate(hp.n_layer, cp.n_ctx, hp.kv_dim());
    x_.reshape({tf_.max_tokens(), hp.n_embd});
    tf_.reserve_context(cp.n_ctx);
  }

  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cp_.n_ctx; }
  int n_vocab() const { return tf_.hp().n_vocab; }
  const HParams& hp() const { return tf_.hp(); }
  const KvCache<Backend>& cache() const { return cache_; }
  Transformer<Backend>& transformer() { return tf_; }

  /// Appends ids to the sequence. Writes the logits of the last token to
  /// logits[V], or of every token to logits[n, V] when all_logits.
  void eval(std::span<const int32_t> ids, float* logits, bool all_logits = false) {
    const HParams& hp = tf_.hp();
    const int64_t n = int64_t(ids.size());
    if (n_past_ + n > cp_.n_ctx)
      throw LimitError("context full: " + std::to_string(n_past_ + n) + " tokens > n_ctx " + std::to_string(cp_.n_ctx));
    for (int64_t t0 = 0; t0 < n; t0 += tf_.max_tokens()) {
      const int64_t T = std::min(tf_.max_tokens(), n - t0);
      const Span<Backend> x = x_.rows(0, T);
      tf_.embed(ids.data() + t0, T, x);
      for (int l = 0; l < hp.n_layer; ++l) tf_.layer(l, x, T, n_past_, cache_.slot(l));
      if (all_logits) tf_.head_to_host(x, T, logits + t0 * hp.n_vocab);
      else if (t0 + T == n) tf_.head_to_host(x_.rows(T - 1, 1), 1, logits);
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
