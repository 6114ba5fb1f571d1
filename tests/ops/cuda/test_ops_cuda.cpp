// Ops<Cuda> against the scalar oracle (Ops<Reference>), op by op: within 1e-3 of the result's scale
// for f32 data, 1e-2 where bf16/f16 rounding enters. Needs a CUDA GPU; reported as skipped without one.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/core/quantize.hpp"
#include "loopus/ops/cuda/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "ops/cuda/cuda_util.hpp"
#include "test_util.hpp"

using namespace loopus;
using test::randn;
using test::rel_err;
using test::to_device;
using test::to_host;
using RefOps = Ops<Reference>;
using CudaOps = Ops<Cuda>;

namespace {

/// A [rows, cols] weight of type t made from random values; `bytes` owns the storage.
Weight make_weight(DType t, int64_t rows, int64_t cols, uint32_t seed, std::vector<unsigned char>& bytes) {
  const std::vector<float> f = randn(size_t(rows * cols), seed, 0.5f);
  bytes.assign(size_t(rows) * dtype_row_bytes(t, cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, f.data() + r * cols, cols, bytes.data() + size_t(r) * dtype_row_bytes(t, cols));
  return Weight{bytes.data(), t, rows, cols};
}

}  // namespace

TEST_CASE("[cuda] Tensor<Cuda> grows only when it must and moves") {
  LOOPUS_GPU_OR_SKIP();
  Tensor<Cuda> t({4, 8});
  CHECK_EQ(t.numel(), 32);
  CHECK_EQ(t.row_size(), 8);
  const std::vector<float> h = randn(32, 1);
  CudaOps::upload(h.data(), t.span());
  Tensor<Cuda> u = std::move(t);
  CHECK_EQ(to_host(u.span()), h);
  u.reshape({2, 8});  // smaller: same memory, first 16 values kept
  CHECK_EQ(to_host(u.span()), std::vector<float>(h.begin(), h.begin() + 16));
  CudaOps::fill(u.span(), 2.5f);
  CHECK_EQ(to_host(u.span()), std::vector<float>(16, 2.5f));
}

TEST_CASE("[cuda] matmul: f32, f16, bf16 and block-quantized weights, GEMV and cuBLAS paths") {
  LOOPUS_GPU_OR_SKIP();
  struct Case {
    DType t;
    int64_t rows, cols;
  };
  // 67 columns: the element-load GEMV (no 16-byte rows); the rest the vector path.
  const Case cases[] = {{DType::kF32, 96, 256},   {DType::kF32, 33, 67},   {DType::kF16, 96, 256},
                        {DType::kBF16, 130, 512}, {DType::kBF16, 17, 67},  {DType::kQ8_0, 64, 256},
                        {DType::kQ4_1, 64, 256},  {DType::kQ4_K, 48, 512}, {DType::kQ6_K, 40, 256}};
  for (const Case& c : cases) {
    std::vector<unsigned char> store;
    const Weight W = make_weight(c.t, c.rows, c.cols, uint32_t(c.rows * 7 + c.cols), store);
    for (int64_t T : {1, 3, 8, 9, 64}) {
      CAPTURE(dtype_name(c.t));
      CAPTURE(c.cols);
      CAPTURE(T);
      const std::vector<float> x = randn(size_t(T * c.cols), uint32_t(T));
      std::vector<float> want(size_t(T * c.rows));
      RefOps::matmul(W, x.data(), T, want.data());
      const Tensor<Cuda> dx = to_device(x);
      Tensor<Cuda> dy({T * c.rows});
      CudaOps::matmul(W, dx.span(), T, dy.span());
      // f32 weights stay f32 (GEMV, SGEMM); the cuBLAS path rounds x to a 16-bit weight's type, and
      // quantized weights are widened to f16 on upload.
      const bool exact_inputs = c.t == DType::kF32 ||
                                (T <= cuda::kGemvMaxT && (c.t == DType::kF16 || c.t == DType::kBF16));
      CHECK_LT(rel_err(to_host(dy.span()), want), exact_inputs ? 1e-3 : 1e-2);
    }
  }
}

TEST_CASE("[cuda] matmul_shared: q, k, v in one launch equal three matmuls, mixed types fall back") {
  LOOPUS_GPU_OR_SKIP();
  const int64_t cols = 256;
  for (DType t2 : {DType::kBF16, DType::kF32}) {  // f32: the third product's type differs -> one by one
    std::vector<unsigned char> s0, s1, s2;
    const Weight W0 = make_weight(DType::kBF16, 64, cols, 1, s0), W1 = make_weight(DType::kBF16, 16, cols, 2, s1),
                 W2 = make_weight(t2, 24, cols, 3, s2);
    for (int64_t T : {1, 3, 8, 12}) {
      CAPTURE(T);
      const std::vector<float> x = randn(size_t(T * cols), 4);
      const Tensor<Cuda> dx = to_device(x);
      Tensor<Cuda> y0({T * 64}), y1({T * 16}), y2({T * 24});
      const std::array<SharedProduct<Cuda>, 3> ps{SharedProduct<Cuda>{&W0, y0.span()},
                                                  SharedProduct<Cuda>{&W1, y1.span()},
                                                  SharedProduct<Cuda>{&W2, y2.span()}};
      CudaOps::matmul_shared(dx.span(), T, std::span<const SharedProduct<Cuda>>(ps));
      int i = 0;
      for (const Weight* W : {&W0, &W1, &W2}) {
        std::vector<float> want(size_t(T * W->rows));
        RefOps::matmul(*W, x.data(), T, want.data());
        const Tensor<Cuda>& y = i == 0 ? y0 : i == 1 ? y1 : y2;
        CHECK_LT(rel_err(to_host(y.span()), want), T <= cuda::kGemvMaxT ? 1e-3 : 1e-2);
        ++i;
      }
    }
  }
}

TEST_CASE("[cuda] embed (every weight type), rmsnorm (in place too) and RoPE (both styles, factors, far positions)") {
  LOOPUS_GPU_OR_SKIP();
  const int64_t V = 50, d = 256;
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
  const int64_t T = int64_t(ids.size());
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_K}) {
    CAPTURE(dtype_name(t));
    std::vector<unsigned char> store;
    const Weight E = make_weight(t, V, d, 3, store);
    std::vector<float> want(size_t(T * d));
    RefOps::embed(E, ids.data(), T, want.data());
    Tensor<Cuda> out({T * d});
    CudaOps::embed(E, ids.data(), T, out.span());
    // bf16 is stored exactly; the others come back through f16 or f32
    CHECK_LT(rel_err(to_host(out.span()), want), t == DType::kQ4_K || t == DType::kQ8_0 ? 1e-3 : 1e-6);
  }
  {  // an id outside the vocabulary is the caller's error, named, before any kernel runs
    std::vector<unsigned char> store;
    const Weight E = make_weight(DType::kF32, V, d, 3, store);
    Tensor<Cuda> out({d});
    const int32_t bad = int32_t(V);
    CHECK_THROWS_AS(CudaOps::embed(E, &bad, 1, out.span()), UsageError);
  }

  const std::vector<float> g = randn(size_t(d), 9, 0.3f);
  const Weight G = Weight::f32(g.data(), 1, d);
  const std::vector<float> x = randn(size_t(T * d), 10, 3.f);
  std::vector<float> want(x.size());
  RefOps::rmsnorm(x.data(), G, T, d, 1e-5f, want.data());
  Tensor<Cuda> dx = to_device(x), dy({T * d});
  CudaOps::rmsnorm(dx.span(), G, T, d, 1e-5f, dy.span());
  CHECK_LT(rel_err(to_host(dy.span()), want), 1e-5);
  CudaOps::rmsnorm(dx.span(), G, T, d, 1e-5f, dx.span());  // y aliasing x
  CHECK_LT(rel_err(to_host(dx.span()), want), 1e-5);

  const int n_head = 4, hd = 64;
  std::vector<float> factors(32);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.f + 0.25f * float(i);
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf}) {
    for (int n_rot : {64, 32}) {
      for (int64_t pos0 : {int64_t(0), int64_t(100000)}) {
        for (const float* f : {static_cast<const float*>(nullptr), static_cast<const float*>(factors.data())}) {
          CAPTURE(n_rot);
          CAPTURE(pos0);
          const std::vector<float> q = randn(size_t(T * n_head * hd), 11);
          std::vector<float> w = q;
          RefOps::rope(w.data(), T, n_head, hd, n_rot, pos0, 10000.f, style, f, 1.2f);
          Tensor<Cuda> dq = to_device(q);
          CudaOps::rope(dq.span(), T, n_head, hd, n_rot, pos0, 10000.f, style, f, 1.2f);
          CHECK_LT(rel_err(to_host(dq.span()), w), 1e-5);
        }
      }
    }
  }
}

