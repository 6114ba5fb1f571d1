// Ops<Cpu> against the Ops<Reference> oracle: every op, odd shapes, f32/f16/bf16 weights.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "test_util.hpp"

namespace {

using loopus::Cpu;
using loopus::DType;
using loopus::Ops;
using loopus::Reference;
using loopus::RopeStyle;
using loopus::Weight;

using loopus::test::randn;

/// A weight matrix held in one dtype; the f32 source values are rounded to it.
struct OwnedWeight {
  std::vector<float> f;
  std::vector<uint16_t> h;
  Weight w;
  OwnedWeight(DType dt, int64_t rows, int64_t cols, uint32_t seed, float scale = 0.5f) {
    f = randn(size_t(rows * cols), seed, scale);
    w.dtype = dt;
    w.rows = rows;
    w.cols = cols;
    if (dt == DType::kF32) {
      w.data = f.data();
    } else {
      h.resize(f.size());
      for (size_t i = 0; i < f.size(); ++i)
        h[i] = dt == DType::kF16 ? loopus::f32_to_f16(f[i]) : loopus::f32_to_bf16(f[i]);
      w.data = h.data();
    }
  }
};

/// Largest |a - b| over the elements, each divided by its own scale[i].
double max_scaled_err(const std::vector<float>& a, const std::vector<float>& b, const std::vector<double>& scale) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]) / (scale[i] + 1e-30));
  return m;
}
/// ‖a - b‖² / ‖b‖².
double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    s += double(b[i]) * b[i];
  }
  return e / (s + 1e-300);
}
double max_abs_err(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}
bool all_finite(const std::vector<float>& a) {
  for (float x : a)
    if (!std::isfinite(x)) return false;
  return true;
}

void check_matmul(DType dt, int64_t rows, int64_t cols, int64_t T) {
  CAPTURE(std::string(loopus::dtype_name(dt)));
  CAPTURE(rows);
  CAPTURE(cols);
  CAPTURE(T);
  OwnedWeight W(dt, rows, cols, uint32_t(rows * 131 + cols * 7 + T));
  const auto x = randn(size_t(T * cols), uint32_t(cols + T * 1000));
  std::vector<float> yr(size_t(T * rows)), yc(size_t(T * rows), NAN);
  // Native bf16 prefill (AVX512_BF16) multiplies bf16(x): the oracle gets the same input.
  auto xr = x;
  if (Ops<Cpu>::rounds_x_to_bf16(W.w, T))
    for (auto& v : xr) v = loopus::bf16_to_f32(loopus::f32_to_bf16(v));
  Ops<Reference>::matmul(W.w, xr.data(), T, yr.data());
  Ops<Cpu>::matmul(W.w, x.data(), T, yc.data());
  // The error of an f32 dot product is bounded relative to Σ|w·x|, not to |y|
  // (y may cancel to ~0); both backends see the same widened weights, so the
  // bound is the same for every dtype.
  std::vector<double> scale(yr.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += std::abs(double(W.w.at(r, c)) * xr[size_t(t * cols + c)]);
      scale[size_t(t * rows + r)] = s;
    }
  CHECK(all_finite(yc));
  CHECK_LE(max_scaled_err(yc, yr, scale), 1e-5);
  CHECK_LE(nmse(yc, yr), 1e-11);
}

}  // namespace

TEST_CASE("[loopus] Ops<Cpu>::matmul matches reference for f32/f16/bf16 and odd shapes") {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    // GEMV path (T small), incl. rows not a multiple of 4 and cols not a multiple of 16.
    for (int64_t T : {int64_t(1), int64_t(2), int64_t(7), loopus::cpu::Tuning::kGemvMaxT}) {
      check_matmul(dt, 1, 1, T);
      check_matmul(dt, 1, 37, T);
      check_matmul(dt, 5, 3, T);
      check_matmul(dt, 7, 16, T);
      check_matmul(dt, 13, 31, T);
      check_matmul(dt, 64, 64, T);
      check_matmul(dt, 173, 64, T);
      check_matmul(dt, 96, 200, T);
      check_matmul(dt, 257, 769, T);  // above the parallel threshold, odd everything
    }
    // GEMM path (prefill).
    for (int64_t T : {loopus::cpu::Tuning::kGemvMaxT + 1, int64_t(64)}) {
      check_matmul(dt, 1, 33, T);
      check_matmul(dt, 70, 47, T);
      check_matmul(dt, 300, 129, T);
      check_matmul(dt, 515, 256, T);  // several f16/bf16 panels, last one ragged
    }
  }
}

