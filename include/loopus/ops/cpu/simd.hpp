// SIMD float vectors for the CPU kernels: one AVX-512, AVX2 or portable VecF with the few ops they need.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif

#include "loopus/core/dtype.hpp"

// GCC 12.1/12.2 implement many AVX-512 intrinsics (max, min, roundscale,
// 512->256 casts and extracts, ...) with an "undefined" pass-through register
// that -Wuninitialized then reports wherever they are inlined (GCC bug 105593,
// fixed in 12.3): hundreds of lines on an AVX-512 machine, none about this
// code. The state at these definitions is what GCC consults when it inlines them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/// Internal: VecF, kLanes and the kernels written against them, compiled for the instruction set of
/// the build's own flags (the "baseline" level of ops/cpu/isa.hpp). The element-wise kernels of
/// Ops<Cpu> use these; the matmul kernels are also compiled once per x86 level and chosen at run
/// time (ops/cpu/isa_kernels.hpp), from the same files.
namespace loopus::cpu::simd {

#if defined(__AVX512F__)
#include "loopus/ops/cpu/isa/vec_avx512.hpp"
inline constexpr bool kPrefetchF32 = true;
inline constexpr bool kGemvStream = true;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "loopus/ops/cpu/isa/vec_avx2.hpp"
inline constexpr bool kPrefetchF32 = false;
inline constexpr bool kGemvStream = false;
#else
#include "loopus/ops/cpu/isa/vec_portable.hpp"
inline constexpr bool kPrefetchF32 = false;
inline constexpr bool kGemvStream = false;
#endif
inline constexpr int64_t kStreamPrefetchBytes = 512;
#include "loopus/ops/cpu/isa/gemv_body.hpp"
#include "loopus/ops/cpu/isa/peak_body.hpp"
#include "loopus/ops/cpu/isa/vec_math.hpp"

}  // namespace loopus::cpu::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
