// The quantized matmul: the scalar oracle (ops/reference/quant.hpp) against the exact product, and the
// SIMD kernels of every instruction-set level this CPU runs against the oracle; levels the CPU lacks
// report themselves as skipped, never as passed.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/ops/cpu/isa.hpp"
#include "loopus/ops/cpu/isa_kernels.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/ops/reference/quant.hpp"
#include "test_util.hpp"

namespace quant_kernels_test {

using loopus::DType;
namespace quant = loopus::quant;
namespace cpu = loopus::cpu;

/// Offset of the f16 scale(s) in a block: {d, dmin or m (-1: none)}.
std::pair<int, int> scale_offsets(DType t) {
  switch (t) {
    case DType::kQ6_K: return {208, -1};
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ5_K: return {0, 2};
    default: return {0, -1};
  }
}

/// A random quantized [rows, cols] matrix: random quant bytes with sane f16 scales, plus edge blocks:
/// block 0 all zero bytes, block 1 with the largest f16 scale, row 1 (when rows > 2) quants all at
/// their maximum (all bits set) under a large scale.
std::vector<unsigned char> random_blocks(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t rb = loopus::dtype_row_bytes(t, cols), bb = loopus::dtype_block_bytes(t);
  std::vector<unsigned char> w(size_t(rows) * rb);
  for (auto& b : w) b = uint8_t(rng());
  const auto [od, om] = scale_offsets(t);
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (size_t off = 0, k = 0; off < w.size(); off += bb, ++k) {
    auto put = [&](int at, float v) {
      const uint16_t h = loopus::f32_to_f16(v);
      std::memcpy(&w[off + size_t(at)], &h, 2);
    };
    put(od, u(rng));
    if (om >= 0) put(om, t == DType::kQ4_1 ? -u(rng) * 8 : u(rng));
    if (k == 0) std::fill(w.begin() + std::ptrdiff_t(off), w.begin() + std::ptrdiff_t(off + bb), 0);
    if (k == 1) put(od, 65504.f);
  }
  if (rows > 2)
    for (size_t off = rb; off < 2 * rb; off += bb) {
      std::fill(w.begin() + std::ptrdiff_t(off), w.begin() + std::ptrdiff_t(off + bb), 0xff);
      const uint16_t h = loopus::f32_to_f16(512.f);
      std::memcpy(&w[off + size_t(od)], &h, 2);
      if (om >= 0) std::memcpy(&w[off + size_t(om)], &h, 2);
    }
  return w;
}

using loopus::test::randn;

/// T activation rows rounded for weight type t, in one buffer.
struct Acts {
  std::vector<unsigned char> buf;
  std::vector<quant::ActRow> rows;
  Acts(DType t, const std::vector<float>& x, int64_t T, int64_t n) {
    const size_t rb = quant::act_row_bytes(n);
    buf.resize(size_t(T) * rb + 64);
    auto* base = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
    for (int64_t i = 0; i < T; ++i) {
      const quant::ActRowMut a = quant::act_layout(base + size_t(i) * rb, n);
      quant::quantize_act(quant::act_kind(t), x.data() + i * n, n, a);
      rows.push_back(a);
    }
  }
};

/// Σ_c |w[r, c]·x[t, c]| per output (the scale the f32 sums run at), w dequantized.
std::vector<double> magnitudes(DType t, const std::vector<unsigned char>& wb, int64_t rows, int64_t cols,
                               const std::vector<float>& x, int64_t T) {
  std::vector<double> mag(size_t(T * rows));
  std::vector<float> wf(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    loopus::dequantize_rows(loopus::Weight{wb.data(), t, rows, cols}, r, 1, wf.data());
    for (int64_t i = 0; i < T; ++i) {
      double m = 0;
      for (int64_t c = 0; c < cols; ++c) m += std::abs(double(wf[size_t(c)]) * x[size_t(i * cols + c)]);
      mag[size_t(i * rows + r)] = m + 1e-30;
    }
  }
  return mag;
}

const int64_t kRows[] = {1, 3, 37};
const int64_t kCols32[] = {32, 96, 576};
const int64_t kCols256[] = {256, 768};

template <class F>
void for_shapes(DType t, F f) {
  const bool k = loopus::dtype_block_size(t) == 256;
  for (int64_t r : kRows)
    for (int64_t c : k ? std::vector<int64_t>(std::begin(kCols256), std::end(kCols256))
                       : std::vector<int64_t>(std::begin(kCols32), std::end(kCols32)))
      f(r, c);
}

TEST_CASE("quant: activation rounding follows llama.cpp's q8_0 / q8_1 / q8_K rules") {
  SUBCASE("32-blocks: q = round-half-even(x·127/max|x|), d = f16(max|x|/127), s = f16(d·Σq)") {
    std::vector<float> x(64);
    for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j - 16) * 0.25f;  // max |x| = 4 at j = 0
    x[5] = 0.5f * 4.f / 127.f * 3.f;                                    // exactly 1.5 steps: ties to 2
    std::fill(x.begin() + 32, x.end(), 0.f);                            // an all-zero block
    Acts a(DType::kQ4_1, x, 1, 64);
    const quant::ActRow& r = a.rows[0];
    CHECK(r.d[0] == quant::f16_round(4.f / 127.f));
    CHECK(r.qs[0] == -127);
    CHECK(r.qs[5] == 2);
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      CHECK(std::abs(int(r.qs[j])) <= 127);
      CHECK(std::abs(float(r.qs[j]) - x[size_t(j)] * 127.f / 4.f) <= 0.5f + 1e-4f);
      sum += r.qs[j];
    }
    CHECK(r.isum[0] == sum);
    CHECK(r.s[0] == quant::f16_round(4.f / 127.f * float(sum)));
    CHECK(r.d[1] == 0.f);
    CHECK(r.isum[1] == 0);
    for (int j = 32; j < 64; ++j) CHECK(r.qs[j] == 0);
  }
  SUBCASE("256-blocks: scale from the signed extreme, 16-value sums") {
    std::vector<float> x = randn(512, 7);
    x[100] = -9.f;                             // the extreme of block 0 is negative
    std::fill(x.begin() + 256, x.end(), 0.f);  // block 1 all zero
    Acts a(DType::kQ4_K, x, 1, 512);
    const quant::ActRow& r = a.rows[0];
    CHECK(r.d[0] == doctest::Approx(9.f / 127.f).epsilon(1e-6));
    CHECK(r.qs[100] == -127);
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += r.qs[16 * g + j];
      CHECK(r.bsums[g] == s);
    }
    for (int j = 0; j < 256; ++j) CHECK(std::abs(float(r.qs[j]) * r.d[0] - x[size_t(j)]) <= 0.5f * r.d[0] + 1e-5f);
    CHECK(r.d[1] == 0.f);
    for (int g = 16; g < 32; ++g) CHECK(r.bsums[g] == 0);
  }
  CHECK(quant::nearest_int(2.5f) == 2);
  CHECK(quant::nearest_int(3.5f) == 4);
  CHECK(quant::nearest_int(-2.5f) == -2);
}