TEST_CASE("[loopus] Ops<Cpu>::matmul large decode shapes stay accurate") {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    check_matmul(dt, 256, 3072, 1);
    check_matmul(dt, 96, 4096, 3);
  }
}

TEST_CASE("[loopus] Ops<Cpu>::rmsnorm matches reference, in place too") {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (int64_t d : {1, 7, 64, 100, 768, 1030})
      for (int64_t T : {1, 7, 64}) {
        CAPTURE(d);
        CAPTURE(T);
        OwnedWeight g(dt, 1, d, uint32_t(d), 1.f);
        auto x = randn(size_t(T * d), uint32_t(d * 3 + T), 3.f);
        std::vector<float> yr(x.size()), yc(x.size());
        Ops<Reference>::rmsnorm(x.data(), g.w, T, d, 1e-5f, yr.data());
        Ops<Cpu>::rmsnorm(x.data(), g.w, T, d, 1e-5f, yc.data());
        CHECK_LE(max_abs_err(yc, yr), 1e-5 * 4);  // |y| ≲ 4·|g|·few, f32 rounding
        CHECK_LE(nmse(yc, yr), 1e-12);
        Ops<Cpu>::rmsnorm(x.data(), g.w, T, d, 1e-5f, x.data());  // y aliases x
        CHECK_EQ(max_abs_err(x, yc), 0.0);
      }
}

TEST_CASE("[loopus] Ops<Cpu>::rope matches reference at positions up to 30000") {
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf})
    for (int hd : {8, 64, 128})
      for (int n_rot : {hd, hd / 2})
        for (int64_t pos0 : {0, 1, 1000, 30000})
          for (int64_t T : {1, 7}) {
            CAPTURE(int(style));
            CAPTURE(hd);
            CAPTURE(n_rot);
            CAPTURE(pos0);
            CAPTURE(T);
            const int n_head = 3;
            auto xr = randn(size_t(T * n_head * hd), uint32_t(hd + pos0 + T));
            auto xc = xr;
            Ops<Reference>::rope(xr.data(), T, n_head, hd, n_rot, pos0, 10000.f, style);
            Ops<Cpu>::rope(xc.data(), T, n_head, hd, n_rot, pos0, 10000.f, style);
            CHECK_LE(max_abs_err(xc, xr), 2e-6 * 8);
            CHECK_LE(nmse(xc, xr), 1e-12);
          }
  // theta and n_rot may change between calls (no stale global tables).
  auto xr = randn(4 * 64, 5), xc = xr;
  Ops<Cpu>::rope(xc.data(), 4, 1, 64, 64, 10, 10000.f, RopeStyle::kHalf);
  Ops<Reference>::rope(xr.data(), 4, 1, 64, 32, 10, 1e6f, RopeStyle::kHalf);
  auto xc2 = randn(4 * 64, 5);
  Ops<Cpu>::rope(xc2.data(), 4, 1, 64, 32, 10, 1e6f, RopeStyle::kHalf);
  CHECK_LE(max_abs_err(xc2, xr), 2e-5);
  CHECK_GT(max_abs_err(xc, xr), 1e-3);  // and the two settings really differ
}

