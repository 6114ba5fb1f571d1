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

/// Checks the runs of an eval_runs() call against ids, the forward chunk and
/// the cache; returns the number of logit rows they ask for.
inline int64_t check_runs(std::span<const int32_t> ids, std::span<const TokenRun> runs, int64_t max_tokens,
                          int64_t n_ctx) {
  int64_t n = 0, rows = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const TokenRun& r = runs[i];
    const std::string at = "eval_runs: run " + std::to_string(i) + " ";
    if (r.n < 1 || r.pos < 0 || r.begin < 0 || r.row - r.begin != r.pos)
      throw UsageError(at +
                       "needs n >= 1 tokens at positions pos >= 0 counted from its first cache row begin "
                       "(row == begin + pos), got n " +
                       std::to_string(r.n) + ", pos " + std::to_string(r.pos) + ", row " + std::to_string(r.row) +
                       ", begin " + std::to_string(r.begin));
    if (r.row + r.n > n_ctx)
      throw LimitError(at + "reaches cache row " + std::to_string(r.row + r.n) + " > n_ctx " + std::to_string(n_ctx));
    if (r.n_logits < 0 || r.n_logits > r.n)
      throw UsageError(at + "asks for " + std::to_string(r.n_logits) + " logit rows of its " + std::to_string(r.n) +
                       " tokens");
    n += r.n;
    rows += r.n_logits;
  }
  if (n != int64_t(ids.size()))
    throw UsageError("eval_runs: the runs hold " + std::to_string(n) + " tokens, ids " + std::to_string(ids.size()));
  if (n > max_tokens)
    throw LimitError("eval_runs: " + std::to_string(n) + " tokens in one call > the forward chunk of " +
                     std::to_string(max_tokens) + " (ContextParams::n_batch)");
  return rows;
}

/// The rows of x whose logits the runs ask for, gathered in order into y (sized here).
template <class Backend>
CSpan<Backend> gather_logit_rows(Span<Backend> x, std::span<const TokenRun> runs, int64_t d, Tensor<Backend>& y) {
  int64_t rows = 0, t0 = 0;
  for (const TokenRun& r : runs) rows += r.n_logits;
  y.reshape({rows, d});
  int64_t out = 0;
  for (const TokenRun& r : runs) {
    if (r.n_logits > 0) Ops<Backend>::copy(y.rows(out, r.n_logits), x.rows(t0 + r.n - r.n_logits, r.n_logits, d));
    out += r.n_logits;
    t0 += r.n;
  }
  return y.span().sub(0, rows * d);
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

  /// Batched scoring: several runs of tokens (TokenRun), laid out in the cache
  /// by the caller, in one forward pass of at most n_batch tokens. ids holds
  /// the runs' tokens one run after the other; the logits of each run's last
  /// n_logits tokens go to logits[rows, V], run after run. Equal, within
  /// rounding, to feeding each run on its own after its cache rows
  /// begin..row. Leaves the sequence empty (n_past() == 0).
  void eval_runs(std::span<const int32_t> ids, std::span<const TokenRun> runs, float* logits) {
    const int64_t rows = detail::check_runs(ids, runs, tf_.max_tokens(), cp_.n_ctx);
    n_past_ = 0;
    const HParams& hp = tf_.hp();
    const int64_t T = int64_t(ids.size());
    if (T == 0) return;
    const Span<Backend> x = x_.rows(0, T);
    tf_.embed(ids.data(), T, x);
    for (int l = 0; l < hp.n_layer; ++l) tf_.layer(l, x, runs, cache_.slot(l));
    if (rows > 0) tf_.head_to_host(detail::gather_logit_rows(x, runs, hp.n_embd, y_), rows, logits);
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
  /// The most tokens one forward pass takes (ContextParams::n_batch, at most n_ctx).
  int64_t n_batch() const { return tf_.max_tokens(); }
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
  Tensor<Backend> x_, y_;
  int64_t n_past_ = 0;
};

}  // namespace loopus