TEST_CASE("quant: the scalar oracle equals the exact product up to the activation rounding") {
  // |x - d·q| ≤ d/2 from rounding, plus |q|·d·2^-11 ≤ 0.0625·d from the f16 scale: 0.57·d per value.
  for (DType t : quant::kQuantTypes)
    for_shapes(t, [&](int64_t rows, int64_t cols) {
      CAPTURE(loopus::dtype_name(t));
      CAPTURE(rows);
      CAPTURE(cols);
      const auto wb = random_blocks(t, rows, cols, uint32_t(rows * 131 + cols));
      const loopus::Weight W{wb.data(), t, rows, cols};
      const auto x = randn(size_t(cols), uint32_t(cols));
      Acts a(t, x, 1, cols);
      std::vector<float> wf(static_cast<size_t>(cols));
      const int64_t bs = quant::act_kind(t) == quant::ActKind::kQ8_K ? 256 : 32;
      for (int64_t r = 0; r < rows; ++r) {
        loopus::dequantize_rows(W, r, 1, wf.data());
        double exact = 0, bound = 0, mag = 0;
        for (int64_t c = 0; c < cols; ++c) {
          exact += double(wf[size_t(c)]) * x[size_t(c)];
          mag += std::abs(double(wf[size_t(c)]) * x[size_t(c)]);
          float amax = 0.f;
          for (int64_t k = c / bs * bs; k < c / bs * bs + bs; ++k) amax = std::max(amax, std::fabs(x[size_t(k)]));
          bound += std::abs(double(wf[size_t(c)])) * 0.57 * amax / 127.0;
        }
        const float got = quant::vec_dot(t, static_cast<const unsigned char*>(W.data) + size_t(r) * W.row_bytes(),
                                         a.rows[0], cols);
        CHECK(std::abs(double(got) - exact) <= bound + 1e-5 * mag + 1e-30);
      }
    });
}

