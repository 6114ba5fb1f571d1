// lm-eval's metrics and aggregations: acc, acc_norm, perplexity, word / byte perplexity, bits per
// byte, and the standard error of a mean.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
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
/// lm-eval's pooled_sample_stderr for a group of subtasks (MMLU): the subtasks' sample variances
/// pooled with n - 1 weights, over the total size.
inline double pooled_stderr(std::span<const double> stderrs, std::span<const double> sizes) {
  double N = 0, var = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    N += sizes[i];
    var += (sizes[i] - 1) * stderrs[i] * stderrs[i] * sizes[i];
  }
  return std::sqrt(var / (N - double(sizes.size())) / N);
}
/// lm-eval's perplexity aggregation: exp(-mean(log-likelihoods)).
inline double perplexity(std::span<const double> ll) { return std::exp(-mean(ll)); }

namespace detail {
/// CPython's random.Random: MT19937 seeded by init_by_array with an int's 32-bit words, random()
/// from two draws (53 bits), choices() as floor(random() * n).
class PyRandom {
 public:
  explicit PyRandom(uint32_t seed) {
    mt_[0] = 19650218u;
    for (i_ = 1; i_ < 624; ++i_) mt_[i_] = 1812433253u * (mt_[i_ - 1] ^ (mt_[i_ - 1] >> 30)) + uint32_t(i_);
    size_t i = 1, j = 0;
    const uint32_t key[1] = {seed};
    for (size_t k = 624; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + uint32_t(j);
      if (++i >= 624) {
        mt_[0] = mt_[623];
        i = 1;
      }
      if (++j >= 1) j = 0;
    }
    for (size_t k = 623; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
      if (++i >= 624) {
        mt_[0] = mt_[623];
        i = 1;
      }
    }
    mt_[0] = 0x80000000u;
    i_ = 624;
  }
  uint32_t next_u32() {
    if (i_ >= 624) {
      for (size_t k = 0; k < 624; ++k) {
        const uint32_t y = (mt_[k] & 0x80000000u) | (mt_[(k + 1) % 624] & 0x7fffffffu);
        mt_[k] = mt_[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
      }
      i_ = 0;
    }
    uint32_t y = mt_[i_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
  }
  double random() {
    const uint32_t a = next_u32() >> 5, b = next_u32() >> 6;
    return (double(a) * 67108864.0 + double(b)) * (1.0 / 9007199254740992.0);
  }

 private:
  uint32_t mt_[624];
  size_t i_ = 0;
};
}  // namespace detail

/// lm-eval's bootstrap_stderr for the perplexity aggregation, draw for draw: `iters` resamples in
/// chunks of min(1000, iters), chunk c drawn by random.Random(c) with random.choices, then the
/// sample standard deviation of the resampled perplexities. (lm-eval's default: 100000 iters.)
inline double perplexity_stderr(std::span<const double> ll, int iters = 100000) {
  if (ll.size() < 2 || iters < 2) return NAN;
  const int chunk = std::min(1000, iters);
  std::vector<double> res;
  res.reserve(size_t(iters));
  const size_t n = ll.size();
  for (int c = 0; c < iters / chunk; ++c) {
    detail::PyRandom rnd(static_cast<uint32_t>(c));
    for (int r = 0; r < chunk; ++r) {
      double s = 0;
      for (size_t k = 0; k < n; ++k) s += ll[size_t(rnd.random() * double(n))];
      res.push_back(std::exp(-s / double(n)));
    }
  }
  const double m = mean(res);
  double ss = 0;
  for (const double x : res) ss += (x - m) * (x - m);
  return std::sqrt(ss / double(res.size() - 1));
}

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
