// The matmul kernels once per x86 instruction set, and the table that picks them at run time.
// SPDX-License-Identifier: MIT
//
// Design (docs/performance.md, "One binary, every x86-64 CPU"): the kernel bodies in ops/cpu/isa/
// are written once against VecF and included into one namespace per level, each compiled for its
// instruction set by a target pragma (GCC: #pragma GCC target; Clang: #pragma clang attribute)
// whatever the build's -march. mat_kernels() hands out the function pointers of the level
// active_isa() names, so one binary runs AVX-512 kernels where the CPU has them and AVX2 ones
// elsewhere. The OpenMP loops stay in the callers (ops/cpu/ops.hpp), compiled with the build's
// flags: each thread calls one kernel on its share of the rows.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/ops/cpu/isa.hpp"
#include "loopus/ops/cpu/simd.hpp"
#include "loopus/ops/reference/quant.hpp"

#if LOOPUS_X86_DISPATCH
#include <immintrin.h>
#endif

namespace loopus::cpu {

/// One level's matmul kernels (see ops/cpu/isa/gemv_body.hpp and gemm_bf16_body.hpp).
struct MatKernels {
  /// Rows [r0, r1) of y[T, ldy] = x[T, cols] · Wᵀ streaming W once (decode, small T).
  using Gemv = void (*)(const void* w, int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t T, float* y,
                        int64_t ldy);
  using Widen = void (*)(const uint16_t* src, int64_t n, float* dst);
  /// Rows [r0, r1) of y[T, ldy] for a quantized W against T activation rows already rounded to
  /// 8-bit blocks (ops/reference/quant.hpp; isa/quant_body.hpp).
  using QGemv = void (*)(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* acts, int64_t T,
                         float* y, int64_t ldy);
  Isa isa;
  Gemv gemv_f32, gemv_f16, gemv_bf16;
  Widen widen_f16, widen_bf16;
  /// Native bf16 prefill (AVX512_BF16 only, else null): to_bf16 rounds activations into a
  /// zero-padded row, gemm_bf16 multiplies rows [r0, r1) of a bf16 W with them.
  void (*to_bf16)(const float* x, int64_t n, uint16_t* dst, int64_t n_pad);
  void (*gemm_bf16)(const uint16_t* xb, int64_t ldx, int64_t T, const void* w, int64_t r0, int64_t r1, int64_t K,
                    float* y, int64_t ldy);
  /// Throughput probes for bench_ops (isa/peak_body.hpp): f32 FMA chains of this level's vector
  /// width, lanes() multiply-adds per chain step; bf16 pair products (null below AVX512_BF16),
  /// 32 multiply-adds per step.
  float (*fma_chains)(int64_t iters);
  int lanes;
  float (*dpbf16_chains)(int64_t iters);
  /// Quantized GEMVs, indexed by quant::quant_index (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K).
  QGemv gemv_q[quant::kNumQuantTypes];
  /// quant::quantize_act (the activations' rounding to 8-bit blocks), the same bytes.
  void (*quantize_act)(quant::ActKind kind, const float* x, int64_t n, const quant::ActRowMut& a);
};

namespace detail {
/// The baseline level's quantized GEMV: the scalar oracle itself.
template <DType kT>
inline void gemv_q_scalar(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* acts, int64_t T,
                          float* y, int64_t ldy) {
  quant::gemv(kT, w, r0, r1, cols, acts, T, y, ldy);
}
}  // namespace detail

}  // namespace loopus::cpu

#if LOOPUS_X86_DISPATCH
// GCC 12.1/12.2 report -Wuninitialized inside AVX-512 intrinsics (bug 105593; see ops/cpu/simd.hpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// ---- AVX2 + FMA + F16C ----
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace loopus::cpu::isa_avx2 {
inline constexpr bool kPrefetchF32 = false;  // -5-25% on AVX2 CPUs (gemv_body.hpp)
inline constexpr bool kGemvStream = false;   // tuned on Zen 3 with four-row blocks; not re-measured
inline constexpr int64_t kStreamPrefetchBytes = 512;
#include "loopus/ops/cpu/isa/vec_avx2.hpp"

// The kernels, written against that VecF:
#include "loopus/ops/cpu/isa/gemv_body.hpp"
#include "loopus/ops/cpu/isa/peak_body.hpp"
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#include "loopus/ops/cpu/isa/quant_body.hpp"
}  // namespace loopus::cpu::isa_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- AVX-512 F/BW/VL ----
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif
namespace loopus::cpu::isa_avx512 {
inline constexpr bool kPrefetchF32 = true;  // +60-80% f32 GEMV on Zen 4 (docs/performance.md)
inline constexpr bool kGemvStream = true;   // one token: 88-105% of read bandwidth on Zen 4
inline constexpr int64_t kStreamPrefetchBytes = 512;
#include "loopus/ops/cpu/isa/vec_avx512.hpp"

// The kernels, written against that VecF:
#include "loopus/ops/cpu/isa/gemv_body.hpp"
#include "loopus/ops/cpu/isa/peak_body.hpp"
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#include "loopus/ops/cpu/isa/quant_body.hpp"
}  // namespace loopus::cpu::isa_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- AVX512_BF16 + AVX512_VNNI (the bf16 prefill and the quantized GEMVs; the float GEMVs are the
// AVX-512 ones) ----
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512bf16,avx512vnni,avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512bf16,avx512vnni,avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif
namespace loopus::cpu::isa_avx512bf16 {
#include "loopus/ops/cpu/isa/gemm_bf16_body.hpp"
#include "loopus/ops/cpu/isa/x86_reduce.hpp"
/// vpdpbusd: the four u8·s8 products of each 32-bit lane summed in one instruction.
inline __m256i dot_u8s8(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }
#include "loopus/ops/cpu/isa/quant_body.hpp"
}  // namespace loopus::cpu::isa_avx512bf16
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // LOOPUS_X86_DISPATCH