/// Every quantized GEMV of `isa` against the oracle (f32 summation order is all that may differ).
void check_quant_level(cpu::Isa isa) {
  if (!cpu::isa_supported(isa)) {
    loopus::test::report_skip(std::string("quantized kernels at level ") + cpu::isa_name(isa) +
                              " not run: this CPU runs up to " + cpu::isa_name(cpu::detect_isa()));
    return;
  }
  MESSAGE("quantized kernels exercised at level " << std::string(cpu::isa_name(isa)));
  const cpu::MatKernels& k = cpu::mat_kernels(isa);
  for (DType t : quant::kQuantTypes)
    for_shapes(t, [&](int64_t rows, int64_t cols) {
      for (int64_t T : {1, 2, 5}) {
        CAPTURE(loopus::dtype_name(t));
        CAPTURE(rows);
        CAPTURE(cols);
        CAPTURE(T);
        const auto wb = random_blocks(t, rows, cols, uint32_t(rows * 7 + cols + T));
        const auto x = randn(size_t(T * cols), uint32_t(T + cols), 2.f);
        Acts a(t, x, T, cols);
        std::vector<float> want(size_t(T * rows)), got(size_t(T * rows), -1.f);
        quant::gemv(t, wb.data(), 0, rows, cols, a.rows.data(), T, want.data(), rows);
        // Rounded activations differ from x by under 1%: 1.01·Σ|w·x| bounds the sums' magnitude.
        std::vector<double> mag = magnitudes(t, wb, rows, cols, x, T);
        for (auto& m : mag) m *= 1.01;
        // A range of rows that starts past 0, as the threads split them.
        const int64_t r0 = rows > 2 ? 1 : 0;
        k.gemv_q[quant::quant_index(t)](wb.data(), r0, rows, cols, a.rows.data(), T, got.data(), rows);
        for (int64_t i = 0; i < T; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            const size_t j = size_t(i * rows + r);
            if (r < r0) {
              CHECK(got[j] == -1.f);  // rows outside the range stay untouched
              continue;
            }
            CHECK(std::isfinite(got[j]));
            CHECK(std::abs(double(got[j]) - want[j]) <= 4e-6 * mag[j]);
          }
      }
    });
}

/// The level's quantize_act writes the oracle's bytes: values, scales, sums, for every kind, on
/// random rows and on edge blocks (all zero; values on a grid; exact ties at .5, which round to
/// even; the largest magnitude reached by +m and -m, either first; huge values beside tiny ones).
void check_quantize_act_level(cpu::Isa isa) {
  if (!cpu::isa_supported(isa)) {
    loopus::test::report_skip(std::string("quantize_act at level ") + cpu::isa_name(isa) +
                              " not run: this CPU runs up to " + cpu::isa_name(cpu::detect_isa()));
    return;
  }
  const cpu::MatKernels& k = cpu::mat_kernels(isa);
  const int64_t n = 1024;
  std::vector<std::vector<float>> rows;
  rows.push_back(randn(size_t(n), 5, 3.f));
  rows.push_back(randn(size_t(n), 6, 1e-3f));
  std::vector<float> edge(size_t(n), 0.f);                                      // block 0 (and the first 256) all zero
  for (int64_t i = 256; i < 512; ++i) edge[size_t(i)] = float(i % 9) - 4.5f;    // a grid of halves
  for (int64_t i = 512; i < 544; ++i) edge[size_t(i)] = float(i - 528) + 0.5f;  // amax 15.5
  edge[600] = 127.f;  // amax 127 (and the 256-block's): scale 1, so x = k + .5 is an exact tie
  for (int64_t i = 601; i < 632; ++i) edge[size_t(i)] = float(i - 616) + 0.5f;
  edge[298] = -20.f;  // the 256-block's largest magnitude: -m before +m, in one 8-value vector
  edge[301] = 20.f;
  edge[800] = 9.f;  // +m before -m in one 32-block
  edge[801] = -9.f;
  for (int64_t i = 802; i < 1024; ++i) edge[size_t(i)] = 1e-30f * float(i);  // tiny values beside
  edge[897] = 1e30f;  // huge ones: the 256-block's largest magnitude, +m before -m
  edge[900] = -1e30f;
  rows.push_back(edge);
  for (quant::ActKind kind : {quant::ActKind::kQ8_0, quant::ActKind::kQ8_1, quant::ActKind::kQ8_K})
    for (size_t ri = 0; ri < rows.size(); ++ri) {
      CAPTURE(cpu::isa_name(isa));
      CAPTURE(int(kind));
      CAPTURE(ri);
      const size_t rb = quant::act_row_bytes(n);
      std::vector<unsigned char> want_buf(rb + 64, 0xAB), got_buf(rb + 64, 0xAB);
      auto aligned = [](std::vector<unsigned char>& b) {
        return b.data() + (64 - reinterpret_cast<uintptr_t>(b.data()) % 64) % 64;
      };
      const quant::ActRowMut want = quant::act_layout(aligned(want_buf), n),
                             got = quant::act_layout(aligned(got_buf), n);
      quant::quantize_act(kind, rows[ri].data(), n, want);
      k.quantize_act(kind, rows[ri].data(), n, got);
      const bool k256 = kind == quant::ActKind::kQ8_K;
      const int64_t nb = k256 ? n / 256 : n / 32;
      CHECK(std::memcmp(want.qs, got.qs, size_t(n)) == 0);
      CHECK(std::memcmp(want.d, got.d, size_t(nb) * 4) == 0);
      if (k256) {
        CHECK(std::memcmp(want.bsums, got.bsums, size_t(n / 16) * 2) == 0);
      } else {
        CHECK(std::memcmp(want.isum, got.isum, size_t(nb) * 4) == 0);
        CHECK(std::memcmp(want.s, got.s, size_t(nb) * 4) == 0);
      }
    }
}

