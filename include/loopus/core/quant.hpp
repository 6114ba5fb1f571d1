// ggml's block-quantized layouts (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K) and their widening to f32.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// Elements per super-block of the K-quants.
inline constexpr int64_t kQK_K = 256;
/// Elements per block of q8_0 / q4_0 / q4_1.
inline constexpr int64_t kQK32 = 32;

/// On-disk blocks, exactly as ggml lays them out (little-endian, no padding).
/// f16 scales are kept as raw bits. Value of element i of a block:
struct BlockQ8_0 {  ///< x = d * qs[i]
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ4_0 {  ///< x[i] = d * ((qs[i] & 15) - 8), x[i+16] = d * ((qs[i] >> 4) - 8)
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_1 {  ///< x[i] = d * (qs[i] & 15) + m, x[i+16] = d * (qs[i] >> 4) + m
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
/// 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min packed into `scales`;
/// x = d * sc * q - dmin * mn.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
/// q4_K plus a fifth bit per element in qh (bit 2g of qh[l] for element l of sub-block 2g, bit
/// 2g+1 for sub-block 2g+1); x = d * sc * q - dmin * mn with q in 0..31.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
/// 16 sub-blocks of 16 with int8 scales; 6-bit quants split into 4 low bits (ql)
/// and 2 high bits (qh); x = d * sc * (q - 32).
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

static_assert(dtype_block_bytes(DType::kQ8_0) == sizeof(BlockQ8_0) &&
              dtype_block_bytes(DType::kQ4_0) == sizeof(BlockQ4_0));
static_assert(dtype_block_bytes(DType::kQ4_1) == sizeof(BlockQ4_1) &&
              dtype_block_bytes(DType::kQ4_K) == sizeof(BlockQ4_K));
static_assert(dtype_block_bytes(DType::kQ5_K) == sizeof(BlockQ5_K) &&
              dtype_block_bytes(DType::kQ6_K) == sizeof(BlockQ6_K));

namespace detail {

/// Unpacks the 6-bit scale and min of sub-block j (0..7) of a q4_K super-block:
/// sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-3 / 4-7; sub-blocks
/// 4-7 combine a nibble of bytes 8-11 with the top 2 bits of bytes 0-3 / 4-7.
inline void q4k_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = uint8_t((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    *mn = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

template <class B>
inline B load_block(const unsigned char* p) {
  B b;
  std::memcpy(&b, p, sizeof(B));  // blocks may sit at any byte offset
  return b;
}

inline void dequant_q8_0(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const auto b = load_block<BlockQ8_0>(src + i * sizeof(BlockQ8_0));
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < 32; ++j) y[j] = d * float(b.qs[j]);
  }
}

inline void dequant_q4_0(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const auto b = load_block<BlockQ4_0>(src + i * sizeof(BlockQ4_0));
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(int(b.qs[j] & 0x0f) - 8);
      y[j + 16] = d * float(int(b.qs[j] >> 4) - 8);
    }
  }
}

inline void dequant_q4_1(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const auto b = load_block<BlockQ4_1>(src + i * sizeof(BlockQ4_1));
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(b.qs[j] & 0x0f) + m;
      y[j + 16] = d * float(b.qs[j] >> 4) + m;
    }
  }
}

inline void dequant_q4_K(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ4_K>(src + i * sizeof(BlockQ4_K));
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    // Each 32-byte group of qs holds two sub-blocks: low nibbles, then high nibbles.
    for (int g = 0; g < 4; ++g, q += 32) {
      uint8_t sc0, m0, sc1, m1;
      q4k_scale_min(2 * g, b.scales, &sc0, &m0);
      q4k_scale_min(2 * g + 1, b.scales, &sc1, &m1);
      const float d0 = d * float(sc0), o0 = dmin * float(m0);
      const float d1 = d * float(sc1), o1 = dmin * float(m1);
      for (int l = 0; l < 32; ++l) *y++ = d0 * float(q[l] & 0x0f) - o0;
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] >> 4) - o1;
    }
  }
}

inline void dequant_q5_K(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ5_K>(src + i * sizeof(BlockQ5_K));
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    for (int g = 0; g < 4; ++g, q += 32) {
      uint8_t sc0, m0, sc1, m1;
      q4k_scale_min(2 * g, b.scales, &sc0, &m0);
      q4k_scale_min(2 * g + 1, b.scales, &sc1, &m1);
      const float d0 = d * float(sc0), o0 = dmin * float(m0);
      const float d1 = d * float(sc1), o1 = dmin * float(m1);
      const uint8_t u0 = uint8_t(1u << (2 * g)), u1 = uint8_t(2u << (2 * g));
      for (int l = 0; l < 32; ++l) *y++ = d0 * float((q[l] & 0x0f) + (b.qh[l] & u0 ? 16 : 0)) - o0;
      for (int l = 0; l < 32; ++l) *y++ = d1 * float((q[l] >> 4) + (b.qh[l] & u1 ? 16 : 0)) - o1;
    }
  }
}

inline void dequant_q6_K(const unsigned char* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ6_K>(src + i * sizeof(BlockQ6_K));
    const float d = f16_to_f32(b.d);
    // Two halves of 128 elements; within a half, four runs of 32 share one ql/qh
    // byte index l and take different nibbles / bit pairs of it.
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = b.ql + 64 * h;
      const uint8_t* qh = b.qh + 32 * h;
      const int8_t* sc = b.scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(sc[is]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

}  // namespace detail

/// Converts n elements of type t at src to f32. For block types n must be a
/// whole number of blocks (throws Error otherwise). src may have any alignment.
inline void dequantize(DType t, const void* src, int64_t n, float* dst) {
  if (n < 0 || n % dtype_block_size(t) != 0)
    throw UsageError("dequantize: " + std::to_string(n) + " elements of " + std::string(dtype_name(t)) +
                     " is not a whole number of " + std::to_string(dtype_block_size(t)) + "-element blocks");
  const auto* s = static_cast<const unsigned char*>(src);
  const int64_t nb = n / dtype_block_size(t);
  switch (t) {
    case DType::kF32:
      if (n) std::memcpy(dst, s, size_t(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, s + 4 * i, 4);
        dst[i] = float(v);
      }
      return;
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, s + 8 * i, 8);
        dst[i] = float(v);
      }
      return;
    case DType::kQ8_0: detail::dequant_q8_0(s, nb, dst); return;
    case DType::kQ4_0: detail::dequant_q4_0(s, nb, dst); return;
    case DType::kQ4_1: detail::dequant_q4_1(s, nb, dst); return;
    case DType::kQ4_K: detail::dequant_q4_K(s, nb, dst); return;
    case DType::kQ5_K: detail::dequant_q5_K(s, nb, dst); return;
    case DType::kQ6_K: detail::dequant_q6_K(s, nb, dst); return;
  }
  throw UnsupportedError("dequantize: unknown dtype id " + std::to_string(int(t)));
}

/// Rows [r0, r0 + nr) of W widened to f32 into out[nr, W.cols] (any dtype).
inline void dequantize_rows(const Weight& W, int64_t r0, int64_t nr, float* out) {
  LOOPUS_ASSERT(r0 >= 0 && nr >= 0 && r0 + nr <= W.rows);
  dequantize(W.dtype, static_cast<const unsigned char*>(W.data) + size_t(r0) * W.row_bytes(), nr * W.cols, out);
}

}  // namespace loopus
