// The scalar oracle of the quantized matmul: activations rounded to 8-bit blocks, integer dot products.
// SPDX-License-Identifier: MIT
//
// A quantized weight row is multiplied the way llama.cpp's CPU backend does it: the activation row is
// first rounded to 8-bit blocks (q8_0 for q8_0/q4_0 weights, q8_1 for q4_1, q8_K for the K-quants),
// then each block pair contributes an integer dot product times the two block scales. The functions
// here are plain loops over the block layouts of core/quant.hpp; the SIMD kernels
// (ops/cpu/isa/quant_body.hpp) must agree with them to f32 rounding (their sums run in another
// order), and tests/ops/test_quant_kernels.cpp checks that for every instruction set the CPU runs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "loopus/core/dtype.hpp"
#include "loopus/core/quant.hpp"

namespace loopus::quant {

/// How the activations are rounded for a weight type.
enum class ActKind : int {
  kQ8_0,  ///< 32-blocks, scale d = max|x| / 127 rounded to f16 (q8_0, q4_0 weights)
  kQ8_1,  ///< kQ8_0 plus s = f16(d · Σq) per block (q4_1 weights: the min term)
  kQ8_K,  ///< 256-blocks, f32 scale from the signed extreme, sums of each 16 (the K-quants)
};

constexpr ActKind act_kind(DType w) {
  switch (w) {
    case DType::kQ4_1: return ActKind::kQ8_1;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return ActKind::kQ8_K;
    default: return ActKind::kQ8_0;
  }
}

/// Index of a quantized weight type in the kernel tables (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K), -1 else.
constexpr int quant_index(DType w) {
  switch (w) {
    case DType::kQ8_0: return 0;
    case DType::kQ4_0: return 1;
    case DType::kQ4_1: return 2;
    case DType::kQ4_K: return 3;
    case DType::kQ5_K: return 4;
    case DType::kQ6_K: return 5;
    default: return -1;
  }
}
inline constexpr DType kQuantTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                                        DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
inline constexpr int kNumQuantTypes = 6;

/// One activation row in 8-bit blocks. qs: the n rounded values; d: one scale per block (32 or
/// 256 values), already widened from f16 where llama.cpp stores f16; for 32-blocks also s (the q8_1
/// min term f16(d·Σq), as f32) and isum (Σq per block); for 256-blocks bsums (Σq per 16 values).
struct ActRow {
  const int8_t* qs = nullptr;
  const float* d = nullptr;
  const float* s = nullptr;
  const int32_t* isum = nullptr;
  const int16_t* bsums = nullptr;
};

/// Writable storage for an ActRow of n values (n a multiple of the block size).
struct ActRowMut {
  int8_t* qs;
  float* d;
  float* s;
  int32_t* isum;
  int16_t* bsums;
  operator ActRow() const { return {qs, d, s, isum, bsums}; }  // NOLINT(google-explicit-constructor)
};

/// Bytes an ActRow of n values takes in act_layout's packing (64-byte aligned parts).
inline size_t act_row_bytes(int64_t n) {
  auto up = [](size_t b) { return (b + 63) / 64 * 64; };
  const size_t nb32 = size_t(n / 32) + 1, nb16 = size_t(n / 16) + 1;
  return up(size_t(n)) + 2 * up(nb32 * 4) + up(nb32 * 4) + up(nb16 * 2);
}
/// The ActRowMut of n values packed at p (act_row_bytes(n) bytes, 64-byte aligned).
inline ActRowMut act_layout(void* p, int64_t n) {
  auto up = [](size_t b) { return (b + 63) / 64 * 64; };
  auto* c = static_cast<unsigned char*>(p);
  const size_t nb32 = size_t(n / 32) + 1;
  ActRowMut a{};
  a.qs = reinterpret_cast<int8_t*>(c);
  c += up(size_t(n));
  a.d = reinterpret_cast<float*>(c);
  c += up(nb32 * 4);
  a.s = reinterpret_cast<float*>(c);
  c += up(nb32 * 4);
  a.isum = reinterpret_cast<int32_t*>(c);
  c += up(nb32 * 4);
  a.bsums = reinterpret_cast<int16_t*>(c);
  return a;
}

/// f16 rounding of a scale, as llama.cpp stores it (round to nearest even), read back as f32.
inline float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

/// Round to nearest, ties to even, for |v| < 2^22 (llama.cpp's nearest_int).
inline int nearest_int(float v) {
  const float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

/// Rounds x[0, n) to 8-bit blocks of `kind` (n a multiple of the block size). The 32-blocks follow
/// llama.cpp's x86 quantize_row_q8_0 / q8_1: q = round-half-even(x · 127 / max|x|); the 256-blocks
/// its quantize_row_q8_K: q = min(127, nearest_int(x · -127 / m)) with m the value of largest
/// magnitude, d = 1 / (-127 / m).
inline void quantize_act(ActKind kind, const float* x, int64_t n, const ActRowMut& a) {
  if (kind == ActKind::kQ8_K) {
    for (int64_t b = 0; b < n / 256; ++b) {
      const float* xb = x + 256 * b;
      float amax = 0.f, mx = 0.f;
      for (int j = 0; j < 256; ++j) {
        const float ax = std::fabs(xb[j]);
        if (ax > amax) amax = ax, mx = xb[j];
      }
      int8_t* q = a.qs + 256 * b;
      if (amax == 0.f) {
        a.d[b] = 0.f;
        std::fill(q, q + 256, int8_t(0));
        std::fill(a.bsums + 16 * b, a.bsums + 16 * b + 16, int16_t(0));
        continue;
      }
      const float iscale = -127.f / mx;
      for (int j = 0; j < 256; ++j) q[j] = int8_t(std::min(127, nearest_int(iscale * xb[j])));
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += q[16 * g + j];
        a.bsums[16 * b + g] = int16_t(s);
      }
      a.d[b] = 1.f / iscale;
    }
    return;
  }
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    int8_t* q = a.qs + 32 * b;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      q[j] = int8_t(std::nearbyint(xb[j] * id));  // the default rounding mode: ties to even
      sum += q[j];
    }
    a.d[b] = f16_round(d);
    a.isum[b] = sum;
    a.s[b] = kind == ActKind::kQ8_1 ? f16_round(d * float(sum)) : 0.f;
  }
}

