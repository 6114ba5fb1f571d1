// SIMD float vectors for the CPU kernels: one AVX-512, AVX2 or portable VecF with the few ops they need.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

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

/// Internal: the kernels of Ops<Cpu> are written once against VecF; only the
/// primitives below differ per instruction set, so the AVX-512 path (which the
/// development machine cannot execute) shares every loop with the AVX2 path.
namespace loopus::cpu::simd {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax8(__m256 a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double hsum4d(__m256d a) {
  __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
  return _mm_cvtsd_f64(h);
}
#endif

#if defined(__AVX512F__)
inline constexpr const char* kIsa = "avx512";
inline constexpr int kLanes = 16;

struct VecF {
  __m512 v;
  static VecF zero() { return {_mm512_setzero_ps()}; }
  static VecF set1(float a) { return {_mm512_set1_ps(a)}; }
  static VecF load(const float* p) { return {_mm512_loadu_ps(p)}; }
  /// 16 IEEE half values widened exactly.
  static VecF load_f16(const uint16_t* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  /// 16 bfloat16 values widened exactly (a bf16 is the top half of an f32).
  static VecF load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
inline VecF operator+(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
/// a * b + c
inline VecF fma(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
/// c - a * b
inline VecF fnma(VecF a, VecF b, VecF c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
/// NaN in `a` propagates (the second operand of max/min is returned on NaN).
inline VecF max(VecF a, VecF b) { return {_mm512_max_ps(b.v, a.v)}; }
inline VecF min(VecF a, VecF b) { return {_mm512_min_ps(b.v, a.v)}; }
// Reductions go through 256-bit halves, shared with the AVX2 path.
inline __m256 upper256(__m512 a) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
}
inline float hsum(VecF a) { return hsum8(_mm256_add_ps(_mm512_castps512_ps256(a.v), upper256(a.v))); }
inline float hmax(VecF a) { return hmax8(_mm256_max_ps(_mm512_castps512_ps256(a.v), upper256(a.v))); }
/// 2^n for integral-valued n in [-126, 127] (exponent-field construction).
inline VecF exp2i(VecF n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
inline VecF round_nearest(VecF a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/// Sum of the lanes of a, accumulated in double (used for long reductions).
inline double hsum_double(VecF a) {
  const __m512d d = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a.v)),
                                  _mm512_cvtps_pd(upper256(a.v)));
  return hsum4d(_mm256_add_pd(_mm512_castpd512_pd256(d), _mm512_extractf64x4_pd(d, 1)));
}

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
inline constexpr const char* kIsa = "avx2";
inline constexpr int kLanes = 8;

struct VecF {
  __m256 v;
  static VecF zero() { return {_mm256_setzero_ps()}; }
  static VecF set1(float a) { return {_mm256_set1_ps(a)}; }
  static VecF load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static VecF load_f16(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static VecF load_bf16(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
  }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
inline VecF operator+(VecF a, VecF b) { return {_mm256_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm256_div_ps(a.v, b.v)}; }
inline VecF fma(VecF a, VecF b, VecF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline VecF fnma(VecF a, VecF b, VecF c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
inline VecF max(VecF a, VecF b) { return {_mm256_max_ps(b.v, a.v)}; }
inline VecF min(VecF a, VecF b) { return {_mm256_min_ps(b.v, a.v)}; }
inline float hsum(VecF a) { return hsum8(a.v); }
inline float hmax(VecF a) { return hmax8(a.v); }
inline VecF exp2i(VecF n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
inline VecF round_nearest(VecF a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline double hsum_double(VecF a) {
  return hsum4d(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a.v)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(a.v, 1))));
}

#else
// Portable fallback: 8 plain lanes the compiler may auto-vectorise (NEON, SSE).
inline constexpr const char* kIsa = "scalar";
inline constexpr int kLanes = 8;

struct VecF {
  float v[kLanes];
  static VecF zero() { return set1(0.f); }
  static VecF set1(float a) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = a;
    return r;
  }
  static VecF load(const float* p) {
    VecF r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static VecF load_f16(const uint16_t* p) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = f16_to_f32(p[i]);
    return r;
  }
  static VecF load_bf16(const uint16_t* p) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = bf16_to_f32(p[i]);
    return r;
  }
  void store(float* p) const { std::memcpy(p, v, sizeof v); }
};
#define LOOPUS_SIMD_LANEWISE(expr) \
  VecF r;                          \
  for (int i = 0; i < kLanes; ++i) r.v[i] = (expr); \
  return r
inline VecF operator+(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] + b.v[i]); }
inline VecF operator-(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] - b.v[i]); }
inline VecF operator*(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] * b.v[i]); }
inline VecF operator/(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] / b.v[i]); }
inline VecF fma(VecF a, VecF b, VecF c) { LOOPUS_SIMD_LANEWISE(std::fma(a.v[i], b.v[i], c.v[i])); }
inline VecF fnma(VecF a, VecF b, VecF c) { LOOPUS_SIMD_LANEWISE(std::fma(-a.v[i], b.v[i], c.v[i])); }
inline VecF max(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] != a.v[i] || a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
inline VecF min(VecF a, VecF b) { LOOPUS_SIMD_LANEWISE(a.v[i] != a.v[i] || a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
inline VecF exp2i(VecF n) { LOOPUS_SIMD_LANEWISE(std::ldexp(1.f, int(n.v[i]))); }
inline VecF round_nearest(VecF a) { LOOPUS_SIMD_LANEWISE(std::nearbyint(a.v[i])); }
#undef LOOPUS_SIMD_LANEWISE
inline float hsum(VecF a) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += a.v[i];
  return s;
}
inline float hmax(VecF a) {
  float s = a.v[0];
  for (int i = 1; i < kLanes; ++i) s = a.v[i] > s ? a.v[i] : s;
  return s;
}
inline double hsum_double(VecF a) {
  double s = 0.0;
  for (int i = 0; i < kLanes; ++i) s += a.v[i];
  return s;
}
#endif

/// e^x, lane-wise, relative error about 2 ulp over the whole float range:
/// overflow gives +inf, underflow gives (sub)normals and then 0, NaN stays NaN.
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor series to degree 7
/// (truncation < 1e-8 there), and 2^n applied in two halves so that results
/// below 2^-126 or up to 2^128 need no special case.
inline VecF exp(VecF x) {
  // Clamp into the range where the two-halves scaling is exact enough; NaN
  // passes through min/max unchanged (see max/min above).
  x = min(max(x, VecF::set1(-104.f)), VecF::set1(89.f));
  const VecF n = round_nearest(x * VecF::set1(1.44269504088896341f));
  // ln2 split in a part with few mantissa bits (n·hi is exact) and the rest.
  VecF r = fnma(n, VecF::set1(0.693145751953125f), x);
  r = fnma(n, VecF::set1(1.42860682030941723212e-6f), r);
  VecF p = VecF::set1(1.f / 5040.f);
  p = fma(p, r, VecF::set1(1.f / 720.f));
  p = fma(p, r, VecF::set1(1.f / 120.f));
  p = fma(p, r, VecF::set1(1.f / 24.f));
  p = fma(p, r, VecF::set1(1.f / 6.f));
  p = fma(p, r, VecF::set1(0.5f));
  p = fma(p, r, VecF::set1(1.f));
  p = fma(p, r, VecF::set1(1.f));
  // 2^n = 2^h · 2^(n-h), h = trunc(n/2): both factors stay normal for n in [-150, 129].
  const VecF h = round_nearest(n * VecF::set1(0.5f));
  return p * exp2i(h) * exp2i(n - h);
}

}  // namespace loopus::cpu::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
