// Teacher-forced perplexity of any language model on a token stream: windowed (one eval() per
// window) or streamed (one eval() per token, as in decoding, so cache policies and early exit matter).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
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

struct PerplexityOptions {
  int64_t window = 256;         ///< tokens per window; each window restarts the context (reset())
  bool stream = false;          ///< one eval() call per token instead of one per window
  int64_t report_every = 2048;  ///< call the progress callback after about this many more scored tokens (0: never)
};

/// What the progress callback sees.
struct PerplexityProgress {
  int64_t scored = 0;  ///< tokens scored so far
  int64_t total = 0;   ///< tokens in the stream
  double nll_sum = 0;  ///< summed negative log-likelihood so far (nats)
  double seconds = 0;  ///< since the start
  double ppl() const { return std::exp(nll_sum / double(scored)); }
};

struct PerplexityResult {
  double nll_sum = 0;     ///< summed negative log-likelihood of the scored tokens (nats)
  int64_t tokens = 0;     ///< tokens scored: every token of a window but its first
  int64_t windows = 0;    ///< windows scored (each restarts the context)
  int64_t calls = 0;      ///< eval() calls
  double mean_loops = 1;  ///< mean loops per eval() call of a looped model (last_loops()); 1 for a plain one
  double seconds = 0;
  bool reported = false;                                   ///< whether the progress callback was called
  double nll() const { return nll_sum / double(tokens); }  ///< mean per token
  double ppl() const { return std::exp(nll()); }
};

using PerplexityCallback = std::function<void(const PerplexityProgress&)>;

/// Scores a token stream with a model (anything with reset(), n_vocab(),
/// n_ctx() and eval(ids, logits, all_logits)): windows of `window` tokens cut
/// back to back from the stream, each scored from a fresh context, every
/// token but the window's first predicted from the ones before it. The last
/// window may be shorter; one of a single token scores nothing. A window's
/// last token is never fed, so n_ctx() >= window - 1 is enough.
template <class Model>
PerplexityResult perplexity(Model& m, std::span<const int32_t> toks, const PerplexityOptions& o = {},
                            const PerplexityCallback& progress = {}) {
  if (o.window < 2) throw UsageError("perplexity: the window must be at least 2 tokens");
  if (m.n_ctx() < o.window - 1)
    throw UsageError("perplexity: the model's context (" + std::to_string(m.n_ctx()) + ") is shorter than a window");
  using clock = std::chrono::steady_clock;
  PerplexityResult r;
  const int64_t V = m.n_vocab();
  for (size_t i = 0; i < toks.size(); ++i)  // a target outside the vocabulary has no logit to read
    if (toks[i] < 0 || toks[i] >= V)
      throw UsageError("perplexity: token " + std::to_string(i) + " has id " + std::to_string(toks[i]) +
                       ", outside the model's vocabulary (0.." + std::to_string(V - 1) +
                       "; was the text tokenized for another model?)");
  check_memory(4 * double(V) * double(o.stream ? 1 : o.window), "perplexity: the logits of a window of " +
                                                                    std::to_string(o.window) +
                                                                    " tokens (PerplexityOptions::window)");
  const size_t W = size_t(o.window);
  std::vector<float> logits(static_cast<size_t>(V) * (o.stream ? 1 : W));
  // NaN or Inf weights (a corrupt or badly converted file) surface here: an error, not a NaN perplexity.
  auto add_nll = [&](double nll, size_t pos) {
    if (!std::isfinite(nll))
      throw FormatError("perplexity: the model's logits for token " + std::to_string(pos) +
                        " are not finite (its weights hold NaN or Inf values)");
    r.nll_sum += nll;
  };
  double loops = 0;
  const auto t0 = clock::now();
  int64_t last_report = 0;
  for (size_t w0 = 0; w0 + 1 < toks.size(); w0 += W) {
    const size_t n = std::min(toks.size() - w0, W);
    if (n < 2) break;
    m.reset();
    if (o.stream) {
      for (size_t t = 0; t + 1 < n; ++t) {
        m.eval(toks.subspan(w0 + t, 1), logits.data());
        if constexpr (ReportsLoops<Model>) loops += m.last_loops();
        ++r.calls;
        add_nll(token_nll(logits.data(), V, toks[w0 + t + 1]), w0 + t + 1);
        ++r.tokens;
      }
    } else {
      m.eval(toks.subspan(w0, n - 1), logits.data(), /*all_logits=*/true);
      if constexpr (ReportsLoops<Model>) loops += m.last_loops();
      ++r.calls;
      for (size_t t = 0; t + 1 < n; ++t)
        add_nll(token_nll(logits.data() + t * size_t(V), V, toks[w0 + t + 1]), w0 + t + 1);
      r.tokens += int64_t(n - 1);
    }
    ++r.windows;
    if (progress && o.report_every > 0 && r.tokens - last_report >= o.report_every) {
      last_report = r.tokens;
      r.reported = true;
      progress({r.tokens, int64_t(toks.size()), r.nll_sum, std::chrono::duration<double>(clock::now() - t0).count()});
    }
  }
  r.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if constexpr (ReportsLoops<Model>) r.mean_loops = r.calls ? loops / double(r.calls) : 1.0;
  return r;
}

}  // namespace loopus::eval
