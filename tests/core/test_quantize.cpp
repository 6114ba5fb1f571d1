// core/quantize.hpp: the block quantizers, bit for bit against gguf-py and llama-quantize goldens.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "loopus/core/quant.hpp"
#include "loopus/core/quantize.hpp"
#include "loopus/io/gguf.hpp"
#include "test_util.hpp"

using loopus::DType;
namespace io = loopus::io;

namespace {

std::string quant_golden(const std::string& file) {
  return (loopus::test::source_dir() / "tests/golden/quant" / file).string();
}

std::vector<float> f32_of(const io::TensorRecord& r) {
  REQUIRE(r.dtype == DType::kF32);
  std::vector<float> v(size_t(r.numel()));
  std::memcpy(v.data(), r.data, r.nbytes);
  return v;
}

std::vector<unsigned char> quantized(DType t, const std::vector<float>& x) {
  std::vector<unsigned char> out(loopus::dtype_row_bytes(t, int64_t(x.size())), 0xA5);
  loopus::quantize_row(t, x.data(), int64_t(x.size()), out.data());
  return out;
}

/// Checks every "<type>.<name>" tensor of a golden file against quantize_row of "src.<name>", row by row
/// (a whole matrix in one call must give the same bytes). Returns how many tensors it compared.
int check_golden(const std::string& path, const std::vector<std::pair<std::string, DType>>& types) {
  const io::TensorFile f = io::open_gguf(path);
  int compared = 0;
  for (const auto& src : f.tensors) {
    if (src.name.rfind("src.", 0) != 0) continue;
    const std::string name = src.name.substr(4);
    REQUIRE(src.shape.size() == 2);
    const int64_t rows = src.shape[0], cols = src.shape[1];
    const std::vector<float> x = f32_of(src);
    for (const auto& [tname, t] : types) {
      const io::TensorRecord& want = f.get(tname + "." + name);
      CAPTURE(want.name);
      REQUIRE(want.dtype == t);
      REQUIRE(want.shape == src.shape);
      const size_t row_bytes = loopus::dtype_row_bytes(t, cols);
      const auto* golden = static_cast<const unsigned char*>(want.data);
      for (int64_t r = 0; r < rows; ++r) {
        CAPTURE(r);
        std::vector<float> row(x.begin() + r * cols, x.begin() + (r + 1) * cols);
        const auto got = quantized(t, row);
        CHECK(std::memcmp(got.data(), golden + r * row_bytes, row_bytes) == 0);
      }
      const auto whole = quantized(t, x);
      REQUIRE(whole.size() == want.nbytes);
      CHECK(std::memcmp(whole.data(), golden, whole.size()) == 0);
      ++compared;
    }
  }
  return compared;
}

}  // namespace

TEST_CASE("[loopus] quantize: q8_0, q4_0, q4_1 bit-identical to gguf-py on edge cases") {
  // tests/reference/make_quant_goldens.py: zeros, constants, negative maxima, f16-overflowing and subnormal
  // scales, rounding ties, odd row counts.
  const int n = check_golden(quant_golden("gguf_py.gguf"),
                             {{"q8_0", DType::kQ8_0}, {"q4_0", DType::kQ4_0}, {"q4_1", DType::kQ4_1}});
  CHECK(n == 8 * 3);
}

TEST_CASE("[loopus] quantize: every type bit-identical to llama-quantize --pure on a random model with edge rows") {
  const int n = check_golden(quant_golden("llama_quantize.gguf"), {{"q4_K", DType::kQ4_K},
                                                                   {"q5_K", DType::kQ5_K},
                                                                   {"q6_K", DType::kQ6_K},
                                                                   {"q8_0", DType::kQ8_0},
                                                                   {"q4_0", DType::kQ4_0},
                                                                   {"q4_1", DType::kQ4_1}});
  CHECK(n == 4 * 6);
}