namespace loopus::cpu {

/// The kernels of level `isa` (which the CPU must support: isa_supported()).
inline const MatKernels& mat_kernels(Isa isa) {
  using detail::gemv_q_scalar;
  static const MatKernels base{Isa::kBaseline,
                               &simd::gemv_f32,
                               &simd::gemv_f16,
                               &simd::gemv_bf16,
                               &simd::widen_f16,
                               &simd::widen_bf16,
                               nullptr,
                               nullptr,
                               &simd::fma_chains,
                               simd::kLanes,
                               nullptr,
                               {&gemv_q_scalar<DType::kQ8_0>, &gemv_q_scalar<DType::kQ4_0>,
                                &gemv_q_scalar<DType::kQ4_1>, &gemv_q_scalar<DType::kQ4_K>,
                                &gemv_q_scalar<DType::kQ5_K>, &gemv_q_scalar<DType::kQ6_K>},
                               &quant::quantize_act};
#if LOOPUS_X86_DISPATCH
  static const MatKernels avx2{Isa::kAvx2,
                               &isa_avx2::gemv_f32,
                               &isa_avx2::gemv_f16,
                               &isa_avx2::gemv_bf16,
                               &isa_avx2::widen_f16,
                               &isa_avx2::widen_bf16,
                               nullptr,
                               nullptr,
                               &isa_avx2::fma_chains,
                               isa_avx2::kLanes,
                               nullptr,
                               {&isa_avx2::gemv_q8_0, &isa_avx2::gemv_q4_0, &isa_avx2::gemv_q4_1, &isa_avx2::gemv_q4_k,
                                &isa_avx2::gemv_q5_k, &isa_avx2::gemv_q6_k},
                               &isa_avx2::quantize_act};
  static const MatKernels avx512{Isa::kAvx512,
                                 &isa_avx512::gemv_f32,
                                 &isa_avx512::gemv_f16,
                                 &isa_avx512::gemv_bf16,
                                 &isa_avx512::widen_f16,
                                 &isa_avx512::widen_bf16,
                                 nullptr,
                                 nullptr,
                                 &isa_avx512::fma_chains,
                                 isa_avx512::kLanes,
                                 nullptr,
                                 {&isa_avx512::gemv_q8_0, &isa_avx512::gemv_q4_0, &isa_avx512::gemv_q4_1,
                                  &isa_avx512::gemv_q4_k, &isa_avx512::gemv_q5_k, &isa_avx512::gemv_q6_k},
                                 &isa_avx512::quantize_act};
  static const MatKernels avx512bf16{Isa::kAvx512Bf16,
                                     &isa_avx512::gemv_f32,
                                     &isa_avx512::gemv_f16,
                                     &isa_avx512::gemv_bf16,
                                     &isa_avx512::widen_f16,
                                     &isa_avx512::widen_bf16,
                                     &isa_avx512bf16::to_bf16,
                                     &isa_avx512bf16::gemm_bf16,
                                     &isa_avx512::fma_chains,
                                     isa_avx512::kLanes,
                                     &isa_avx512bf16::dpbf16_chains,
                                     {&isa_avx512bf16::gemv_q8_0, &isa_avx512bf16::gemv_q4_0,
                                      &isa_avx512bf16::gemv_q4_1, &isa_avx512bf16::gemv_q4_k,
                                      &isa_avx512bf16::gemv_q5_k, &isa_avx512bf16::gemv_q6_k},
                                     &isa_avx512bf16::quantize_act};
  switch (isa) {
    case Isa::kBaseline: return base;
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512: return avx512;
    case Isa::kAvx512Bf16: return avx512bf16;
  }
#endif
  return base;
}

/// The kernels of the active level (active_isa()).
inline const MatKernels& mat_kernels() { return mat_kernels(active_isa()); }

}  // namespace loopus::cpu
