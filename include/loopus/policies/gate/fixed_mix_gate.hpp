// FixedMixGate: h <- alpha * p + (1 - alpha) * h with one constant alpha.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string_view>

#include "loopus/core/error.hpp"

namespace loopus {

/// A constant convex mix of proposal and state; alpha = 1 is NoGate.
struct FixedMixGate {
  static constexpr std::string_view kName = "mix";
  float alpha = 0.5f;
  FixedMixGate() = default;
  explicit FixedMixGate(float a) : alpha(a) {
    if (!(a >= 0.f && a <= 1.f)) throw Error("--gate mix:ALPHA needs 0 <= alpha <= 1, got " + std::to_string(a));
  }
  void reserve(int64_t, int64_t d) { d_ = d; }
  template <class Backend>
  void blend(const float* p, float* h, int64_t T) {
    const float a = alpha, b = 1.f - alpha;
    for (int64_t i = 0; i < T * d_; ++i) h[i] = a * p[i] + b * h[i];
  }
  float last_mean_alpha() const { return alpha; }

 private:
  int64_t d_ = 0;
};

}  // namespace loopus