TEST_CASE("quant: each level's quantize_act writes the oracle's bytes") {
  for (cpu::Isa isa : cpu::kAllIsas) check_quantize_act_level(isa);
}

TEST_CASE("quant kernels: level avx2") { check_quant_level(cpu::Isa::kAvx2); }
TEST_CASE("quant kernels: level avx512") { check_quant_level(cpu::Isa::kAvx512); }
TEST_CASE("quant kernels: level avx512bf16 (vpdpbusd)") { check_quant_level(cpu::Isa::kAvx512Bf16); }
TEST_CASE("quant kernels: baseline level is the oracle") { check_quant_level(cpu::Isa::kBaseline); }

TEST_CASE("Ops<Cpu>::matmul on quantized weights: decode and prefill against the oracle, near the exact product") {
  const cpu::Isa saved = cpu::active_isa();
  for (cpu::Isa isa : cpu::kAllIsas) {
    if (!cpu::isa_supported(isa)) continue;
    cpu::set_isa(isa);
    for (DType t : quant::kQuantTypes) {
      const int64_t rows = 67, cols = loopus::dtype_block_size(t) == 256 ? 512 : 320;
      const auto wb = random_blocks(t, rows, cols, 99);
      const loopus::Weight W{wb.data(), t, rows, cols};
      for (int64_t T :
           {int64_t(1), int64_t(3), cpu::Tuning::kQuantGemvMaxT, cpu::Tuning::kQuantGemvMaxT + 1, int64_t(70)}) {
        CAPTURE(cpu::isa_name(isa));
        CAPTURE(loopus::dtype_name(t));
        CAPTURE(T);
        const auto x = randn(size_t(T * cols), uint32_t(T));
        std::vector<float> got(size_t(T * rows)), exact(size_t(T * rows)), want(size_t(T * rows));
        loopus::Ops<loopus::Cpu>::matmul(W, x.data(), T, got.data());
        loopus::Ops<loopus::Reference>::matmul(W, x.data(), T, exact.data());
        // Every T: the products of the rounded activations (the GEMV sums them as integers per
        // block, the prefill GEMM in f32; q4_1's minimum term differs by the f16 rounding of its sum).
        Acts a(t, x, T, cols);
        quant::gemv(t, wb.data(), 0, rows, cols, a.rows.data(), T, want.data(), rows);
        const bool bf16 = loopus::Ops<loopus::Cpu>::rounds_x_to_bf16(W, T);
        const std::vector<double> mag = magnitudes(t, wb, rows, cols, x, T);
        double worst = 0;
        for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(double(got[i]) - want[i]) / mag[i]);
        // bf16 prefill rounds both operands to 8 mantissa bits: 2^-8 of the magnitude at most.
        CHECK(worst <= (bf16 ? 4e-3 : t == DType::kQ4_1 && T > cpu::Tuning::kQuantGemvMaxT ? 1e-3 : 1e-5));
        // Against the exact product the difference is the activation rounding, well under 1%.
        double off = 0;
        for (size_t i = 0; i < got.size(); ++i) off = std::max(off, std::abs(double(got[i]) - exact[i]) / mag[i]);
        CHECK(off <= 1e-2);
      }
    }
  }
  cpu::set_isa(saved);
}

