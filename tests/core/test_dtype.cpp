// f16/bf16 <-> f32 conversions of core/dtype.hpp: exhaustive over all 16-bit patterns and every rounding boundary.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "loopus/core/dtype.hpp"

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Value of a 16-bit float with `ebits` exponent bits, from the IEEE definition
/// (independent of the bit tricks under test): subnormals are man·2^(1-bias-mbits).
double decode16(uint16_t h, int ebits) {
  const int mbits = 15 - ebits;
  const int bias = (1 << (ebits - 1)) - 1;
  const int e = (h >> mbits) & ((1 << ebits) - 1);
  const int m = h & ((1 << mbits) - 1);
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == (1 << ebits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(double(m), 1 - bias - mbits);
  return sign * std::ldexp(double(m + (1 << mbits)), e - bias - mbits);
}

bool is_nan16(uint16_t h, int ebits) {
  const int mbits = 15 - ebits;
  return ((h >> mbits) & ((1 << ebits) - 1)) == (1 << ebits) - 1 && (h & ((1 << mbits) - 1)) != 0;
}

/// For every pair of adjacent non-negative 16-bit floats a = h, b = h + 1 (b may
/// be +inf, standing for the next binade), checks round-to-nearest-even at the
/// midpoint and at the floats just either side of it, for both signs.
template <class ToHalf>
void check_rounding_boundaries(ToHalf to_half, int ebits) {
  const uint16_t inf = uint16_t(((1 << ebits) - 1) << (15 - ebits));
  int failures = 0;
  for (uint32_t h = 0; h < inf; ++h) {
    const double a = decode16(uint16_t(h), ebits);
    // The next value up; for the largest finite value, the first value of the next binade.
    const double b = h + 1 == inf ? std::ldexp(1.0, (1 << (ebits - 1))) : decode16(uint16_t(h + 1), ebits);
    const double mid = 0.5 * (a + b);
    const float fm = float(mid);
    if (double(fm) != mid) {  // the midpoint must be exact in f32 for this test to mean anything
      ++failures;
      continue;
    }
    const uint16_t even = (h & 1u) ? uint16_t(h + 1) : uint16_t(h);
    for (uint16_t sign : {uint16_t(0), uint16_t(0x8000)}) {
      const float s = sign ? -1.f : 1.f;
      if (to_half(s * fm) != (even | sign)) ++failures;
      if (to_half(s * std::nextafter(fm, 0.f)) != (h | sign)) ++failures;
      if (to_half(s * std::nextafter(fm, INFINITY)) != ((h + 1) | sign)) ++failures;
    }
    if (failures > 20) break;  // one message is enough
  }
  CHECK_EQ(failures, 0);
}

}  // namespace

TEST_CASE("[loopus] f16_to_f32 is exact for all 65536 halves, f32_to_f16 inverts it") {
  int value_errors = 0, roundtrip_errors = 0, nan_errors = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = loopus::f16_to_f32(h);
    if (is_nan16(h, 5)) {
      // NaN stays NaN with its sign, both ways.
      if (!std::isnan(f) || (bits(f) >> 31) != (h >> 15u)) ++nan_errors;
      const uint16_t back = loopus::f32_to_f16(f);
      if (!is_nan16(back, 5) || (back & 0x8000) != (h & 0x8000)) ++nan_errors;
      continue;
    }
    const double want = decode16(h, 5);
    if (double(f) != want || std::signbit(f) != bool(h & 0x8000)) ++value_errors;
    if (loopus::f32_to_f16(f) != h) ++roundtrip_errors;
#if defined(__F16C__)
    if (bits(_cvtsh_ss(h)) != bits(f)) ++value_errors;  // the hardware agrees too
#endif
  }
  CHECK_EQ(value_errors, 0);
  CHECK_EQ(roundtrip_errors, 0);
  CHECK_EQ(nan_errors, 0);
}

TEST_CASE("[loopus] f32_to_f16 rounds to nearest even at every boundary, incl. subnormals and overflow") {
  check_rounding_boundaries([](float f) { return loopus::f32_to_f16(f); }, 5);
  // Overflow: past the midpoint between 65504 and 65536 everything is inf.
  CHECK_EQ(loopus::f32_to_f16(65519.99f), 0x7bff);
  CHECK_EQ(loopus::f32_to_f16(65520.f), 0x7c00);
  CHECK_EQ(loopus::f32_to_f16(1e30f), 0x7c00);
  CHECK_EQ(loopus::f32_to_f16(-INFINITY), 0xfc00);
  CHECK_EQ(loopus::f32_to_f16(std::numeric_limits<float>::max()), 0x7c00);
  // Underflow: below half the smallest subnormal is (signed) zero; exactly half ties to 0.
  CHECK_EQ(loopus::f32_to_f16(std::ldexp(1.f, -25)), 0x0000);
  CHECK_EQ(loopus::f32_to_f16(std::nextafter(std::ldexp(1.f, -25), 1.f)), 0x0001);
  CHECK_EQ(loopus::f32_to_f16(-1e-30f), 0x8000);
  CHECK_EQ(loopus::f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  CHECK_EQ(loopus::f32_to_f16(-0.f), 0x8000);
  // Quiet NaN out for any NaN in, including f32 NaNs whose payload is only in the low bits.
  CHECK(is_nan16(loopus::f32_to_f16(from_bits(0x7f800001u)), 5));
  CHECK(is_nan16(loopus::f32_to_f16(from_bits(0xffc00000u)), 5));
}

#if defined(__F16C__)
TEST_CASE("[loopus] f32_to_f16 agrees with the F16C instruction on random floats") {
  std::mt19937 rng(1234);
  int mismatches = 0;
  for (int i = 0; i < 1 << 20; ++i) {
    // Random patterns concentrated on the exponents where f16 is not trivially 0 or inf.
    uint32_t u = rng();
    if (i & 1) u = (u & 0x807fffffu) | ((100u + (u >> 23) % 50u) << 23);
    const float f = from_bits(u);
    const uint16_t hw = uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    const uint16_t sw = loopus::f32_to_f16(f);
    if (std::isnan(f) ? !is_nan16(sw, 5) : sw != hw) ++mismatches;
  }
  CHECK_EQ(mismatches, 0);
}
#endif

TEST_CASE("[loopus] bf16 conversions: exact widening, round to nearest even, NaN stays NaN") {
  int value_errors = 0, roundtrip_errors = 0, nan_errors = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = loopus::bf16_to_f32(h);
    if (is_nan16(h, 8)) {
      if (!std::isnan(f) || !is_nan16(loopus::f32_to_bf16(f), 8)) ++nan_errors;
      continue;
    }
    if (double(f) != decode16(h, 8) || std::signbit(f) != bool(h & 0x8000)) ++value_errors;
    if (loopus::f32_to_bf16(f) != h) ++roundtrip_errors;
  }
  CHECK_EQ(value_errors, 0);
  CHECK_EQ(roundtrip_errors, 0);
  CHECK_EQ(nan_errors, 0);
  check_rounding_boundaries([](float f) { return loopus::f32_to_bf16(f); }, 8);
  // A NaN whose payload lies only in the dropped low 16 bits must not become inf.
  CHECK(is_nan16(loopus::f32_to_bf16(from_bits(0x7f800001u)), 8));
  CHECK(is_nan16(loopus::f32_to_bf16(from_bits(0xff800001u)), 8));
  CHECK_EQ(loopus::f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
  CHECK_EQ(loopus::f32_to_bf16(-0.f), 0x8000);
  CHECK_EQ(loopus::f32_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
}
