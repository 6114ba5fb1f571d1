// Helpers of the CUDA tests: the skip when no GPU is present, host <-> device vectors, error measures.
// SPDX-License-Identifier: MIT
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/ops/cuda/ops.hpp"
#include "test_util.hpp"

/// In a TEST_CASE body: without a usable CUDA device, reports the test as skipped (ctest lists it
/// so, with the runtime's reason) and returns from it.
#define LOOPUS_GPU_OR_SKIP()                                                                \
  if (::loopus::cuda::device_count() == 0) {                                                \
    ::loopus::test::report_skip("needs a CUDA GPU: " + ::loopus::cuda::no_device_reason()); \
    return;                                                                                 \
  }

namespace loopus::test {

inline Tensor<Cuda> to_device(const std::vector<float>& h) {
  Tensor<Cuda> t({int64_t(h.size())});
  Ops<Cuda>::upload(h.data(), t.span());
  return t;
}

inline std::vector<float> to_host(CSpan<Cuda> s) {
  std::vector<float> h(size_t(s.size()));
  Ops<Cuda>::download(s, h.data());
  return h;
}

/// max |got − want| / max |want|: the error relative to the result's scale.
inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE_EQ(got.size(), want.size());
  double e = 0, m = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    e = std::max(e, std::abs(double(got[i]) - double(want[i])));
    m = std::max(m, std::abs(double(want[i])));
  }
  return e / m;
}

}  // namespace loopus::test
