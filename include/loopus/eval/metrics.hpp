// lm-eval's metrics and aggregations: acc, acc_norm, perplexity, word / byte perplexity, bits per
// byte, and the standard error of a mean.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus::eval {

/// Index of the largest value, the first on ties (numpy.argmax).
inline size_t argmax(std::span<const double> v) {
  if (v.empty()) throw UsageError("argmax of no values");
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

/// lm-eval multiple choice: acc picks the choice with the highest log-likelihood; acc_norm the one
/// with the highest log-likelihood per character of the choice text (len(choice) in Python: code
/// points, without the target delimiter).
struct ChoiceScores {
  std::vector<double> ll;
  std::vector<std::string> choices;
  size_t gold = 0;
};

/// Number of Unicode code points in UTF-8 text (Python's len of a str).
inline size_t code_points(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

inline double acc(const ChoiceScores& s) { return argmax(s.ll) == s.gold ? 1.0 : 0.0; }
inline double acc_norm(const ChoiceScores& s) {
  if (s.choices.size() != s.ll.size()) throw UsageError("acc_norm: one choice text per log-likelihood needed");
  std::vector<double> norm(s.ll.size());
  for (size_t i = 0; i < s.ll.size(); ++i) norm[i] = s.ll[i] / double(code_points(s.choices[i]));
  return argmax(norm) == s.gold ? 1.0 : 0.0;
}

inline double mean(std::span<const double> v) {
  double s = 0;
  for (const double x : v) s += x;
  return v.empty() ? NAN : s / double(v.size());
}
/// lm-eval's mean_stderr: the sample standard deviation (n - 1) over sqrt(n).
inline double mean_stderr(std::span<const double> v) {
  if (v.size() < 2) return NAN;
  const double m = mean(v);
  double ss = 0;
  for (const double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / double(v.size() - 1)) / std::sqrt(double(v.size()));
}
/// lm-eval's perplexity aggregation: exp(-mean(log-likelihoods)).
inline double perplexity(std::span<const double> ll) { return std::exp(-mean(ll)); }
/// Its standard error by the delta method: ppl x stderr(mean ll). (lm-eval bootstraps it; the two
/// agree to a few percent for n in the hundreds.)
inline double perplexity_stderr(std::span<const double> ll) { return perplexity(ll) * mean_stderr(ll); }

/// Per-document (log-likelihood, weight) pairs: words or bytes.
struct Weighted {
  double ll = 0;
  double weight = 0;
};
/// lm-eval's weighted_perplexity: exp(-sum ll / sum weight).
inline double weighted_perplexity(std::span<const Weighted> v) {
  double ll = 0, w = 0;
  for (const auto& x : v) ll += x.ll, w += x.weight;
  return std::exp(-ll / w);
}
/// lm-eval's bits_per_byte: -sum ll / sum bytes / ln 2.
inline double bits_per_byte(std::span<const Weighted> v) {
  double ll = 0, w = 0;
  for (const auto& x : v) ll += x.ll, w += x.weight;
  return -ll / w / std::numbers::ln2;
}

}  // namespace loopus::eval