namespace {
void check_attention(int64_t T, int64_t pos0, int64_t kv_begin, int n_head, int n_kv, int hd) {
  CAPTURE(T);
  CAPTURE(pos0);
  CAPTURE(kv_begin);
  CAPTURE(n_head);
  CAPTURE(n_kv);
  CAPTURE(hd);
  const int64_t n_ctx = pos0 + T + 3;  // spare rows past the end must not be read
  const auto q = randn(size_t(T * n_head * hd), uint32_t(T + hd), 1.f);
  auto k = randn(size_t(n_ctx * n_kv * hd), uint32_t(n_ctx + 1), 1.f);
  auto v = randn(size_t(n_ctx * n_kv * hd), uint32_t(n_ctx + 2), 1.f);
  // Poison the rows nobody may see (the reference never reads them); a kernel
  // reading them, even to multiply by a zero weight, yields NaN.
  for (int64_t j = 0; j < n_ctx; ++j) {
    if (j >= kv_begin && j < pos0 + T) continue;
    for (int64_t i = 0; i < int64_t(n_kv) * hd; ++i) k[size_t(j * n_kv * hd + i)] = v[size_t(j * n_kv * hd + i)] = NAN;
  }
  std::vector<float> yr(size_t(T * n_head * hd)), yc(yr.size(), NAN);
  Ops<Reference>::attention(q.data(), k.data(), v.data(), T, pos0, kv_begin, n_head, n_kv, hd, yr.data());
  Ops<Cpu>::attention(q.data(), k.data(), v.data(), T, pos0, kv_begin, n_head, n_kv, hd, yc.data());
  CHECK(all_finite(yc));
  CHECK_LE(max_abs_err(yc, yr), 2e-5);  // outputs are convex mixes of N(0,1) values
  CHECK_LE(nmse(yc, yr), 1e-10);
}
}  // namespace

TEST_CASE("[loopus] Ops<Cpu>::attention matches reference (GQA, prefill, decode, kv_begin > 0)") {
  struct Heads {
    int n_head, n_kv;
  };
  for (Heads hs : {Heads{8, 4}, Heads{14, 2}, Heads{4, 4}, Heads{6, 1}})
    for (int hd : {8, 64, 128, 20}) {
      check_attention(1, 0, 0, hs.n_head, hs.n_kv, hd);     // first token
      check_attention(1, 37, 0, hs.n_head, hs.n_kv, hd);    // decode
      check_attention(7, 0, 0, hs.n_head, hs.n_kv, hd);     // prefill
      check_attention(7, 20, 5, hs.n_head, hs.n_kv, hd);    // chunked prefill, window start
      check_attention(1, 300, 299, hs.n_head, hs.n_kv, hd); // kv_begin == pos0: one row
    }
  // Long enough for the blocked (GEMM) prefill path, incl. ragged last blocks.
  check_attention(64, 0, 0, 8, 4, 64);
  check_attention(64, 100, 30, 16, 8, 128);
  check_attention(loopus::cpu::Tuning::kAttnBlockMinT - 1, 3, 1, 14, 2, 64);  // last non-blocked T
  check_attention(loopus::cpu::Tuning::kAttnBlockMinT, 0, 0, 14, 2, 64);       // first blocked T
  check_attention(37, 5, 5, 14, 2, 20);
  check_attention(100, 40, 17, 6, 1, 8);
  check_attention(33, 0, 0, 12, 12, 64);
  check_attention(1, 4095, 0, 16, 8, 128);  // long context, decode
}

TEST_CASE("[loopus] Ops<Cpu>::swiglu matches reference, including extreme gates") {
  for (int64_t n : {1, 7, 16, 100, 5003, 70000}) {
    CAPTURE(n);
    auto g = randn(size_t(n), uint32_t(n), 4.f), u = randn(size_t(n), uint32_t(n + 1), 1.f);
    if (n >= 16) {
      g[0] = 100.f;
      g[1] = -100.f;
      g[2] = 88.f;
      g[3] = -88.f;
      g[4] = 0.f;
      g[5] = -20.f;
      g[6] = 1e-30f;
    }
    std::vector<float> yr(static_cast<size_t>(n)), yc(static_cast<size_t>(n));
    Ops<Reference>::swiglu(g.data(), u.data(), n, yr.data());
    Ops<Cpu>::swiglu(g.data(), u.data(), n, yc.data());
    std::vector<double> scale(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) scale[size_t(i)] = std::abs(double(yr[size_t(i)])) + 1e-30;
    CHECK(all_finite(yc));
    CHECK_LE(max_scaled_err(yc, yr, scale), 1e-6);
  }
}