TEST_CASE(
    "[cuda] attention: split keys (decode) and query tiles (prefill), GQA, late cache starts, head dims 8 to 256") {
  LOOPUS_GPU_OR_SKIP();
  struct Case {
    int64_t T, pos0, kv_begin;
    int n_head, n_kv, hd;
  };
  const Case cases[] = {{1, 4095, 0, 8, 2, 128},    // decode: keys split across blocks, then merged
                        {1, 0, 0, 4, 4, 64},        // the first token: one key
                        {1, 300, 200, 16, 8, 256},  // a depth cache that starts late (kv_begin)
                        {5, 70, 0, 4, 1, 64},       // a short chunk: still split keys
                        {37, 0, 0, 8, 8, 8},        // prefill in query tiles, stories260K's head_dim
                        {64, 100, 40, 12, 4, 96},   // query tiles after a cached prefix that starts late
                        {20, 50, 10, 4, 2, 256},    // many queries, head_dim > 128: split keys
                        {512, 0, 0, 16, 8, 128}};   // the prefill benchmark's shape
  for (const Case& c : cases) {
    CAPTURE(c.T);
    CAPTURE(c.pos0);
    CAPTURE(c.hd);
    const int64_t n_ctx = c.pos0 + c.T, row = int64_t(c.n_kv) * c.hd;
    const std::vector<float> q = randn(size_t(c.T * c.n_head * c.hd), 1), k = randn(size_t(n_ctx * row), 2),
                             v = randn(size_t(n_ctx * row), 3);
    std::vector<float> want(size_t(c.T * c.n_head * c.hd));
    RefOps::attention(q.data(), k.data(), v.data(), c.T, c.pos0, c.kv_begin, c.n_head, c.n_kv, c.hd, want.data());
    const Tensor<Cuda> dq = to_device(q), dk = to_device(k), dv = to_device(v);
    Tensor<Cuda> out({int64_t(want.size())});
    CudaOps::attention(dq.span(), dk.span(), dv.span(), c.T, c.pos0, c.kv_begin, c.n_head, c.n_kv, c.hd, out.span());
    CHECK_LT(rel_err(to_host(out.span()), want), 1e-4);
  }
}

