// The matmul kernels of every instruction-set level this CPU runs, each against a scalar oracle;
// levels the CPU lacks report themselves as skipped (ctest lists them so), never as passed.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/ops/cpu/isa.hpp"
#include "loopus/ops/cpu/isa_kernels.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "test_util.hpp"

namespace {

using loopus::DType;
using loopus::cpu::Isa;

/// A random [rows, cols] matrix in dtype dt (f32 values rounded to it), with edge values: a zero
/// row, a row of the largest finite values of the dtype's range that keep sums finite, and
/// signed zeros.
struct IsaMatrix {
  DType dt;
  int64_t rows, cols;
  std::vector<float> f;     // the values as f32 (exact: what the kernel sees)
  std::vector<uint16_t> h;  // the stored f16/bf16 bits
  IsaMatrix(DType dt_, int64_t r, int64_t c, uint32_t seed)
      : dt(dt_), rows(r), cols(c), f(loopus::test::randn(size_t(r * c), seed)) {
    if (rows > 2) {
      std::fill(f.begin(), f.begin() + cols, 0.f);                                             // row 0: zeros
      for (int64_t k = 0; k < cols; ++k) f[size_t(cols + k)] = (k % 2 ? -1.f : 1.f) * 3.0e4f;  // row 1: large
    }
    if (dt != DType::kF32) {
      h.resize(f.size());
      for (size_t i = 0; i < f.size(); ++i) {
        h[i] = dt == DType::kF16 ? loopus::f32_to_f16(f[i]) : loopus::f32_to_bf16(f[i]);
        f[i] = dt == DType::kF16 ? loopus::f16_to_f32(h[i]) : loopus::bf16_to_f32(h[i]);
      }
    }
  }
  const void* data() const { return dt == DType::kF32 ? static_cast<const void*>(f.data()) : h.data(); }
  loopus::Weight weight() const { return loopus::Weight{const_cast<void*>(data()), dt, rows, cols}; }
};

/// y_ref[t, r] = Σ_c w[r, c] · x[t, c] in double, and Σ |w·x| (the rounding scale) beside it.
void isa_oracle(const IsaMatrix& w, const std::vector<float>& x, int64_t T, std::vector<double>& y,
                std::vector<double>& scale) {
  y.assign(size_t(T * w.rows), 0.0);
  scale.assign(y.size(), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double p = double(w.f[size_t(r * w.cols + c)]) * double(x[size_t(t * w.cols + c)]);
        s += p;
        a += std::abs(p);
      }
      y[size_t(t * w.rows + r)] = s;
      scale[size_t(t * w.rows + r)] = a;
    }
}

/// Largest |got - want| / (Σ|w·x| + tiny) over the outputs.
double isa_err(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale) {
  double m = 0;
  for (size_t i = 0; i < got.size(); ++i) m = std::max(m, std::abs(double(got[i]) - want[i]) / (scale[i] + 1e-30));
  return m;
}

const int64_t kRowsList[] = {1, 3, 4, 5, 8, 9, 17, 37};
const int64_t kColsList[] = {1, 7, 8, 16, 31, 32, 33, 64, 100, 257};

/// Every kernel of `isa` on odd shapes; skipped (reported so) where the CPU lacks the level.
void check_level(Isa isa) {
  namespace cpu = loopus::cpu;
  if (!cpu::isa_supported(isa)) {
    loopus::test::report_skip(std::string("kernel level ") + cpu::isa_name(isa) + " not run: this CPU runs up to " +
                              cpu::isa_name(cpu::detect_isa()));
    return;
  }
  MESSAGE("kernel level exercised: " << std::string(cpu::isa_name(isa))
                                     << " (CPU: " << std::string(cpu::isa_name(cpu::detect_isa())) << ")");
  const cpu::MatKernels& k = cpu::mat_kernels(isa);
  CHECK(k.isa == isa);
  uint32_t seed = 1;
  std::vector<double> want, scale;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (int64_t rows : kRowsList)
      for (int64_t cols : kColsList)
        for (int64_t T : {int64_t(1), int64_t(3)}) {
          CAPTURE(std::string(loopus::dtype_name(dt)));
          CAPTURE(rows);
          CAPTURE(cols);
          CAPTURE(T);
          const IsaMatrix w(dt, rows, cols, seed++);
          const auto x = loopus::test::randn(size_t(T * cols), seed++);
          isa_oracle(w, x, T, want, scale);
          const auto gemv = dt == DType::kF32 ? k.gemv_f32 : dt == DType::kF16 ? k.gemv_f16 : k.gemv_bf16;
          // The whole matrix, then two row ranges that split it where a thread split would.
          std::vector<float> y(size_t(T * rows), -7.f);
          gemv(w.data(), 0, rows, cols, x.data(), T, y.data(), rows);
          CHECK(isa_err(y, want, scale) < 1e-6);
          std::fill(y.begin(), y.end(), -7.f);
          const int64_t mid = std::min(rows, int64_t(4) * ((rows / 2 + 3) / 4));
          gemv(w.data(), 0, mid, cols, x.data(), T, y.data(), rows);
          gemv(w.data(), mid, rows, cols, x.data(), T, y.data(), rows);
          CHECK(isa_err(y, want, scale) < 1e-6);
          if (dt != DType::kF32) {  // widening is exact
            std::vector<float> wide(w.f.size());
            (dt == DType::kF16 ? k.widen_f16 : k.widen_bf16)(w.h.data(), int64_t(w.h.size()), wide.data());
            CHECK(wide == w.f);
          }
        }
  if (k.gemm_bf16 == nullptr) return;
  // Native bf16 prefill: the oracle multiplies bf16(x), as the kernel does.
  for (int64_t rows : kRowsList)
    for (int64_t cols : kColsList)
      for (int64_t T : {int64_t(1), int64_t(2), int64_t(3), int64_t(7)}) {
        CAPTURE(rows);
        CAPTURE(cols);
        CAPTURE(T);
        const IsaMatrix w(DType::kBF16, rows, cols, seed++);
        auto x = loopus::test::randn(size_t(T * cols), seed++);
        const int64_t ldx = (cols + 31) / 32 * 32;
        std::vector<uint16_t> xb(size_t(T * ldx), 0xFFFF);
        for (int64_t t = 0; t < T; ++t) k.to_bf16(x.data() + t * cols, cols, xb.data() + t * ldx, ldx);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < ldx; ++c) {
            const uint16_t expect = c < cols ? loopus::f32_to_bf16(x[size_t(t * cols + c)]) : uint16_t(0);
            REQUIRE(xb[size_t(t * ldx + c)] == expect);
          }
        for (auto& v : x) v = loopus::bf16_to_f32(loopus::f32_to_bf16(v));
        isa_oracle(w, x, T, want, scale);
        std::vector<float> y(size_t(T * rows), -7.f);
        const int64_t mid = std::min(rows, int64_t(8) * ((rows / 2 + 7) / 8));
        k.gemm_bf16(xb.data(), ldx, T, w.data(), 0, mid, cols, y.data(), rows);
        k.gemm_bf16(xb.data(), ldx, T, w.data(), mid, rows, cols, y.data(), rows);
        CHECK(isa_err(y, want, scale) < 1e-6);
      }
}

