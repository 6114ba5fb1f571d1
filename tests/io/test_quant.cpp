// Tests for io/quant.hpp: hand-packed blocks and gguf-py golden dequantizations.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "loopus/io/gguf.hpp"
#include "loopus/io/quant.hpp"
#include "test_util.hpp"

using loopus::DType;
namespace io = loopus::io;

namespace {

uint16_t h(float x) { return loopus::f32_to_f16(x); }

/// Close up to float rounding; the library may contract d*q - m into an FMA.
bool close(float a, float b) { return std::fabs(a - b) <= 1e-6f * (1.f + std::fabs(b)); }

std::string golden_path() { return (loopus::test::source_dir() / "tests/golden/quant_golden.gguf").string(); }

std::vector<float> floats_of(const io::TensorRecord& r) {
  REQUIRE(r.dtype == DType::kF32);
  std::vector<float> v(size_t(r.numel()));
  std::memcpy(v.data(), r.data, r.nbytes);
  return v;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace

TEST_CASE("[loopus] io: dtype block sizes and row bytes") {
  CHECK_EQ(io::dtype_row_bytes(DType::kF32, 10), 40u);
  CHECK_EQ(io::dtype_row_bytes(DType::kF16, 10), 20u);
  CHECK_EQ(io::dtype_row_bytes(DType::kBF16, 3), 6u);
  CHECK_EQ(io::dtype_row_bytes(DType::kF64, 3), 24u);
  CHECK_EQ(io::dtype_row_bytes(DType::kI32, 3), 12u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ8_0, 64), 68u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ4_0, 64), 36u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ4_1, 64), 40u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ4_K, 512), 288u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ6_K, 512), 420u);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ8_0, 0), 0u);
  CHECK_THROWS_AS(io::dtype_row_bytes(DType::kQ8_0, 33), loopus::Error);
  CHECK_THROWS_AS(io::dtype_row_bytes(DType::kQ4_K, 128), loopus::Error);
  CHECK_THROWS_AS(io::dtype_row_bytes(DType::kF32, -1), loopus::Error);
  uint64_t out = 0;
  CHECK_FALSE(io::dtype_bytes_checked(DType::kF64, INT64_MAX, &out));  // overflows uint64
  float dst[32];
  unsigned char src[34] = {};
  CHECK_THROWS_AS(io::dequantize(DType::kQ8_0, src, 31, dst), loopus::Error);
}

TEST_CASE("[loopus] io: dequantize hand-packed q8_0 / q4_0 / q4_1 blocks") {
  std::mt19937 rng(7);
  // Two blocks each, so block strides are exercised too.
  SUBCASE("q8_0") {
    std::vector<unsigned char> raw(2 * 34);
    std::vector<float> want(64);
    for (int b = 0; b < 2; ++b) {
      const float d = b ? 0.125f : -0.0390625f;
      const uint16_t dh = h(d);
      std::memcpy(&raw[b * 34], &dh, 2);
      for (int i = 0; i < 32; ++i) {
        const int8_t q = int8_t(int(rng() % 255) - 127);
        raw[b * 34 + 2 + i] = uint8_t(q);
        want[b * 32 + i] = loopus::f16_to_f32(dh) * float(q);
      }
    }
    std::vector<float> got(64);
    io::dequantize(DType::kQ8_0, raw.data(), 64, got.data());
    for (int i = 0; i < 64; ++i) CHECK_EQ(got[i], want[i]);
  }
  SUBCASE("q4_0 and q4_1") {
    for (DType t : {DType::kQ4_0, DType::kQ4_1}) {
      const int bb = t == DType::kQ4_0 ? 18 : 20;
      std::vector<unsigned char> raw(2 * bb);
      std::vector<float> want(64);
      for (int b = 0; b < 2; ++b) {
        const uint16_t dh = h(b ? 0.5f : 0.0625f), mh = h(b ? -1.5f : 0.25f);
        std::memcpy(&raw[b * bb], &dh, 2);
        if (t == DType::kQ4_1) std::memcpy(&raw[b * bb + 2], &mh, 2);
        unsigned char* qs = &raw[b * bb + bb - 16];
        int q[32];
        for (int i = 0; i < 32; ++i) q[i] = int(rng() % 16);
        // Element i < 16 lives in the low nibble of byte i, element i + 16 in its high nibble.
        for (int i = 0; i < 16; ++i) qs[i] = uint8_t(q[i] | (q[i + 16] << 4));
        for (int i = 0; i < 32; ++i)
          want[b * 32 + i] = t == DType::kQ4_0
                                 ? loopus::f16_to_f32(dh) * float(q[i] - 8)
                                 : loopus::f16_to_f32(dh) * float(q[i]) + loopus::f16_to_f32(mh);
      }
      std::vector<float> got(64);
      io::dequantize(t, raw.data(), 64, got.data());
      for (int i = 0; i < 64; ++i) CHECK(close(got[i], want[i]));
    }
  }
}

