// ConfidenceHead (q_head): LayerNorm -> Linear(d, 1) -> sigmoid, the learned halting signal.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"

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
      throw FormatError(where + ": q_head tensors have inconsistent shapes");
  }
  /// q = sigmoid(w · LayerNorm(x) + b) for one state x[d] in Backend's memory;
  /// the arithmetic is Ops<Backend>::layernorm_dot.
  template <class Backend>
  float prob(CSpan<Backend> x) const {
    const float logit = Ops<Backend>::layernorm_dot(x, Weight::f32(ln_w.data(), 1, d), Weight::f32(ln_b.data(), 1, d),
                                                    Weight::f32(w.data(), 1, d), b, eps);
    return 1.f / (1.f + std::exp(-logit));
  }
};

}  // namespace loopus
