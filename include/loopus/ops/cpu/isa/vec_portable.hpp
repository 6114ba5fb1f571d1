// VecF in plain C++: 8 lanes the compiler may auto-vectorise (NEON, SSE).
// SPDX-License-Identifier: MIT
// No include guard: included into each instruction set's namespace (see ops/cpu/simd.hpp).

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
  static void load_bf16_pairs(const uint16_t* p, VecF& even, VecF& odd) {
    for (int i = 0; i < kLanes; ++i) {
      even.v[i] = bf16_to_f32(p[2 * i]);
      odd.v[i] = bf16_to_f32(p[2 * i + 1]);
    }
  }
  void store(float* p) const { std::memcpy(p, v, sizeof v); }
};
#define LOOPUS_SIMD_LANEWISE(expr)                  \
  VecF r;                                           \
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
