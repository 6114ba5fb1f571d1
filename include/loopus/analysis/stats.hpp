// Vector statistics for inspection: norms, distances, cosines and five-number summaries.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace loopus::analysis {

/// Mean, standard deviation (population, as NumPy's default ddof = 0) and the
/// quartiles of a sample; percentiles interpolate linearly between order
/// statistics (NumPy's default `linear` method). All NaN for an empty sample.
struct Summary {
  double mean = NAN, std = NAN, min = NAN, q1 = NAN, median = NAN, q3 = NAN, max = NAN;
};

/// The p-th percentile (0..100) of sorted values, NumPy's `linear` method.
inline double percentile_sorted(std::span<const double> sorted, double p) {
  if (sorted.empty()) return NAN;
  const double pos = p / 100.0 * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double f = pos - double(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * f;
}

inline Summary summarize(std::span<const float> x) {
  Summary s;
  if (x.empty()) return s;
  std::vector<double> v(x.begin(), x.end());
  double sum = 0;
  for (double e : v) sum += e;
  s.mean = sum / double(v.size());
  double ss = 0;
  for (double e : v) ss += (e - s.mean) * (e - s.mean);
  s.std = std::sqrt(ss / double(v.size()));
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.q1 = percentile_sorted(v, 25);
  s.median = percentile_sorted(v, 50);
  s.q3 = percentile_sorted(v, 75);
  return s;
}

/// Euclidean norm, in double.
inline double l2_norm(std::span<const float> a) {
  double s = 0;
  for (float v : a) s += double(v) * double(v);
  return std::sqrt(s);
}

/// ||a - b||, in double; a and b have the same length.
inline double l2_distance(std::span<const float> a, std::span<const float> b) {
  double s = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return std::sqrt(s);
}

/// Cosine similarity a.b / (|a| |b|); NaN when either vector is zero.
inline double cosine(std::span<const float> a, std::span<const float> b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    ab += double(a[i]) * double(b[i]);
    aa += double(a[i]) * double(a[i]);
    bb += double(b[i]) * double(b[i]);
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : NAN;
}

}  // namespace loopus::analysis
