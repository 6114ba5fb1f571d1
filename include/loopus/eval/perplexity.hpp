// Teacher-forced perplexity of any language model on a token stream: windowed (one eval() per
// window) or streamed (one eval() per token, as in decoding, so cache policies and early exit matter);
// loopus's back-to-back windows, or llama.cpp's llama-perplexity chunks (second half of each scored).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/model/generate.hpp"

namespace loopus::eval {

/// -log softmax(logits)[target] over V logits, in double precision (log-sum-exp).
inline double token_nll(const float* logits, int64_t V, int32_t target) {
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(logits[i]));
  for (int64_t i = 0; i < V; ++i) z += std::exp(double(logits[i]) - mx);
  return mx + std::log(z) - double(logits[target]);
}

/// How the token stream is cut and which tokens are scored.
enum class Chunking {
  /// Back-to-back windows of `window` tokens, each from a fresh context; every token but a
  /// window's first is scored, the last window may be shorter.
  kWindows,
  /// llama.cpp's `llama-perplexity` (tools/perplexity/perplexity.cpp, perplexity()): whole chunks
  /// of `n_ctx` tokens cut back to back (a partial last chunk is dropped), at most `chunks` of them;
  /// each from a fresh context, its first token replaced by `chunk_bos` when that is set (llama.cpp
  /// does it when the vocabulary adds BOS); only the tokens at positions n_ctx/2 + 1 .. n_ctx - 1 of
  /// a chunk are scored (n_ctx - n_ctx/2 - 1 per chunk, 255 for 512). The stream needs at least
  /// 2 * n_ctx tokens, as there.
  kLlama,
};

struct PerplexityOptions {
  int64_t window = 256;         ///< kWindows: tokens per window; each window restarts the context (reset())
  bool stream = false;          ///< one eval() call per token instead of one per window or chunk
  int64_t report_every = 2048;  ///< call the progress callback after about this many more scored tokens (0: never)
  Chunking chunking = Chunking::kWindows;
  int64_t n_ctx = 512;     ///< kLlama: tokens per chunk (llama-perplexity's -c)
  int64_t chunks = -1;     ///< kLlama: score at most this many chunks (llama-perplexity's --chunks; < 0: all)
  int32_t chunk_bos = -1;  ///< kLlama: the id that replaces each chunk's first token (-1: none)
};

/// What the progress callback sees.
struct PerplexityProgress {
  int64_t scored = 0;  ///< tokens scored so far
  int64_t total = 0;   ///< kWindows: tokens in the stream; kLlama: tokens the run scores
  double nll_sum = 0;  ///< summed negative log-likelihood so far (nats)
  double seconds = 0;  ///< since the start
  double ppl() const { return std::exp(nll_sum / double(scored)); }
};

struct PerplexityResult {
  double nll_sum = 0;     ///< summed negative log-likelihood of the scored tokens (nats)
  double nll_sq_sum = 0;  ///< summed squares of the scored tokens' negative log-likelihoods
  int64_t tokens = 0;     ///< tokens scored: every token of a window but its first (kLlama: a chunk's second half)
  int64_t windows = 0;    ///< windows or chunks scored (each restarts the context)
  int64_t calls = 0;      ///< eval() calls
  double mean_loops = 1;  ///< mean loops per eval() call of a looped model (last_loops()); 1 for a plain one
  double seconds = 0;
  bool reported = false;                                   ///< whether the progress callback was called
  double nll() const { return nll_sum / double(tokens); }  ///< mean per token
  double ppl() const { return std::exp(nll()); }
  /// The standard error of ppl() as llama-perplexity prints it ("PPL = x +/- e"): the sample
  /// standard deviation of the per-token NLLs over sqrt(tokens - 1), times ppl() (first-order
  /// propagation through exp). NaN with fewer than 2 tokens; 0 when the NLLs do not vary.
  double ppl_stderr() const {
    if (tokens < 2) return NAN;
    const double n = double(tokens), mean = nll_sum / n, var = nll_sq_sum / n - mean * mean;
    return var > 0 ? std::sqrt(var / (n - 1)) * ppl() : 0.0;
  }
};

using PerplexityCallback = std::function<void(const PerplexityProgress&)>;