TEST_CASE("[loopus] Ops<Cpu> exp kernel: relative error over the float range") {
  // A sweep over [-104, 88.7] (results from 0 through subnormals to near FLT_MAX) against double exp.
  using loopus::cpu::simd::VecF;
  constexpr int kW = loopus::cpu::simd::kLanes;
  double worst_rel = 0, worst_sub = 0;
  float buf[kW];
  for (double x = -104.0; x < 88.7; x += 0.0137) {  // x + 15e-3 < ln(FLT_MAX) = 88.7228
    for (int i = 0; i < kW; ++i) buf[i] = float(x + i * 1e-3);
    loopus::cpu::simd::exp(VecF::load(buf)).store(buf);
    for (int i = 0; i < kW; ++i) {
      const double ref = std::exp(double(float(x + i * 1e-3)));
      if (ref < 1.1754943508222875e-38)  // subnormal results: absolute error in units of 2^-149
        worst_sub = std::max(worst_sub, std::abs(buf[i] - ref) / 1.401298464324817e-45);
      else
        worst_rel = std::max(worst_rel, std::abs(buf[i] - ref) / ref);
    }
  }
  CHECK_LE(worst_sub, 1.0);
  CHECK_LE(worst_rel, 5e-7);
  for (int i = 0; i < kW; ++i) buf[i] = 88.73f + float(i);  // e^x > FLT_MAX
  loopus::cpu::simd::exp(VecF::load(buf)).store(buf);
  for (int i = 0; i < kW; ++i) CHECK(std::isinf(buf[i]));
  for (int i = 0; i < kW; ++i) buf[i] = i % 3 == 0 ? 1000.f : i % 3 == 1 ? -1000.f : NAN;
  loopus::cpu::simd::exp(VecF::load(buf)).store(buf);
  for (int i = 0; i < kW; ++i) {
    CAPTURE(i);
    if (i % 3 == 0) CHECK(std::isinf(buf[i]));
    if (i % 3 == 1) CHECK_EQ(buf[i], 0.f);
    if (i % 3 == 2) CHECK(std::isnan(buf[i]));
  }
}

