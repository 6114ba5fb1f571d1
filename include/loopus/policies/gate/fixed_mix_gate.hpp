// FixedMixGate: h <- alpha * p + (1 - alpha) * h with one constant alpha.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// A constant convex mix of proposal and state; alpha = 1 is NoGate.
/// Needs from Ops<Backend>: mix.
struct FixedMixGate {
  static constexpr std::string_view kName = "mix";
  /// No learned parameters: alpha is a run-time setting.
  struct Weights {};
  float alpha = 0.5f;
  FixedMixGate() = default;
  explicit FixedMixGate(float a) : alpha(a) {
    if (!(a >= 0.f && a <= 1.f))
      throw UsageError("FixedMixGate: alpha must be in [0, 1] (gate spec mix:ALPHA), got " + std::to_string(a));
  }
  template <class Backend>
  void reserve(int64_t, int64_t) {}
  template <class Backend>
  void blend(CSpan<Backend> p, Span<Backend> h, int64_t) {
    Ops<Backend>::mix(h, p, alpha);
  }
  float last_mean_alpha() const { return alpha; }
};

}  // namespace loopus
