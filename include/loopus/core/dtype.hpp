// Element types of stored weights, and scalar conversions between them.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "loopus/config.hpp"
#include "loopus/core/error.hpp"

namespace loopus {

/// Storage type of a tensor. Activations are always f32; f16/bf16 weights are widened inside the
/// kernels; block-quantized weights (ggml's q8_0, q4_0, q4_1, q4_K, q5_K, q6_K layouts, see
/// io/quant.hpp) stay quantized and are multiplied by integer kernels (ops/cpu/isa/quant_body.hpp).
enum class DType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1, kQ4_K, kQ6_K, kI32, kF64, kQ5_K };

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
    case DType::kQ4_1: return "q4_1";
    case DType::kQ4_K: return "q4_K";
    case DType::kQ5_K: return "q5_K";
    case DType::kQ6_K: return "q6_K";
    case DType::kI32: return "i32";
    case DType::kF64: return "f64";
  }
  return "?";
}

/// Bytes per element for the plain (non-block) types; 0 for block-quantized.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: return 2;
    case DType::kF64: return 8;
    default: return 0;
  }
}

/// True for the block-quantized types.
constexpr bool dtype_is_quantized(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return true;
    default: return false;
  }
}

/// Elements per block: 1 for plain types, 32 for q8_0/q4_0/q4_1, 256 for the K-quants.
constexpr int64_t dtype_block_size(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: return 32;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return 256;
    default: return 1;
  }
}

/// Bytes per block (the element size for plain types); io/quant.hpp checks these against its
/// block structs.
constexpr size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::kQ8_0: return 34;
    case DType::kQ4_0: return 18;
    case DType::kQ4_1: return 20;
    case DType::kQ4_K: return 144;
    case DType::kQ5_K: return 176;
    case DType::kQ6_K: return 210;
    default: return dtype_size(t);
  }
}

/// Bytes taken by n consecutive elements, without throwing: false when n < 0,
/// n is not a whole number of blocks, or the size overflows uint64.
inline bool dtype_bytes_checked(DType t, int64_t n, uint64_t* out) {
  const int64_t bs = dtype_block_size(t);
  if (n < 0 || n % bs != 0) return false;
  return !__builtin_mul_overflow(uint64_t(n / bs), uint64_t(dtype_block_bytes(t)), out);
}

/// Bytes taken by n consecutive elements (a row, or a whole tensor).
/// Throws Error when n is negative or not a whole number of blocks.
inline size_t dtype_row_bytes(DType t, int64_t n) {
  uint64_t b = 0;
  if (!dtype_bytes_checked(t, n, &b))
    throw UsageError("dtype_row_bytes: " + std::to_string(n) + " elements of " + std::string(dtype_name(t)) +
                     " is not a whole number of " + std::to_string(dtype_block_size(t)) + "-element blocks");
  return size_t(b);
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Round to nearest even, NaN kept quiet (same rule as PyTorch and llama.cpp).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 64);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Round to nearest even with overflow to inf and gradual underflow.
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00u);       // NaN
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00u);      // overflow -> inf
  if (absu < 0x38800000u) {                                       // subnormal or zero
    if (absu < 0x33000000u) return uint16_t(sign);
    const uint32_t e = absu >> 23;
    uint32_t man = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

}  // namespace loopus