TEST_CASE("[loopus] Ops<Cpu>::add, embed and softmax match reference") {
  for (int64_t n : {1, 7, 33, 1000}) {
    auto y = randn(size_t(n), 1), x = randn(size_t(n), 2), y2 = y;
    Ops<Reference>::add(y.data(), x.data(), n);
    Ops<Cpu>::add(y2.data(), x.data(), n);
    CHECK_EQ(max_abs_err(y2, y), 0.0);
  }
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
    for (int64_t cols : {1, 8, 37, 768}) {
      OwnedWeight E(dt, 50, cols, uint32_t(cols));
      const std::vector<int32_t> ids = {0, 49, 3, 3, 17};
      std::vector<float> yr(ids.size() * size_t(cols)), yc(yr.size());
      Ops<Reference>::embed(E.w, ids.data(), int64_t(ids.size()), yr.data());
      Ops<Cpu>::embed(E.w, ids.data(), int64_t(ids.size()), yc.data());
      CHECK_EQ(max_abs_err(yc, yr), 0.0);  // widening is exact
      const int32_t bad = 50;  // == E.rows: a caller bug, reported (asserts are on in tests)
      CHECK_THROWS_AS(Ops<Cpu>::embed(E.w, &bad, 1, yc.data()), loopus::Error);
    }
  for (int64_t n : {1, 2, 15, 512, 151936}) {
    CAPTURE(n);
    auto xr = randn(size_t(n), uint32_t(n), 5.f);
    xr[0] = 40.f;  // a dominant logit
    auto xc = xr;
    Ops<Reference>::softmax(xr.data(), n);
    Ops<Cpu>::softmax(xc.data(), n);
    std::vector<double> scale(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) scale[size_t(i)] = double(xr[size_t(i)]) + 1e-38;
    // x - max is rounded to f32 here (double in the reference): with logits
    // spread over ~60 that alone is up to ½ulp(60) = 1.9e-6 relative in e^(x-max).
    CHECK_LE(max_scaled_err(xc, xr, scale), 3e-6);
    double sum = 0;
    for (float p : xc) sum += p;
    CHECK_EQ(sum, doctest::Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("[loopus] Ops<Cpu> results do not depend on the thread count") {
#if defined(_OPENMP)
  OwnedWeight W(DType::kBF16, 300, 200, 9);
  const int64_t T = 32;  // the GEMM path
  REQUIRE_GT(T, loopus::cpu::Tuning::kGemvMaxT);
  const auto x = randn(size_t(T * 200), 10);
  std::vector<float> y1(T * 300), y2(T * 300), y3(300), y4(300);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  Ops<Cpu>::matmul(W.w, x.data(), T, y1.data());
  Ops<Cpu>::matmul(W.w, x.data(), 1, y3.data());
  omp_set_num_threads(std::max(2, saved));
  Ops<Cpu>::matmul(W.w, x.data(), T, y2.data());
  Ops<Cpu>::matmul(W.w, x.data(), 1, y4.data());
  omp_set_num_threads(saved);
  CHECK_LE(max_abs_err(y1, y2), 1e-4);  // panels may split differently; the GEMV must not
  CHECK_EQ(max_abs_err(y3, y4), 0.0);
#endif
}

namespace {

/// Runs f(Span args...) on backend B with host data in, host data out.
template <class B>
std::vector<float> on_backend(const std::vector<float>& host) {
  loopus::Tensor<B> t({int64_t(host.size())});
  Ops<B>::upload(host.data(), t.span());
  std::vector<float> out(host.size());
  Ops<B>::download(t.span(), out.data());
  return out;
}

/// The loop's operations (gates, halting, decoding) on backend B's storage, checked against
/// sums written out here in double.
template <class B>
void check_loop_ops() {
  using loopus::Tensor;
  const int64_t T = 3, d = 37;
  const auto p = randn(size_t(T * d), 21), h = randn(size_t(T * d), 22), z = randn(size_t(T * d), 23, 3.f);
  auto bias = randn(size_t(d), 24), A = randn(size_t(d), 25);
  for (auto& a : A) a = std::abs(a) + 0.1f;
  Tensor<B> tp({T, d}), th({T, d}), tz({T, d}), to({T, d});
  Ops<B>::upload(p.data(), tp.span());
  Ops<B>::upload(h.data(), th.span());
  Ops<B>::upload(z.data(), tz.span());
  CHECK_EQ(on_backend<B>(p), p);  // upload / download round trip

  std::vector<float> out(size_t(T * d));
  Ops<B>::sub(tp.span(), th.span(), to.span());
  Ops<B>::download(to.span(), out.data());
  for (size_t i = 0; i < out.size(); ++i) CHECK_EQ(out[i], p[i] - h[i]);

  Ops<B>::copy(to.span(), th.span());
  Ops<B>::mix(to.span(), tp.span(), 0.25f);
  Ops<B>::download(to.span(), out.data());
  for (size_t i = 0; i < out.size(); ++i) CHECK_EQ(out[i], doctest::Approx(0.25 * p[i] + 0.75 * h[i]).epsilon(1e-6));

  Ops<B>::copy(to.span(), th.span());
  const float mean_a = Ops<B>::selective_mix(tz.span(), Weight::f32(bias.data(), 1, d), Weight::f32(A.data(), 1, d),
                                             tp.span(), to.span(), T, d);
  Ops<B>::download(to.span(), out.data());
  double asum = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < d; ++c) {
      const double zz = double(z[size_t(t * d + c)]) + bias[size_t(c)];
      const double sp = zz > 20 ? zz : std::log(1 + std::exp(zz));
      const double a = std::exp(-sp * A[size_t(c)]);
      const size_t i = size_t(t * d + c);
      CHECK_EQ(out[i], doctest::Approx(a * p[i] + (1 - a) * h[i]).epsilon(1e-5));
      asum += a;
    }
  CHECK_EQ(mean_a, doctest::Approx(asum / double(T * d)).epsilon(1e-6));

  // confidence head on row 1: w · LayerNorm(x) + b
  const auto lw = randn(size_t(d), 26), lb = randn(size_t(d), 27), w = randn(size_t(d), 28);
  const float logit = Ops<B>::layernorm_dot(tp.rows(1, 1), Weight::f32(lw.data(), 1, d), Weight::f32(lb.data(), 1, d),
                                            Weight::f32(w.data(), 1, d), 0.3f, 1e-5f);
  double mean = 0, var = 0;
  for (int64_t c = 0; c < d; ++c) mean += p[size_t(d + c)];
  mean /= double(d);
  for (int64_t c = 0; c < d; ++c) var += (p[size_t(d + c)] - mean) * (p[size_t(d + c)] - mean);
  var /= double(d);
  double s = 0.3;
  for (int64_t c = 0; c < d; ++c)
    s += double(w[size_t(c)]) * ((p[size_t(d + c)] - mean) / std::sqrt(var + 1e-5) * lw[size_t(c)] + lb[size_t(c)]);
  CHECK_EQ(logit, doctest::Approx(s).epsilon(1e-5));

  double dd = 0;
  for (size_t i = 0; i < p.size(); ++i) dd += (double(p[i]) - h[i]) * (double(p[i]) - h[i]);
  CHECK_EQ(Ops<B>::distance(tp.span(), th.span()), doctest::Approx(std::sqrt(dd)).epsilon(1e-6));

  // log_softmax and KL over row 0 / row 2 as logits
  Tensor<B> la({d}), lq({d});
  Ops<B>::copy(la.span(), tz.rows(0, 1));
  Ops<B>::copy(lq.span(), tz.rows(2, 1));
  Ops<B>::log_softmax(la.span());
  Ops<B>::log_softmax(lq.span());
  std::vector<float> a(static_cast<size_t>(d)), q(static_cast<size_t>(d));
  Ops<B>::download(la.span(), a.data());
  Ops<B>::download(lq.span(), q.data());
  double za = 0, zq = 0, ma = -1e30, mq = -1e30;
  for (int64_t c = 0; c < d; ++c) {
    ma = std::max(ma, double(z[size_t(c)]));
    mq = std::max(mq, double(z[size_t(2 * d + c)]));
  }
  for (int64_t c = 0; c < d; ++c) {
    za += std::exp(z[size_t(c)] - ma);
    zq += std::exp(z[size_t(2 * d + c)] - mq);
  }
  double kl = 0;
  for (int64_t c = 0; c < d; ++c) {
    const double lpa = z[size_t(c)] - ma - std::log(za), lpq = z[size_t(2 * d + c)] - mq - std::log(zq);
    CHECK_EQ(a[size_t(c)], doctest::Approx(lpa).epsilon(1e-5));
    kl += std::exp(lpa) * (lpa - lpq);
  }
  CHECK_EQ(Ops<B>::kl_div(la.span(), lq.span()), doctest::Approx(kl).epsilon(1e-5));
  CHECK_EQ(Ops<B>::kl_div(la.span(), la.span()), doctest::Approx(0.0));

  const int64_t am = Ops<B>::argmax(tz.rows(0, 1));
  CHECK_EQ(am, int64_t(std::max_element(z.begin(), z.begin() + d) - z.begin()));
  Ops<B>::fill(to.span(), 2.5f);
  Ops<B>::download(to.span(), out.data());
  CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 2.5f; }));
}

}  // namespace

TEST_CASE_TEMPLATE("[loopus] the loop's operations (gates, confidence head, halting, KL) on each backend", B,
                   loopus::Reference, loopus::Cpu) {
  check_loop_ops<B>();
}
