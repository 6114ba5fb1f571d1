// f32 rows -> ggml's block layouts (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K) and f16 / bf16 / f32, bit-identical
// to ggml's reference quantizers (what llama-quantize writes when it is given no importance matrix).
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"

// Bit-identity with ggml needs every float operation rounded on its own, in ggml's order: a multiply
// fused into the following add (an FMA, which GCC forms on x86-64-v3 under its default
// -ffp-contract=fast) changes the searches of the K-quants. GCC: contraction is switched off for the
// functions below, and the public entry points are noinline so that no caller compiled with contraction
// absorbs their bodies. Clang decides contraction per statement in the front end; the pragma in
// LOOPUS_QUANT_EXACT_FP switches it off in each function body.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#define LOOPUS_QUANT_EXACT_FP
#elif defined(__clang__)
#define LOOPUS_QUANT_EXACT_FP _Pragma("clang fp contract(off)")
#else
#define LOOPUS_QUANT_EXACT_FP
#endif
#if defined(__GNUC__)
#define LOOPUS_QUANT_NOINLINE __attribute__((noinline))
#else
#define LOOPUS_QUANT_NOINLINE
#endif

namespace loopus {

/// The types quantize_row() writes: f32, f16, bf16 and the block types of core/quant.hpp.
constexpr bool quantize_supported(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || dtype_is_quantized(t);
}

namespace detail::qz {

/// Round to nearest (ties to even) for |v| < 2^22, as ggml does it: adding 1.5 * 2^23 leaves the rounded
/// integer in the low mantissa bits, offset by 2^22. Larger magnitudes give a wrapped value, exactly as in
/// ggml (its debug builds assert instead).
inline int round_nearest(float v) {
  LOOPUS_QUANT_EXACT_FP
  const float shifted = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

inline float fmax_c(float a, float b) { return a > b ? a : b; }  // C's MAX(a, b): NaN in b is kept
inline uint8_t u8_min63(int v) {  // ggml stores the int in a uint8_t (modulo 256) and then caps at 63
  const auto b = uint8_t(v);
  return b < 63 ? b : uint8_t(63);
}

/// q8_0: d = max|x| / 127, q = round-half-away(x / d).
inline void q8_0(const float* x, int64_t nb, unsigned char* dst) {
  LOOPUS_QUANT_EXACT_FP
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = fmax_c(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    BlockQ8_0 b;
    b.d = f32_to_f16(d);
    for (int j = 0; j < 32; ++j) b.qs[j] = int8_t(std::round(x[j] * id));
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

/// q4_0: the element of largest magnitude (the first, on ties) maps to -8; d = that element / -8;
/// q = min(15, trunc(x / d + 8.5)).
inline void q4_0(const float* x, int64_t nb, unsigned char* dst) {
  LOOPUS_QUANT_EXACT_FP
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.f, vmax = 0.f;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    const float d = vmax / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    BlockQ4_0 b;
    b.d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const int lo = int8_t(int(x[j] * id + 8.5f)), hi = int8_t(int(x[j + 16] * id + 8.5f));
      b.qs[j] = uint8_t((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

/// q4_1: m = min, d = (max - min) / 15, q = min(15, trunc((x - m) / d + 0.5)).
inline void q4_1(const float* x, int64_t nb, unsigned char* dst) {
  LOOPUS_QUANT_EXACT_FP
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float vmin = 3.40282347e38f, vmax = -3.40282347e38f;
    for (int j = 0; j < 32; ++j) {
      if (x[j] < vmin) vmin = x[j];
      if (x[j] > vmax) vmax = x[j];
    }
    const float d = (vmax - vmin) / 15.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    BlockQ4_1 b;
    b.d = f32_to_f16(d);
    b.m = f32_to_f16(vmin);
    for (int j = 0; j < 16; ++j) {
      const int lo = int8_t(int((x[j] - vmin) * id + 0.5f)), hi = int8_t(int((x[j + 16] - vmin) * id + 0.5f));
      b.qs[j] = uint8_t((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

/// Scale and min of one sub-block of n values for x ~ scale * L + min with L in 0..nmax and min <= 0,
/// minimising the weighted squared error: a first guess from the range, then nstep + 1 trial scales
/// (nmax + rmin + k * rdelta) / range, each refit by weighted least squares for scale and min (min forced
/// to 0 when the fit makes it positive). Writes L; returns the scale and stores -min in *neg_min.
/// (ggml's make_qkx2_quants, squared-error variant.)
inline float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* trial,
                           float rmin, float rdelta, int nstep) {
  LOOPUS_QUANT_EXACT_FP
  float lo = x[0], hi = x[0];
  float sw = w[0];
  float swx = sw * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sw += w[i];
    swx += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -lo;
    return 0.f;
  }
  float inv = float(nmax) / (hi - lo);
  float scale = 1 / inv;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    const int l = round_nearest(inv * (x[i] - lo));
    L[i] = uint8_t(l < 0 ? 0 : l > nmax ? nmax : l);
    const float diff = scale * float(L[i]) + lo - x[i];
    best += w[i] * (diff * diff);
  }
  for (int k = 0; k <= nstep; ++k) {
    inv = (rmin + rdelta * float(k) + float(nmax)) / (hi - lo);
    float sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      int l = round_nearest(inv * (x[i] - lo));
      l = l < 0 ? 0 : l > nmax ? nmax : l;
      trial[i] = uint8_t(l);
      const float wl = w[i] * float(l);
      sl += wl;
      sl2 += wl * float(l);
      sxl += wl * x[i];
    }
    const float det = sw * sl2 - sl * sl;
    if (det > 0) {
      float s = (sw * sxl - swx * sl) / det;
      float m = (sl2 * swx - sl * sxl) / det;
      if (m > 0) {
        m = 0;
        s = sxl / sl2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = s * float(trial[i]) + m - x[i];
        err += w[i] * (diff * diff);
      }
      if (err < best) {
        for (int i = 0; i < n; ++i) L[i] = trial[i];
        best = err;
        scale = s;
        lo = m;
      }
    }
  }
  *neg_min = -lo;
  return scale;
}

/// The shared first half of q4_K and q5_K: per 32-value sub-block a scale and min (fit_scale_min with
/// weights rms(x) + |x|), both quantized to 6 bits against the largest of each (super-block d and dmin
/// in f16), then every value re-rounded against its sub-block's quantized scale and min. Writes d, dmin,
/// the 12 packed scale bytes and L (0..nmax) for 256 values.
inline void kquant_scales(const float* x, int nmax, float rmin, int nstep, uint16_t* d_out, uint16_t* dmin_out,
                          uint8_t* packed, uint8_t* L) {
  LOOPUS_QUANT_EXACT_FP
  float scales[8], mins[8], w[32];
  uint8_t trial[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sx2 = 0;
    for (int l = 0; l < 32; ++l) sx2 += xs[l] * xs[l];
    const float rms = std::sqrt(sx2 / 32);
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    scales[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], trial, rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  // Sub-blocks 0-3: 6-bit scale in bytes 0-3, min in bytes 4-7. Sub-blocks 4-7: low nibbles of scale
  // and min in bytes 8-11, the top two bits of each in the free top bits of bytes 0-3 / 4-7.
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = u8_min63(round_nearest(inv_scale * scales[j]));
    const uint8_t lm = u8_min63(round_nearest(inv_min * mins[j]));
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = uint8_t((ls & 0xf) | (lm & 0xf) << 4);
      packed[j - 4] = uint8_t(packed[j - 4] | (ls >> 4) << 6);
      packed[j] = uint8_t(packed[j] | (lm >> 4) << 6);
    }
  }
  *d_out = f32_to_f16(max_scale / 63.f);
  *dmin_out = f32_to_f16(max_min / 63.f);
  const float d = f16_to_f32(*d_out), dmin = f16_to_f32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, mn;
    q4k_scale_min(j, packed, &sc, &mn);
    const float ds = d * float(sc);
    if (ds == 0.f) continue;  // the sub-block keeps the levels of its fit
    const float dm = dmin * float(mn);
    for (int i = 0; i < 32; ++i) {
      const int l = round_nearest((x[32 * j + i] + dm) / ds);
      L[32 * j + i] = uint8_t(l < 0 ? 0 : l > nmax ? nmax : l);
    }
  }
}

/// q4_K: kquant_scales with 4-bit levels; qs byte l of 32-byte group g holds sub-block 2g (low nibble)
/// and 2g+1 (high nibble) at position l.
inline void q4_K(const float* x, int64_t nb, unsigned char* dst) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ4_K b;
    std::memset(&b, 0, sizeof b);
    uint8_t L[256];
    kquant_scales(x, 15, -1.f, 20, &b.d, &b.dmin, b.scales, L);
    for (int g = 0; g < 4; ++g)
      for (int l = 0; l < 32; ++l) b.qs[32 * g + l] = uint8_t(L[64 * g + l] | L[64 * g + 32 + l] << 4);
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

/// q5_K: kquant_scales with 5-bit levels; the low nibbles as in q4_K, the fifth bit of sub-block s at
/// bit s of qh[l].
inline void q5_K(const float* x, int64_t nb, unsigned char* dst) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ5_K b;
    std::memset(&b, 0, sizeof b);
    uint8_t L[256];
    kquant_scales(x, 31, -0.5f, 15, &b.d, &b.dmin, b.scales, L);
    for (int g = 0; g < 4; ++g)
      for (int l = 0; l < 32; ++l) {
        const uint8_t a = L[64 * g + l], c = L[64 * g + 32 + l];
        b.qs[32 * g + l] = uint8_t((a & 0xf) | (c & 0xf) << 4);
        b.qh[l] = uint8_t(b.qh[l] | (a >> 4) << (2 * g) | (c >> 4) << (2 * g + 1));
      }
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

/// The symmetric fit of one q6_K sub-block (16 values, levels -32..31, weights x^2): the scale that maps
/// the largest magnitude to -32, then 18 nearby trial scales -(32 + 0.1 k) / max (k = -9..9, k != 0),
/// keeping the one whose least-squares refit explains most of the weighted signal. Writes L (0..63) and
/// returns the scale. (ggml's make_qx_quants with rmse_type 1 and no importance weights.)
inline float fit_symmetric16(const float* x, int8_t* L) {
  LOOPUS_QUANT_EXACT_FP
  constexpr int n = 16, nmax = 32;
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      vmax = x[i];
    }
  }
  if (amax < 1e-15f) {  // an all-zero sub-block
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const auto level = [](float v) {
    const int l = round_nearest(v);
    return l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
  };
  float inv = float(-nmax) / vmax;
  float sxl = 0, sl2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(inv * x[i]);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sxl += w * x[i] * float(l);
    sl2 += w * float(l) * float(l);
  }
  float scale = sl2 != 0.f ? sxl / sl2 : 0.f;
  float best = scale * sxl;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    inv = -(float(nmax) + 0.1f * float(k)) / vmax;
    sxl = sl2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(inv * x[i]);
      const float w = x[i] * x[i];
      sxl += w * x[i] * float(l);
      sl2 += w * float(l) * float(l);
    }
    if (sl2 > 0 && sxl * sxl > best * sl2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(nmax + level(inv * x[i]));
      scale = sxl / sl2;
      best = scale * sxl;
    }
  }
  return scale;
}

/// q6_K: 16 sub-blocks of 16 values fitted by fit_symmetric16; their scales quantized to int8 against the
/// one of largest magnitude (which maps to -128; d = 1 / that factor in f16); then every value re-rounded
/// to -32..31 against d * its sub-block scale. Layout: see BlockQ6_K.
inline void q6_K(const float* x, int64_t nb, unsigned char* dst) {
  LOOPUS_QUANT_EXACT_FP
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ6_K b;
    std::memset(&b, 0, sizeof b);
    int8_t L[256];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int s = 0; s < 16; ++s) {
      scales[s] = fit_symmetric16(x + 16 * s, L + 16 * s);
      if (std::fabs(scales[s]) > max_abs) {
        max_abs = std::fabs(scales[s]);
        max_scale = scales[s];
      }
    }
    if (max_abs < 1e-15f) {  // an all-zero super-block: every byte 0
      b.d = f32_to_f16(0.f);
      std::memcpy(dst + i * sizeof b, &b, sizeof b);
      continue;
    }
    const float inv = -128.f / max_scale;
    b.d = f32_to_f16(1 / inv);
    for (int s = 0; s < 16; ++s) {
      const int v = round_nearest(inv * scales[s]);
      b.scales[s] = int8_t(v < 127 ? v : 127);
    }
    const float d = f16_to_f32(b.d);
    for (int s = 0; s < 16; ++s) {
      const float ds = d * float(b.scales[s]);
      if (ds == 0.f) continue;  // the sub-block keeps the levels of its fit
      for (int k = 0; k < 16; ++k) {
        int l = round_nearest(x[16 * s + k] / ds);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        L[16 * s + k] = int8_t(l + 32);
      }
    }
    // Each half of 128 values: ql byte l holds positions l and l+64 (low, high nibble), byte l+32
    // positions l+32 and l+96; qh byte l the top two bits of positions l, l+32, l+64, l+96.
    for (int h = 0; h < 2; ++h) {
      const int8_t* q = L + 128 * h;
      uint8_t* ql = b.ql + 64 * h;
      uint8_t* qh = b.qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = uint8_t((q[l] & 0xf) | (q[l + 64] & 0xf) << 4);
        ql[l + 32] = uint8_t((q[l + 32] & 0xf) | (q[l + 96] & 0xf) << 4);
        qh[l] = uint8_t((q[l] >> 4) | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6);
      }
    }
    std::memcpy(dst + i * sizeof b, &b, sizeof b);
  }
}

}  // namespace detail::qz

