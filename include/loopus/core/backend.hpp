// Backend tags. A backend is an empty type; kernels are chosen by Ops<Backend>.
// SPDX-License-Identifier: MIT
#pragma once
#include <string_view>

namespace loopus {

/// Plain scalar loops, written for clarity: the oracle every kernel is tested against.
struct Reference {
  static constexpr std::string_view kName = "reference";
};
/// Eigen + OpenMP + AVX-512/AVX2 intrinsics where they pay.
struct Cpu {
  static constexpr std::string_view kName = "cpu";
};
/// CUDA (cuBLAS + kernels). Declared now so policies can name it; kernels land later.
struct Cuda {
  static constexpr std::string_view kName = "cuda";
};

/// Kernel table for a backend; specialised in ops/reference/ops.hpp, ops/cpu/ops.hpp.
template <class Backend>
struct Ops;

/// The training path's kernels for a backend (forward with tapes, backward,
/// optimizer), templated on the scalar (f32; f64 for gradient checks);
/// specialised in ops/reference/train.hpp, ops/cpu/train.hpp.
template <class Backend>
struct TrainOps;

}  // namespace loopus