namespace detail {
template <class B>
inline B block_at(const void* row, int64_t i) {
  B b;
  std::memcpy(&b, static_cast<const unsigned char*>(row) + size_t(i) * sizeof(B), sizeof(B));
  return b;
}
}  // namespace detail

/// Σ_c w[c]·x[c] for one quantized row of n values against its rounded activations, in llama.cpp's
/// arithmetic: per block an exact integer sum times f32(d_w)·d_x (plus the min terms).
inline float vec_dot(DType wt, const void* w, const ActRow& a, int64_t n) {
  using detail::block_at;
  float sum = 0.f;
  switch (wt) {
    case DType::kQ8_0:
      for (int64_t b = 0; b < n / 32; ++b) {
        const auto blk = block_at<BlockQ8_0>(w, b);
        int s = 0;
        for (int j = 0; j < 32; ++j) s += int(blk.qs[j]) * a.qs[32 * b + j];
        sum += f16_to_f32(blk.d) * a.d[b] * float(s);
      }
      return sum;
    case DType::kQ4_0:
      for (int64_t b = 0; b < n / 32; ++b) {
        const auto blk = block_at<BlockQ4_0>(w, b);
        int s = 0;
        for (int j = 0; j < 16; ++j)
          s += (int(blk.qs[j] & 15) - 8) * a.qs[32 * b + j] + (int(blk.qs[j] >> 4) - 8) * a.qs[32 * b + 16 + j];
        sum += f16_to_f32(blk.d) * a.d[b] * float(s);
      }
      return sum;
    case DType::kQ4_1: {
      float mins = 0.f;
      for (int64_t b = 0; b < n / 32; ++b) {
        const auto blk = block_at<BlockQ4_1>(w, b);
        int s = 0;
        for (int j = 0; j < 16; ++j)
          s += int(blk.qs[j] & 15) * a.qs[32 * b + j] + int(blk.qs[j] >> 4) * a.qs[32 * b + 16 + j];
        sum += f16_to_f32(blk.d) * a.d[b] * float(s);
        mins += f16_to_f32(blk.m) * a.s[b];
      }
      return sum + mins;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
      for (int64_t b = 0; b < n / 256; ++b) {
        const int8_t* x = a.qs + 256 * b;
        const int16_t* bs = a.bsums + 16 * b;
        uint16_t dw, dminw;
        const uint8_t* scales;
        const uint8_t* qs;
        const uint8_t* qh = nullptr;
        BlockQ4_K b4;
        BlockQ5_K b5;
        if (wt == DType::kQ4_K) {
          b4 = block_at<BlockQ4_K>(w, b);
          dw = b4.d, dminw = b4.dmin, scales = b4.scales, qs = b4.qs;
        } else {
          b5 = block_at<BlockQ5_K>(w, b);
          dw = b5.d, dminw = b5.dmin, scales = b5.scales, qs = b5.qs, qh = b5.qh;
        }
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
          uint8_t sc, mn;
          ::loopus::detail::q4k_scale_min(j, scales, &sc, &mn);
          const uint8_t* q = qs + 32 * (j / 2);
          int s = 0;
          for (int l = 0; l < 32; ++l) {
            int v = j % 2 == 0 ? (q[l] & 15) : (q[l] >> 4);
            if (qh && (qh[l] >> j) & 1) v += 16;
            s += v * x[32 * j + l];
          }
          sumi += int(sc) * s;
          summ += int(mn) * (bs[2 * j] + bs[2 * j + 1]);
        }
        sum += f16_to_f32(dw) * a.d[b] * float(sumi) - f16_to_f32(dminw) * a.d[b] * float(summ);
      }
      return sum;
    case DType::kQ6_K:
      for (int64_t b = 0; b < n / 256; ++b) {
        const auto blk = block_at<BlockQ6_K>(w, b);
        const int8_t* x = a.qs + 256 * b;
        const int16_t* bs = a.bsums + 16 * b;
        int sumi = 0, summ = 0;
        for (int h = 0; h < 2; ++h) {
          const uint8_t* ql = blk.ql + 64 * h;
          const uint8_t* qh = blk.qh + 32 * h;
          for (int l = 0; l < 32; ++l)
            for (int k = 0; k < 4; ++k) {
              const int nib = k < 2 ? (ql[l + 32 * k] & 15) : (ql[l + 32 * (k - 2)] >> 4);
              const int v = nib | (((qh[l] >> (2 * k)) & 3) << 4);  // 0..63; the value is v - 32
              const int e = 128 * h + 32 * k + l;
              sumi += int(blk.scales[e / 16]) * v * x[e];
            }
        }
        for (int g = 0; g < 16; ++g) summ += int(blk.scales[g]) * bs[g];
        sum += f16_to_f32(blk.d) * a.d[b] * float(sumi - 32 * summ);
      }
      return sum;
    default: return 0.f;
  }
}

/// Rows [r0, r1) of y[T, ldy] = x[T, cols] · Wᵀ for a quantized W, from the activations already
/// rounded (acts[t] for token t). The baseline level's kernel, and the oracle of the SIMD ones.
inline void gemv(DType wt, const void* w, int64_t r0, int64_t r1, int64_t cols, const ActRow* acts, int64_t T, float* y,
                 int64_t ldy) {
  const size_t rb = dtype_row_bytes(wt, cols);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < T; ++t)
      y[t * ldy + r] = vec_dot(wt, static_cast<const unsigned char*>(w) + size_t(r) * rb, acts[t], cols);
}

}  // namespace loopus::quant
