// Eigen for the CPU backend, included through this header only.
// SPDX-License-Identifier: MIT
#pragma once

// GCC 12.1/12.2 implement many AVX-512 intrinsics with an "undefined"
// pass-through register that -W(maybe-)uninitialized then reports wherever
// Eigen's packet code inlines them (GCC bug 105593, fixed in 12.3): thousands
// of lines on an AVX-512 machine, none about loopus or Eigen. The diagnostic
// state at Eigen's definitions is what GCC consults, so it is turned off for
// Eigen's headers alone; our own code keeps every warning.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
