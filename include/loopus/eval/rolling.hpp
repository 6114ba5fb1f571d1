// Rolling windows for document log-likelihood (perplexity): lm-eval's disjoint windows, and the
// official LoopUS strided windows. Each window is a TokenRequest whose continuation is scored.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/eval/request.hpp"

namespace loopus::eval {

/// lm-eval's loglikelihood_rolling (utils.get_rolling_token_windows with context_len 1, then
/// make_disjoint_window): the first window predicts the first max_len tokens from `prefix`; each
/// next one predicts the following max_len tokens (fewer at the end) from the max_len tokens
/// before them, cut so that no token is fed twice within a window. Every token is scored exactly
/// once; the model sees at most max_len tokens per window.
inline std::vector<TokenRequest> rolling_windows(std::span<const int32_t> toks, int32_t prefix, int64_t max_len) {
  if (max_len < 1) throw UsageError("rolling windows: max_length must be >= 1");
  std::vector<TokenRequest> out;
  if (toks.empty()) return out;
  const size_t L = size_t(max_len), N = toks.size();
  const size_t first = std::min(L, N);
  out.push_back({{prefix}, std::vector<int32_t>(toks.begin(), toks.begin() + std::ptrdiff_t(first))});
  size_t predicted = first;
  while (predicted < N) {
    const size_t pred = std::min(N - predicted, L);
    const size_t end = predicted + pred;
    // input tokens [end - L - 1, end - 1), of which the disjoint context is the first L - (pred - 1)
    const size_t a0 = end - L - 1, a_len = L - (pred - 1);
    out.push_back(
        {std::vector<int32_t>(toks.begin() + std::ptrdiff_t(a0), toks.begin() + std::ptrdiff_t(a0 + a_len)),
         std::vector<int32_t>(toks.begin() + std::ptrdiff_t(end - pred), toks.begin() + std::ptrdiff_t(end))});
    predicted = end;
  }
  return out;
}

/// The official LoopUS evaluation's windows: `window` tokens every `stride` tokens; the first
/// window scores its tokens 1.., each later one the tokens past the previous window's end (its
/// last `stride`). A document's first token is never scored.
inline std::vector<TokenRequest> strided_windows(std::span<const int32_t> toks, int64_t window, int64_t stride) {
  if (window < 2 || stride < 1 || stride > window)
    throw UsageError("strided windows: need window >= 2 and 1 <= stride <= window");
  std::vector<TokenRequest> out;
  const size_t N = toks.size(), W = size_t(window), S = size_t(stride);
  size_t prev_end = 1;  // tokens before this are scored (token 0 never is)
  for (size_t begin = 0; begin < N; begin += S) {
    const size_t end = std::min(begin + W, N);
    const size_t from = std::max(prev_end, begin + 1);
    if (from < end)
      out.push_back({std::vector<int32_t>(toks.begin() + std::ptrdiff_t(begin), toks.begin() + std::ptrdiff_t(from)),
                     std::vector<int32_t>(toks.begin() + std::ptrdiff_t(from), toks.begin() + std::ptrdiff_t(end))});
    prev_end = std::max(prev_end, end);
    if (end == N) break;
  }
  return out;
}

}  // namespace loopus::eval
