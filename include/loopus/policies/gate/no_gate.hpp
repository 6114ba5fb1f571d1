// NoGate: the proposal replaces the state (h <- p), a plain weight-tied loop.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace loopus {

/// h <- p. With B = 1 the looped model equals the original model exactly.
struct NoGate {
  static constexpr std::string_view kName = "none";
  void reserve(int64_t, int64_t d) { d_ = d; }
  template <class Backend>
  void blend(const float* p, float* h, int64_t T) {
    std::memcpy(h, p, size_t(T * d_) * sizeof(float));
  }
  float last_mean_alpha() const { return 1.f; }

 private:
  int64_t d_ = 0;
};

}  // namespace loopus