TEST_CASE("Ops<Cpu>::matmul_shared: each product equals its own matmul (decode together, prefill and mixes apart)") {
  using loopus::Cpu;
  using loopus::Ops;
  using loopus::SharedProduct;
  const int64_t cols = 512;
  // Weights of mixed kinds: quantized with one activation kind (q8_0 / q4_0 share q8_0 rounding),
  // quantized with another (q4_K: q8_K), f32 and bf16; row counts not multiples of the 4-row tile.
  const auto q8 = random_blocks(DType::kQ8_0, 37, cols, 1), q40 = random_blocks(DType::kQ4_0, 6, cols, 2),
             q4k = random_blocks(DType::kQ4_K, 9, cols, 3);
  const auto f32 = randn(size_t(41 * cols), 4, 0.05f);
  std::vector<uint16_t> bf(size_t(13 * cols));
  for (size_t i = 0; i < bf.size(); ++i) bf[i] = loopus::f32_to_bf16(f32[i % f32.size()]);
  const loopus::Weight Wq8{q8.data(), DType::kQ8_0, 37, cols}, Wq40{q40.data(), DType::kQ4_0, 6, cols},
      Wq4k{q4k.data(), DType::kQ4_K, 9, cols}, Wf{f32.data(), DType::kF32, 41, cols},
      Wbf{bf.data(), DType::kBF16, 13, cols};
  const std::vector<std::vector<const loopus::Weight*>> sets = {
      {&Wq8, &Wq40},             // one parallel region, one rounding
      {&Wq8, &Wq40, &Wq8},       // three (q, k, v)
      {&Wf, &Wbf, &Wf},          // float GEMVs together
      {&Wq8, &Wf, &Wq40, &Wbf},  // float and quantized together
      {&Wq8, &Wq4k},             // two rounding kinds: one matmul each
      {&Wq4k},                   // a single product
  };
  const cpu::Isa saved = cpu::active_isa();
  for (cpu::Isa isa : cpu::kAllIsas) {
    if (!cpu::isa_supported(isa)) continue;
    cpu::set_isa(isa);
    for (size_t si = 0; si < sets.size(); ++si)
      for (int64_t T : {int64_t(1), int64_t(5), cpu::Tuning::kQuantGemvMaxT + 3}) {
        CAPTURE(cpu::isa_name(isa));
        CAPTURE(si);
        CAPTURE(T);
        const auto x = randn(size_t(T * cols), uint32_t(10 + T));
        const auto& ws = sets[si];
        std::vector<std::vector<float>> got(ws.size()), want(ws.size());
        std::vector<SharedProduct<Cpu>> ps;
        for (size_t i = 0; i < ws.size(); ++i) {
          got[i].assign(size_t(T * ws[i]->rows), -1.f);
          want[i].assign(size_t(T * ws[i]->rows), 0.f);
          Ops<Cpu>::matmul(*ws[i], x.data(), T, want[i].data());
          ps.push_back({ws[i], Ops<Cpu>::borrow_host(got[i].data(), int64_t(got[i].size()))});
        }
        auto xs = x;
        Ops<Cpu>::matmul_shared(Ops<Cpu>::borrow_host(xs.data(), int64_t(xs.size())), T, ps);
        for (size_t i = 0; i < ws.size(); ++i) {
          CAPTURE(i);
          // Quantized rows: the same kernel on the same row, bit-equal. Float rows: the same kernel,
          // up to where the 4-row tiles of a thread's range end (f32 rounding).
          double worst = 0;
          for (size_t k = 0; k < got[i].size(); ++k)
            worst = std::max(worst, std::abs(double(got[i][k]) - want[i][k]) / (std::abs(double(want[i][k])) + 1e-3));
          if (ws[i]->quantized()) {
            CHECK(got[i] == want[i]);
          } else {
            CHECK(worst <= 1e-5);
          }
        }
      }
  }
  cpu::set_isa(saved);
}

}  // namespace quant_kernels_test
