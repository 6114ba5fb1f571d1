// VecF for AVX-512 (F): 16 float lanes.
// SPDX-License-Identifier: MIT
// No include guard: included into each instruction set's namespace (see ops/cpu/simd.hpp).
#include "loopus/ops/cpu/isa/x86_reduce.hpp"

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
  /// 2·kLanes bfloat16 values, split by position: even = p[0], p[2], ..., odd = p[1], p[3], ...
  /// (one load, a shift and a mask: the pair in each 32-bit lane becomes two floats).
  static void load_bf16_pairs(const uint16_t* p, VecF& even, VecF& odd) {
    const __m512i w = _mm512_loadu_si512(p);
    even.v = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    odd.v = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xFFFF0000u))));
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
inline __m256 upper256(__m512 a) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)); }
inline float hsum(VecF a) { return hsum8(_mm256_add_ps(_mm512_castps512_ps256(a.v), upper256(a.v))); }
inline float hmax(VecF a) { return hmax8(_mm256_max_ps(_mm512_castps512_ps256(a.v), upper256(a.v))); }
/// 2^n for integral-valued n in [-126, 127] (exponent-field construction).
inline VecF exp2i(VecF n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
inline VecF round_nearest(VecF a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
/// Sum of the lanes of a, accumulated in double (used for long reductions).
inline double hsum_double(VecF a) {
  const __m512d d = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a.v)), _mm512_cvtps_pd(upper256(a.v)));
  return hsum4d(_mm256_add_pd(_mm512_castpd512_pd256(d), _mm512_extractf64x4_pd(d, 1)));
}