/// Writes n values of x as dtype t at dst (dtype_row_bytes(t, n) bytes, any alignment): f32 copied,
/// f16 / bf16 rounded to nearest even, block types as ggml's reference quantizers write them, bit for
/// bit (quantize_row_q8_0_ref, _q4_0_ref, _q4_1_ref, _q4_K_ref, _q5_K_ref, _q6_K_ref: llama-quantize
/// without an importance matrix). Blocks are independent, so a matrix is quantized row by row or as one
/// run of rows * cols values alike. Throws UsageError when n is not a whole number of t's blocks, or t is
/// not a storage type (quantize_supported).
LOOPUS_QUANT_NOINLINE inline void quantize_row(DType t, const float* x, int64_t n, void* dst) {
  if (!quantize_supported(t))
    throw UsageError("quantize_row: cannot write " + std::string(dtype_name(t)) +
                     " (f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q5_K, q6_K)");
  if (n < 0 || n % dtype_block_size(t) != 0)
    throw UsageError("quantize_row: " + std::to_string(n) + " values are not a whole number of " +
                     std::to_string(dtype_block_size(t)) + "-value " + std::string(dtype_name(t)) + " blocks");
  auto* o = static_cast<unsigned char*>(dst);
  const int64_t nb = n / dtype_block_size(t);
  switch (t) {
    case DType::kF32:
      if (n) std::memcpy(o, x, size_t(n) * 4);
      return;
    case DType::kF16:
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == DType::kF16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      return;
    case DType::kQ8_0: detail::qz::q8_0(x, nb, o); return;
    case DType::kQ4_0: detail::qz::q4_0(x, nb, o); return;
    case DType::kQ4_1: detail::qz::q4_1(x, nb, o); return;
    case DType::kQ4_K: detail::qz::q4_K(x, nb, o); return;
    case DType::kQ5_K: detail::qz::q5_K(x, nb, o); return;
    case DType::kQ6_K: detail::qz::q6_K(x, nb, o); return;
    default: break;
  }
  throw UsageError("quantize_row: unsupported dtype " + std::string(dtype_name(t)));
}

}  // namespace loopus

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#undef LOOPUS_QUANT_EXACT_FP
#undef LOOPUS_QUANT_NOINLINE