/// Ops<Cpu>::matmul at level `isa` (GEMV for small T, panel GEMM above), threads and all, against
/// Ops<Reference>; bf16 prefill at the AVX512_BF16 level against the oracle on bf16(x).
void check_matmul_at(Isa isa) {
  namespace cpu = loopus::cpu;
  if (!cpu::isa_supported(isa)) {
    loopus::test::report_skip(std::string("Ops<Cpu>::matmul at level ") + cpu::isa_name(isa) +
                              " not run: this CPU runs up to " + cpu::isa_name(cpu::detect_isa()));
    return;
  }
  MESSAGE("Ops<Cpu>::matmul at level " << std::string(cpu::isa_name(isa)));
  const Isa before = cpu::active_isa();
  cpu::set_isa(isa);
  uint32_t seed = 100;
  std::vector<double> want, scale;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (const auto& shape : {std::pair<int64_t, int64_t>{37, 100}, {300, 257}, {1024, 64}})
      for (int64_t T : {int64_t(1), int64_t(5), int64_t(16), int64_t(17), int64_t(70)}) {
        const int64_t rows = shape.first, cols = shape.second;  // (clang 14 cannot CAPTURE a structured binding)
        CAPTURE(std::string(loopus::dtype_name(dt)));
        CAPTURE(rows);
        CAPTURE(cols);
        CAPTURE(T);
        const IsaMatrix w(dt, rows, cols, seed++);
        auto x = loopus::test::randn(size_t(T * cols), seed++);
        std::vector<float> y(size_t(T * rows), -7.f);
        loopus::Ops<loopus::Cpu>::matmul(w.weight(), x.data(), T, y.data());
        if (loopus::Ops<loopus::Cpu>::rounds_x_to_bf16(w.weight(), T))
          for (auto& v : x) v = loopus::bf16_to_f32(loopus::f32_to_bf16(v));
        CHECK(loopus::Ops<loopus::Cpu>::rounds_x_to_bf16(w.weight(), T) ==
              (dt == DType::kBF16 && T > loopus::cpu::Tuning::kGemvMaxT && isa == Isa::kAvx512Bf16));
        isa_oracle(w, x, T, want, scale);
        CHECK(isa_err(y, want, scale) < 1e-5);
      }
  cpu::set_isa(before);
}

}  // namespace

TEST_CASE("isa kernels: the level names parse and the detected level is supported") {
  namespace cpu = loopus::cpu;
  for (Isa i : cpu::kAllIsas) CHECK(cpu::parse_isa(cpu::isa_name(i)) == i);
  CHECK_FALSE(cpu::parse_isa("avx1024").has_value());
  CHECK(cpu::isa_supported(Isa::kBaseline));
  CHECK(cpu::isa_supported(cpu::detect_isa()));
  MESSAGE("this CPU runs kernel levels up to " << std::string(cpu::isa_name(cpu::detect_isa())) << "; active "
                                               << std::string(cpu::isa_name(cpu::active_isa())));
  if (cpu::detect_isa() != Isa::kAvx512Bf16) {
    const Isa above = Isa(int(cpu::detect_isa()) + 1);
    CHECK_THROWS_AS(cpu::set_isa(above), loopus::UnsupportedError);
  }
}

TEST_CASE("isa kernels: baseline (the build's own flags)") { check_level(Isa::kBaseline); }
TEST_CASE("isa kernels: avx2") { check_level(Isa::kAvx2); }
TEST_CASE("isa kernels: avx512") { check_level(Isa::kAvx512); }
TEST_CASE("isa kernels: avx512bf16") { check_level(Isa::kAvx512Bf16); }
TEST_CASE("isa kernels: Ops<Cpu>::matmul at baseline") { check_matmul_at(Isa::kBaseline); }
TEST_CASE("isa kernels: Ops<Cpu>::matmul at avx2") { check_matmul_at(Isa::kAvx2); }
TEST_CASE("isa kernels: Ops<Cpu>::matmul at avx512") { check_matmul_at(Isa::kAvx512); }
TEST_CASE("isa kernels: Ops<Cpu>::matmul at avx512bf16") { check_matmul_at(Isa::kAvx512Bf16); }
