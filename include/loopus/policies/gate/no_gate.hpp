// NoGate: the proposal replaces the state (h <- p), a plain weight-tied loop.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string_view>

#include "loopus/core/tensor.hpp"

namespace loopus {

/// h <- p. With B = 1 the looped model equals the original model exactly.
/// Needs from Ops<Backend>: copy.
struct NoGate {
  static constexpr std::string_view kName = "none";
  /// No parameters.
  struct Weights {};
  template <class Backend>
  void reserve(int64_t, int64_t) {}
  template <class Backend>
  void blend(CSpan<Backend> p, Span<Backend> h, int64_t) {
    Ops<Backend>::copy(h, p);
  }
  float last_mean_alpha() const { return 1.f; }
};

}  // namespace loopus