TEST_CASE("[loopus] quantize: plain types, round trips within each type's step, zero rows, bad sizes") {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(512);
  for (auto& v : x) v = nd(rng);
  x[5] = 1e-30f;
  x[9] = -0.f;

  SUBCASE("f32, f16, bf16 are the scalar conversions of core/dtype.hpp") {
    const auto f = quantized(DType::kF32, x);
    CHECK(std::memcmp(f.data(), x.data(), f.size()) == 0);
    const auto h = quantized(DType::kF16, x), b = quantized(DType::kBF16, x);
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t hv, bv;
      std::memcpy(&hv, h.data() + 2 * i, 2);
      std::memcpy(&bv, b.data() + 2 * i, 2);
      CHECK(hv == loopus::f32_to_f16(x[i]));
      CHECK(bv == loopus::f32_to_bf16(x[i]));
    }
  }

  SUBCASE("dequantize(quantize(x)) stays within each type's rounding step") {
    // Worst-case error relative to the largest |x| of a block: half a step of the type's levels (q4_K /
    // q5_K add the 6-bit quantization of the sub-block scale and min; a coarse bound suffices here).
    // q4_0 maps the largest magnitude to -8, so the other sign clamps at +7 steps: an eighth of it.
    const std::pair<DType, float> tol[] = {{DType::kQ8_0, 0.5f / 127},    {DType::kQ4_0, 0.13f},
                                           {DType::kQ4_1, 0.5f / 15 * 2}, {DType::kQ4_K, 0.25f},
                                           {DType::kQ5_K, 0.12f},         {DType::kQ6_K, 0.05f}};
    for (const auto& [t, rel] : tol) {
      CAPTURE(loopus::dtype_name(t));
      const auto q = quantized(t, x);
      std::vector<float> y(x.size());
      loopus::dequantize(t, q.data(), int64_t(x.size()), y.data());
      const int64_t bs = loopus::dtype_block_size(t);
      for (size_t b0 = 0; b0 < x.size(); b0 += size_t(bs)) {
        float amax = 0, err = 0;
        for (size_t i = b0; i < b0 + size_t(bs); ++i) {
          amax = std::max(amax, std::fabs(x[i]));
          err = std::max(err, std::fabs(x[i] - y[i]));
        }
        CHECK(err <= rel * amax * 1.01f + 1e-6f);
      }
    }
  }

  SUBCASE("an all-zero row dequantizes to zeros in every type") {
    const std::vector<float> z(256, 0.f);
    for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
      const auto q = quantized(t, z);
      std::vector<float> y(z.size(), 1.f);
      loopus::dequantize(t, q.data(), 256, y.data());
      for (float v : y) CHECK(v == 0.f);
    }
  }

  SUBCASE("a block of -0.0: ggml's sign of zero (gguf-py differs for q4_0)") {
    // ggml starts q4_0's signed maximum at +0, so d = +0 / -8 = -0 (f16 0x8000) for any block without a
    // non-zero value; gguf-py takes the maximum from the block itself (-0) and writes +0. llama-quantize,
    // and so loopus, write 0x8000; the levels are 8 either way.
    const std::vector<float> nz(32, -0.f);
    const auto q4 = quantized(DType::kQ4_0, nz);
    CHECK(q4[0] == 0x00);
    CHECK(q4[1] == 0x80);
    for (int i = 2; i < 18; ++i) CHECK(q4[size_t(i)] == 0x88);
    const auto q8 = quantized(DType::kQ8_0, nz);  // d = +0 (from max |x|), levels 0
    for (unsigned char c : q8) CHECK(c == 0);
    const auto q41 = quantized(DType::kQ4_1, nz);  // d = +0, m = -0
    CHECK(q41[0] == 0x00);
    CHECK(q41[1] == 0x00);
    CHECK(q41[2] == 0x00);
    CHECK(q41[3] == 0x80);
  }

  SUBCASE("rows that are not whole blocks, and types it cannot write, are usage errors") {
    std::vector<unsigned char> buf(4096);
    CHECK_THROWS_AS(loopus::quantize_row(DType::kQ8_0, x.data(), 33, buf.data()), loopus::UsageError);
    CHECK_THROWS_AS(loopus::quantize_row(DType::kQ4_K, x.data(), 128, buf.data()), loopus::UsageError);
    CHECK_THROWS_AS(loopus::quantize_row(DType::kI32, x.data(), 4, buf.data()), loopus::UsageError);
    CHECK_THROWS_AS(loopus::quantize_row(DType::kF64, x.data(), 4, buf.data()), loopus::UsageError);
    CHECK_NOTHROW(loopus::quantize_row(DType::kQ4_K, x.data(), 0, buf.data()));
    CHECK_FALSE(loopus::quantize_supported(DType::kI32));
    CHECK(loopus::quantize_supported(DType::kQ5_K));
  }
}
