// ConfidenceHead (q_head): LayerNorm -> Linear(d, 1) -> sigmoid, the learned halting signal.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus {

/// q_head.0 (LayerNorm, eps 1e-5, affine) and q_head.1 (Linear d -> 1), f32.
struct ConfidenceHead {
  int64_t d = 0;
  float eps = 1e-5f;
  std::vector<float> ln_w, ln_b;  ///< [d]
  std::vector<float> w;           ///< [d]  (Linear weight [1, d])
  float b = 0.f;

  bool empty() const { return d == 0; }
  void check(const std::string& where) const {
    if (d <= 0 || ln_w.size() != size_t(d) || ln_b.size() != size_t(d) || w.size() != size_t(d))
      throw Error(where + ": q_head tensors have inconsistent shapes");
  }
  /// The logit for one state vector x[d] (double accumulation; d-sized, off the hot path's critical cost).
  float logit(const float* x) const {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= double(d);
    for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= double(d);  // biased, as torch LayerNorm
    const double inv = 1.0 / std::sqrt(var + double(eps));
    double s = b;
    for (int64_t i = 0; i < d; ++i) s += double(w[size_t(i)]) * ((x[i] - mean) * inv * ln_w[size_t(i)] + ln_b[size_t(i)]);
    return float(s);
  }
  float prob(const float* x) const { return 1.f / (1.f + std::exp(-logit(x))); }
};

}  // namespace loopus
