// Lane-wise maths written once against VecF: exp.
// SPDX-License-Identifier: MIT
// No include guard: included into each instruction set's namespace (see ops/cpu/simd.hpp).

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