TEST_CASE("[loopus] io: dequantize hand-packed q4_K blocks") {
  std::mt19937 rng(11);
  std::vector<unsigned char> raw(2 * 144);
  std::vector<float> want(512);
  for (int b = 0; b < 2; ++b) {
    unsigned char* blk = &raw[b * 144];
    const uint16_t dh = h(b ? 0.0123f : 0.031f), mh = h(b ? 0.007f : 0.02f);
    std::memcpy(blk, &dh, 2);
    std::memcpy(blk + 2, &mh, 2);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = int(rng() % 64);
      mn[j] = int(rng() % 64);
    }
    sc[7] = 63;  // make sure the top bits are exercised
    mn[4] = 63;
    unsigned char* s = blk + 4;
    // Packing (the inverse of what the loader must undo): bytes 0-3 hold the
    // low 6 bits of scales 0-3 and the top 2 bits of scales 4-7; bytes 4-7 the
    // same for mins; bytes 8-11 the low nibbles of scale (low) and min (high) 4-7.
    for (int j = 0; j < 4; ++j) {
      s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
      s[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
      s[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    unsigned char* qs = blk + 16;
    std::memset(qs, 0, 128);
    for (int e = 0; e < 256; ++e) {
      const int q = int(rng() % 16);
      const int g = e / 64, w = e % 64;
      // Each 64 elements use 32 bytes: first 32 in low nibbles, next 32 in high nibbles.
      if (w < 32)
        qs[32 * g + w] |= uint8_t(q);
      else
        qs[32 * g + w - 32] |= uint8_t(q << 4);
      const float d = loopus::f16_to_f32(dh), dmin = loopus::f16_to_f32(mh);
      want[b * 256 + e] = d * float(sc[e / 32]) * float(q) - dmin * float(mn[e / 32]);
    }
  }
  std::vector<float> got(512);
  io::dequantize(DType::kQ4_K, raw.data(), 512, got.data());
  int bad = 0;
  for (int i = 0; i < 512; ++i) bad += !close(got[i], want[i]);
  CHECK_EQ(bad, 0);
}

TEST_CASE("[loopus] io: dequantize hand-packed q5_K blocks") {
  std::mt19937 rng(12);
  std::vector<unsigned char> raw(2 * 176, 0);
  std::vector<float> want(512);
  for (int b = 0; b < 2; ++b) {
    unsigned char* blk = &raw[b * 176];
    const uint16_t dh = h(b ? 0.0093f : 0.021f), mh = h(b ? 0.004f : 0.017f);
    std::memcpy(blk, &dh, 2);
    std::memcpy(blk + 2, &mh, 2);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = int(rng() % 64);
      mn[j] = int(rng() % 64);
    }
    sc[5] = 63;
    mn[6] = 63;
    unsigned char* s = blk + 4;  // scales and mins packed as in q4_K
    for (int j = 0; j < 4; ++j) {
      s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
      s[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
      s[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    unsigned char* qh = blk + 16;
    unsigned char* qs = blk + 48;
    for (int e = 0; e < 256; ++e) {
      const int q = int(rng() % 32);
      // Sub-block j = e / 32 of 32 values: low 4 bits as in q4_K (nibble of qs[32·(j/2) + l]),
      // the fifth bit at bit j of qh[l], l = e % 32.
      const int j = e / 32, l = e % 32;
      qs[32 * (j / 2) + l] |= uint8_t((q & 15) << (j % 2 ? 4 : 0));
      qh[l] |= uint8_t((q >> 4) << j);
      want[b * 256 + e] = loopus::f16_to_f32(dh) * float(sc[j]) * float(q) - loopus::f16_to_f32(mh) * float(mn[j]);
    }
  }
  std::vector<float> got(512);
  io::dequantize(DType::kQ5_K, raw.data(), 512, got.data());
  int bad = 0;
  for (int i = 0; i < 512; ++i) bad += !close(got[i], want[i]);
  CHECK_EQ(bad, 0);
  CHECK_EQ(io::dtype_row_bytes(DType::kQ5_K, 512), 352u);
}

TEST_CASE("[loopus] io: dequantize hand-packed q6_K blocks") {
  std::mt19937 rng(13);
  std::vector<unsigned char> raw(2 * 210, 0);
  std::vector<float> want(512);
  for (int b = 0; b < 2; ++b) {
    unsigned char* blk = &raw[b * 210];
    unsigned char* ql = blk;
    unsigned char* qh = blk + 128;
    auto* scales = reinterpret_cast<int8_t*>(blk + 192);
    const uint16_t dh = h(b ? -0.002f : 0.0047f);
    std::memcpy(blk + 208, &dh, 2);
    for (int j = 0; j < 16; ++j) scales[j] = int8_t(int(rng() % 256) - 128);
    for (int e = 0; e < 256; ++e) {
      const int q = int(rng() % 64);
      // Halves of 128; in a half, run r (0..3) of 32 at lane l: low 4 bits in
      // ql[l] (runs 0, 2: low / high nibble) or ql[l + 32] (runs 1, 3); high 2
      // bits in qh[l] at bit 2r.
      const int half = e / 128, r = (e % 128) / 32, l = e % 32;
      unsigned char& lo = ql[64 * half + l + (r & 1) * 32];
      lo |= uint8_t((q & 15) << (r >= 2 ? 4 : 0));
      qh[32 * half + l] |= uint8_t((q >> 4) << (2 * r));
      want[b * 256 + e] = loopus::f16_to_f32(dh) * float(scales[e / 16]) * float(q - 32);
    }
  }
  std::vector<float> got(512);
  io::dequantize(DType::kQ6_K, raw.data(), 512, got.data());
  int bad = 0;
  for (int i = 0; i < 512; ++i) bad += got[i] != want[i];
  CHECK_EQ(bad, 0);
}

TEST_CASE("[loopus] io: dequantize matches gguf-py golden (tests/golden/quant_golden.gguf)") {
  const auto tf = io::open_gguf(golden_path());
  struct Case {
    const char* name;
    DType dtype;
    bool exact;  // no add/sub after a product, so no FMA contraction differences
  };
  for (const Case c : {Case{"q8_0", DType::kQ8_0, true}, Case{"q4_0", DType::kQ4_0, true},
                       Case{"q4_1", DType::kQ4_1, false}, Case{"q4_K", DType::kQ4_K, false},
                       Case{"q6_K", DType::kQ6_K, true}, Case{"f16", DType::kF16, true},
                       Case{"bf16", DType::kBF16, true}}) {
    const std::string cname = c.name;
    CAPTURE(cname);
    const auto& q = tf.get(c.name);
    const auto ref = floats_of(tf.get(std::string(c.name) + ".ref"));
    CHECK(q.dtype == c.dtype);
    CHECK_EQ(q.shape, tf.get(std::string(c.name) + ".ref").shape);
    CHECK_EQ(q.nbytes, io::dtype_row_bytes(c.dtype, q.numel()));
    const auto got = io::tensor_to_f32(q);
    REQUIRE_EQ(got.size(), ref.size());
    int bad = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      bad += c.exact ? bits(got[i]) != bits(ref[i]) : !close(got[i], ref[i]);
    CHECK_EQ(bad, 0);
  }
}

TEST_CASE("[loopus] io: f32 -> f16 / bf16 rounding matches numpy / gguf-py golden") {
  const auto tf = io::open_gguf(golden_path());
  const auto src = floats_of(tf.get("src"));
  for (const std::string name : {"f16", "bf16"}) {
    CAPTURE(name);
    const auto& r = tf.get(name);
    REQUIRE_EQ(size_t(r.numel()), src.size());
    std::vector<uint16_t> want(src.size());
    std::memcpy(want.data(), r.data, r.nbytes);
    int bad = 0;
    for (size_t i = 0; i < src.size(); ++i) {
      const uint16_t got = name[0] == 'f' ? loopus::f32_to_f16(src[i]) : loopus::f32_to_bf16(src[i]);
      bad += got != want[i];
    }
    CHECK_EQ(bad, 0);
  }
}