/// Scores a token stream with a model (anything with reset(), n_vocab(),
/// n_ctx() and eval(ids, logits, all_logits)), cut as o.chunking says.
/// kWindows: windows of `window` tokens cut back to back from the stream,
/// each scored from a fresh context, every token but the window's first
/// predicted from the ones before it. The last window may be shorter; one of
/// a single token scores nothing. kLlama: llama-perplexity's chunks (see
/// Chunking::kLlama). A window's or chunk's last token is never fed, so
/// n_ctx() >= window - 1 (kLlama: o.n_ctx - 1) is enough.
template <class Model>
PerplexityResult perplexity(Model& m, std::span<const int32_t> toks, const PerplexityOptions& o = {},
                            const PerplexityCallback& progress = {}) {
  const bool llama = o.chunking == Chunking::kLlama;
  // Segments: [start, start + len) of the stream, scored from position `first` on (the targets
  // first + 1 .. len - 1), the first token replaced by `bos` when >= 0.
  size_t W = 0, first = 0, n_seg = 0;
  int32_t bos = -1;
  if (llama) {
    if (o.n_ctx < 3) throw UsageError("perplexity: PerplexityOptions::n_ctx must be at least 3 tokens");
    if (o.chunks == 0) throw UsageError("perplexity: PerplexityOptions::chunks must be at least 1 (or -1: all)");
    if (int64_t(toks.size()) < 2 * o.n_ctx)
      throw UsageError(
          "perplexity: llama-perplexity's chunking needs at least 2 * n_ctx = " + std::to_string(2 * o.n_ctx) +
          " tokens (PerplexityOptions::n_ctx); the text has " + std::to_string(toks.size()));
    W = size_t(o.n_ctx);
    first = W / 2;
    n_seg = toks.size() / W;
    if (o.chunks > 0) n_seg = std::min(n_seg, size_t(o.chunks));
    bos = o.chunk_bos;
  } else {
    if (o.window < 2) throw UsageError("perplexity: the window must be at least 2 tokens");
    W = size_t(o.window);
    n_seg = toks.size() < 2 ? 0 : (toks.size() - 1 + W - 1) / W;  // windows starting before the last token
  }
  if (m.n_ctx() < int64_t(W) - 1)
    throw UsageError("perplexity: the model's context (" + std::to_string(m.n_ctx()) + ") is shorter than a " +
                     (llama ? "chunk" : "window"));
  using clock = std::chrono::steady_clock;
  PerplexityResult r;
  const int64_t V = m.n_vocab();
  for (size_t i = 0; i < toks.size(); ++i)  // a target outside the vocabulary has no logit to read
    if (toks[i] < 0 || toks[i] >= V)
      throw UsageError("perplexity: token " + std::to_string(i) + " has id " + std::to_string(toks[i]) +
                       ", outside the model's vocabulary (0.." + std::to_string(V - 1) +
                       "; was the text tokenized for another model?)");
  if (bos >= V)
    throw UsageError("perplexity: the chunk BOS id " + std::to_string(bos) + " is outside the model's vocabulary");
  check_memory(4 * double(V) * double(o.stream ? 1 : W),
               llama
                   ? "perplexity: the logits of a chunk of " + std::to_string(W) + " tokens (PerplexityOptions::n_ctx)"
                   : "perplexity: the logits of a window of " + std::to_string(W) +
                         " tokens (PerplexityOptions::window)");
  std::vector<float> logits(static_cast<size_t>(V) * (o.stream ? 1 : W));
  std::vector<int32_t> seg;
  // NaN or Inf weights (a corrupt or badly converted file) surface here: an error, not a NaN perplexity.
  auto add_nll = [&](double nll, size_t pos) {
    if (!std::isfinite(nll))
      throw FormatError("perplexity: the model's logits for token " + std::to_string(pos) +
                        " are not finite (its weights hold NaN or Inf values)");
    r.nll_sum += nll;
    r.nll_sq_sum += nll * nll;
    ++r.tokens;
  };
  const int64_t total = llama ? int64_t(n_seg * (W - first - 1)) : int64_t(toks.size());
  double loops = 0;
  const auto t0 = clock::now();
  int64_t last_report = 0;
  for (size_t s = 0; s < n_seg; ++s) {
    const size_t w0 = s * W;
    const size_t n = std::min(toks.size() - w0, W);
    if (n < 2) break;
    seg.assign(toks.begin() + std::ptrdiff_t(w0), toks.begin() + std::ptrdiff_t(w0 + n - 1));  // the fed tokens
    if (bos >= 0) seg[0] = bos;
    const std::span<const int32_t> fed(seg);
    m.reset();
    if (o.stream) {
      for (size_t t = 0; t + 1 < n; ++t) {
        m.eval(fed.subspan(t, 1), logits.data());
        if constexpr (ReportsLoops<Model>) loops += m.last_loops();
        ++r.calls;
        if (t >= first) add_nll(token_nll(logits.data(), V, toks[w0 + t + 1]), w0 + t + 1);
      }
    } else {
      m.eval(fed, logits.data(), /*all_logits=*/true);
      if constexpr (ReportsLoops<Model>) loops += m.last_loops();
      ++r.calls;
      for (size_t t = first; t + 1 < n; ++t)
        add_nll(token_nll(logits.data() + t * size_t(V), V, toks[w0 + t + 1]), w0 + t + 1);
    }
    ++r.windows;
    if (progress && o.report_every > 0 && r.tokens - last_report >= o.report_every) {
      last_report = r.tokens;
      r.reported = true;
      progress({r.tokens, total, r.nll_sum, std::chrono::duration<double>(clock::now() - t0).count()});
    }
  }
  r.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if constexpr (ReportsLoops<Model>) r.mean_loops = r.calls ? loops / double(r.calls) : 1.0;
  return r;
}

}  // namespace loopus::eval