TEST_CASE("[cuda] element-wise ops and the reductions the loop policies use") {
  LOOPUS_GPU_OR_SKIP();
  const int64_t n = 4099;
  const std::vector<float> a = randn(size_t(n), 1, 2.f), b = randn(size_t(n), 2, 2.f);
  const Tensor<Cuda> da = to_device(a), db = to_device(b);
  Tensor<Cuda> out({n});
  {
    std::vector<float> w(static_cast<size_t>(n));
    RefOps::swiglu(a.data(), b.data(), n, w.data());
    CudaOps::swiglu(da.span(), db.span(), out.span());
    CHECK_LT(rel_err(to_host(out.span()), w), 1e-5);
    CudaOps::sub(da.span(), db.span(), out.span());
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = a[size_t(i)] - b[size_t(i)];
    CHECK_EQ(to_host(out.span()), w);
    CudaOps::copy(out.span(), da.span());
    CudaOps::add(out.span(), db.span());
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = a[size_t(i)] + b[size_t(i)];
    CHECK_EQ(to_host(out.span()), w);
    CudaOps::copy(out.span(), da.span());
    CudaOps::mix(out.span(), db.span(), 0.3f);
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = 0.3f * b[size_t(i)] + 0.7f * a[size_t(i)];
    CHECK_LT(rel_err(to_host(out.span()), w), 1e-6);
  }
  for (bool log : {false, true}) {
    const std::vector<float> big = randn(151936, 5, 8.f);  // a Qwen3 vocabulary of logits
    Tensor<Cuda> d = to_device(big);
    std::vector<float> w = big;
    if (log) {
      Tensor<Reference> r({int64_t(big.size())});
      Ops<Reference>::upload(big.data(), r.span());
      Ops<Reference>::log_softmax(r.span());
      Ops<Reference>::download(r.span(), w.data());
      CudaOps::log_softmax(d.span());
    } else {
      RefOps::softmax(w.data(), int64_t(w.size()));
      CudaOps::softmax(d.span());
    }
    CHECK_LT(rel_err(to_host(d.span()), w), 1e-5);
  }
  {  // selective gate: the mixed state and the mean of a
    const int64_t T = 3, d = 256;
    const std::vector<float> z = randn(size_t(T * d), 7, 10.f), p = randn(size_t(T * d), 8),
                             h = randn(size_t(T * d), 9);
    std::vector<float> bias = randn(size_t(d), 10), A = randn(size_t(d), 11);
    for (float& x : A) x = std::abs(x);
    const Weight Wb = Weight::f32(bias.data(), 1, d), WA = Weight::f32(A.data(), 1, d);
    Tensor<Reference> rz({T * d}), rp({T * d}), rh({T * d});
    Ops<Reference>::upload(z.data(), rz.span());
    Ops<Reference>::upload(p.data(), rp.span());
    Ops<Reference>::upload(h.data(), rh.span());
    const float want_mean = Ops<Reference>::selective_mix(rz.span(), Wb, WA, rp.span(), rh.span(), T, d);
    std::vector<float> want(size_t(T * d));
    Ops<Reference>::download(rh.span(), want.data());
    const Tensor<Cuda> cz = to_device(z), cp = to_device(p);
    Tensor<Cuda> ch = to_device(h);
    const float got_mean = CudaOps::selective_mix(cz.span(), Wb, WA, cp.span(), ch.span(), T, d);
    CHECK_LT(rel_err(to_host(ch.span()), want), 1e-5);
    CHECK_EQ(got_mean, doctest::Approx(want_mean).epsilon(1e-5));
  }
  {  // confidence head, halting distances, argmax
    const int64_t d = 300;
    const std::vector<float> x = randn(size_t(d), 12, 3.f), lw = randn(size_t(d), 13), lb = randn(size_t(d), 14),
                             w = randn(size_t(d), 15);
    const Weight Wlw = Weight::f32(lw.data(), 1, d), Wlb = Weight::f32(lb.data(), 1, d),
                 Ww = Weight::f32(w.data(), 1, d);
    Tensor<Reference> rx({d});
    Ops<Reference>::upload(x.data(), rx.span());
    const float want = Ops<Reference>::layernorm_dot(rx.span(), Wlw, Wlb, Ww, 0.25f, 1e-5f);
    const Tensor<Cuda> cx = to_device(x);
    CHECK_EQ(CudaOps::layernorm_dot(cx.span(), Wlw, Wlb, Ww, 0.25f, 1e-5f), doctest::Approx(want).epsilon(1e-5));

    Tensor<Reference> ra({n}), rb({n});
    Ops<Reference>::upload(a.data(), ra.span());
    Ops<Reference>::upload(b.data(), rb.span());
    CHECK_EQ(CudaOps::distance(da.span(), db.span()),
             doctest::Approx(Ops<Reference>::distance(ra.span(), rb.span())).epsilon(1e-9));
    Ops<Reference>::log_softmax(ra.span());
    Ops<Reference>::log_softmax(rb.span());
    Tensor<Cuda> la = to_device(a), lb2 = to_device(b);
    CudaOps::log_softmax(la.span());
    CudaOps::log_softmax(lb2.span());
    CHECK_EQ(CudaOps::kl_div(la.span(), lb2.span()),
             doctest::Approx(Ops<Reference>::kl_div(ra.span(), rb.span())).epsilon(1e-5));

    std::vector<float> t = randn(151936, 16);
    t[77777] = 100.f;
    t[88888] = 100.f;  // a tie: the first index wins
    CHECK_EQ(CudaOps::argmax(to_device(t).span()), 77777);
    t[0] = 200.f;
    CHECK_EQ(CudaOps::argmax(to_device(t).span()), 0);
    CHECK_EQ(CudaOps::argmax(Tensor<Cuda>().span()), -1);
  }
}

TEST_CASE("[cuda] devices: --device out of range is a usage error naming the count") {
  LOOPUS_GPU_OR_SKIP();
  const int n = cuda::device_count();
  CHECK_THROWS_AS(cuda::select_device(n), UsageError);
  CHECK_THROWS_AS(cuda::select_device(-1), UsageError);
  cuda::select_device(0);
  const cuda::DeviceInfo d = cuda::current_device();
  CHECK_GT(d.sm_count, 0);
  MESSAGE("CUDA device 0: " << d.name << ", " << d.sm_count << " SMs, compute capability " << d.cc_major << "."
                            << d.cc_minor << ", " << (d.total_bytes >> 20) << " MiB");
}
