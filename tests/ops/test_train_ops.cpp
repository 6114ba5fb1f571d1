// The training kernels (cpu::kern, f32 and f64) against their scalar oracle (ops/reference/train_ops.hpp),
// and every reference backward against central differences of the reference forward.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "loopus/ops/cpu/train.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/ops/reference/train_ops.hpp"
#include "loopus/train/loopus_step.hpp"
#include "train/train_test_util.hpp"

namespace kern = loopus::cpu::kern;
namespace ref = loopus::ref_train;
using loopus::RopeStyle;
using loopus::test::numeric_grad;
using loopus::test::rand_vec;
using loopus::test::rel_err;

namespace {

// ---- tolerances (norm-wise relative error ‖got − want‖ / max(‖got‖, ‖want‖), as rel_err)
//
// The reference reads the same S inputs, computes in double and rounds each output once, so what a
// comparison measures is the kernel's own rounding.
//  - f64 kernels: every output is a sum of at most K ≈ 140 terms (GEMM inner size, attention keys,
//    vocabulary) rounded in double: ≤ K·u·Σ|terms| with u = 1.1e-16, i.e. ≲ 1e-13 relative even with
//    √K-fold cancellation; exp / log / sqrt add a few u. 1e-12 leaves a margin of ~10x.
//  - f32 kernels that reduce (GEMM through OpenBLAS / Ops<Cpu>::matmul, attention, the norms' dot
//    products): float accumulation of K ≤ 140 terms gives ≈ √K·u_f ≈ 7e-7 typically and K·u_f ≈ 8e-6 at
//    worst (u_f = 6e-8); attention's backward adds the cancellation in dP − rowsum(dO∘O). 1e-5, above
//    the worst case; measured ≤ 3e-7 (OpenBLAS, AVX-512, 2 threads).
//  - f32 elementwise kernels (RoPE, SwiGLU with the SIMD exp, softplus, CE's softmax row): a handful of
//    float roundings per element plus the vector exp's few-ulp error, ≲ 10·u_f: 1e-6; measured ≤ 3e-7.
// Any real bug is far outside these: a sign flip gives 2, a dropped 1/√hd ~0.5, a causal mask off by one
// row ~1/T; the f32 bounds are loose only against rounding.
template <class S>
constexpr double tol_reduce() {
  return std::is_same_v<S, float> ? 1e-5 : 1e-12;
}
template <class S>
constexpr double tol_elem() {
  return std::is_same_v<S, float> ? 1e-6 : 1e-12;
}
/// Reference backward against central differences (eps 1e-6) of the reference forward in f64: truncation
/// O(eps²) ≈ 1e-12, cancellation ≈ u·|L|/eps ≈ 1e-9 relative; 1e-6 as the issue asks.
constexpr double kTolFd = 1e-6;

template <class S>
const char* type_name() {
  return std::is_same_v<S, float> ? "f32" : "f64";
}

/// LOOPUS_TRAIN_OPS_REPORT=1 prints each measured error (how the numbers in the commit message were taken).
void report(const std::string& what, double e) {
  static const bool on = [] {
    const char* v = std::getenv("LOOPUS_TRAIN_OPS_REPORT");
    return v && *v && std::string(v) != "0";
  }();
  if (on) std::printf("train-ops-err %-44s %.3e\n", what.c_str(), e);
}

template <class S>
std::vector<S> cast(const std::vector<double>& v) {
  std::vector<S> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = S(v[i]);
  return r;
}
template <class S>
std::vector<double> widen(const std::vector<S>& v) {
  return std::vector<double>(v.begin(), v.end());
}
double norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

/// A kernel's output against the reference's: not trivially zero, and within tol.
template <class S>
void expect_close(const std::string& what, const std::vector<S>& got, const std::vector<S>& want, double tol,
                  const char* kernel_type = type_name<S>()) {
  CAPTURE(what);
  REQUIRE_EQ(got.size(), want.size());
  const std::vector<double> g = widen(got), w = widen(want);
  CHECK_GT(norm(w), 0.0);  // an all-zero pair would pass any tolerance
  const double e = rel_err(g, w);
  report(what + " " + kernel_type + " vs ref", e);
  CHECK_LT(e, tol);
}

/// An analytic gradient against finite differences. It must be close, the finite differences must not
/// vanish (rel_err(0, 0) = 0 would pass), and the negated gradient must be far: rel_err(−g, g) = 2, so a
/// sign flip in the backward cannot pass.
void expect_grad(const std::string& what, const std::vector<double>& analytic, const std::vector<double>& fd) {
  CAPTURE(what);
  REQUIRE_EQ(analytic.size(), fd.size());
  CHECK_GT(norm(fd), 1e-3);
  const double e = rel_err(analytic, fd);
  report(what + " ref vs FD", e);
  CHECK_LT(e, kTolFd);
  std::vector<double> neg(analytic);
  for (double& x : neg) x = -x;
  CHECK_GT(rel_err(neg, fd), 1.0);
}

/// Σ w ∘ y: the scalar every finite-difference check differentiates (its dy is w).
double dotv(const std::vector<double>& w, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < w.size(); ++i) s += w[i] * y[i];
  return s;
}

size_t sz(int64_t n) { return static_cast<size_t>(n); }

}  // namespace

// ============================================================== kernels against the reference

TEST_CASE_TEMPLATE("[loopus] train ops: linear, linear_dx, linear_dw match the reference", S, float, double) {
  struct Shape {
    int64_t N, in, out;
  };
  // N = 1 takes Ops<Cpu>::matmul's GEMV path (f32), 131·67·45 > 1e5 MACs the threaded GEMM chunks.
  for (const Shape sh : {Shape{1, 53, 29}, Shape{13, 7, 5}, Shape{37, 53, 29}, Shape{131, 67, 45}}) {
    const int64_t N = sh.N, in = sh.in, out = sh.out;
    CAPTURE(N);
    CAPTURE(in);
    CAPTURE(out);
    const uint64_t seed = uint64_t(N * 1000 + in);
    const auto W = cast<S>(rand_vec(sz(out * in), seed + 1)), x = cast<S>(rand_vec(sz(N * in), seed + 2));
    const auto dy = cast<S>(rand_vec(sz(N * out), seed + 3));
    std::vector<S> yk(sz(N * out)), yr(yk.size());
    kern::linear(W.data(), out, in, x.data(), N, yk.data());
    ref::linear(W.data(), out, in, x.data(), N, yr.data());
    expect_close("linear", yk, yr, tol_reduce<S>());

    for (bool acc : {false, true}) {
      CAPTURE(acc);
      const auto dx0 = cast<S>(rand_vec(sz(N * in), seed + 4));  // overwritten unless acc
      std::vector<S> dxk = dx0, dxr = dx0;
      kern::linear_dx(W.data(), out, in, dy.data(), N, dxk.data(), acc);
      ref::linear_dx(W.data(), out, in, dy.data(), N, dxr.data(), acc);
      expect_close(acc ? "linear_dx (accumulate)" : "linear_dx", dxk, dxr, tol_reduce<S>());
    }
    const auto dW0 = cast<S>(rand_vec(sz(out * in), seed + 5));  // linear_dw always accumulates
    std::vector<S> dWk = dW0, dWr = dW0;
    kern::linear_dw(x.data(), in, dy.data(), out, N, dWk.data());
    ref::linear_dw(x.data(), in, dy.data(), out, N, dWr.data());
    expect_close("linear_dw", dWk, dWr, tol_reduce<S>());
  }
}

TEST_CASE_TEMPLATE("[loopus] train ops: rmsnorm and rmsnorm_bwd (dx, dg) match the reference", S, float, double) {
  for (const int64_t d : {int64_t(7), int64_t(53)}) {
    const int64_t N = 37;
    CAPTURE(d);
    const auto x = cast<S>(rand_vec(sz(N * d), 40 + uint64_t(d), -2, 2));
    const auto g = cast<S>(rand_vec(sz(d), 41, 0.5, 1.5)), dy = cast<S>(rand_vec(sz(N * d), 42));
    std::vector<S> yk(x.size()), yr(x.size()), rk(sz(N)), rr(sz(N));
    kern::rmsnorm(x.data(), g.data(), N, d, 1e-5, yk.data(), rk.data());
    ref::rmsnorm(x.data(), g.data(), N, d, 1e-5, yr.data(), rr.data());
    expect_close("rmsnorm y", yk, yr, tol_reduce<S>());
    expect_close("rmsnorm rstd", rk, rr, tol_reduce<S>());
    for (bool acc : {false, true}) {
      CAPTURE(acc);
      const auto dx0 = cast<S>(rand_vec(x.size(), 43));
      const auto dg0 = cast<S>(rand_vec(sz(d), 44));  // dg always accumulates
      std::vector<S> dxk = dx0, dxr = dx0, dgk = dg0, dgr = dg0;
      // both get the reference's rstd: the backward alone is compared
      kern::rmsnorm_bwd(x.data(), g.data(), rr.data(), dy.data(), N, d, dxk.data(), dgk.data(), acc);
      ref::rmsnorm_bwd(x.data(), g.data(), rr.data(), dy.data(), N, d, dxr.data(), dgr.data(), acc);
      expect_close(acc ? "rmsnorm_bwd dx (accumulate)" : "rmsnorm_bwd dx", dxk, dxr, tol_reduce<S>());
      expect_close("rmsnorm_bwd dg", dgk, dgr, tol_reduce<S>());
      // dg == nullptr: dx alone
      std::vector<S> dxr2 = dx0;
      ref::rmsnorm_bwd(x.data(), g.data(), rr.data(), dy.data(), N, d, dxr2.data(), static_cast<S*>(nullptr), acc);
      CHECK(dxr2 == dxr);
    }
  }
}

TEST_CASE_TEMPLATE("[loopus] train ops: rope_tables and rope (both styles, partial, inverse) match the reference", S,
                   float, double) {
  const int64_t B = 3, T = 7, N = B * T;
  const int H = 5, hd = 10;
  const std::vector<float> factors = {1.f, 1.5f, 2.f, 4.f, 8.f};
  struct Case {
    int n_rot;
    const float* ff;
    float mscale;
  };
  for (const Case c : {Case{hd, nullptr, 1.f}, Case{6, nullptr, 1.f}, Case{hd, factors.data(), 1.19f}}) {
    CAPTURE(c.n_rot);
    CAPTURE(c.mscale);
    const int half = c.n_rot / 2;
    std::vector<S> csk(sz(T * half)), snk(csk.size()), csr(csk.size()), snr(csk.size());
    kern::rope_tables(T, c.n_rot, 10000.f, csk.data(), snk.data(), c.ff, c.mscale);
    ref::rope_tables(T, c.n_rot, 10000.f, csr.data(), snr.data(), c.ff, c.mscale);
    // the same double angle rounded once: f32 tables should agree to the last bit
    expect_close("rope_tables cos", csk, csr, tol_elem<S>());
    expect_close("rope_tables sin", snk, snr, tol_elem<S>());
    for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf}) {
      CAPTURE(int(style));
      const auto x = cast<S>(rand_vec(sz(N * H * hd), 50 + uint64_t(c.n_rot)));
      for (bool inverse : {false, true}) {
        CAPTURE(inverse);
        std::vector<S> xk = x, xr = x;
        kern::rope(xk.data(), N, T, H, hd, c.n_rot, style, csr.data(), snr.data(), inverse);
        ref::rope(xr.data(), N, T, H, hd, c.n_rot, style, csr.data(), snr.data(), inverse);
        expect_close(inverse ? "rope inverse" : "rope", xk, xr, tol_elem<S>());
        for (int64_t r = 0; r < N; ++r)  // dims ≥ n_rot pass through untouched
          for (int h = 0; h < H; ++h)
            for (int e = c.n_rot; e < hd; ++e) CHECK_EQ(xr[sz((r * H + h) * hd + e)], x[sz((r * H + h) * hd + e)]);
      }
    }
  }
}

TEST_CASE("[loopus] train ops: reference rope at r % T agrees with the inference oracle Ops<Reference>::rope") {
  // The training layout restarts positions at 0 every T rows; the inference reference takes pos0.
  const int64_t B = 2, T = 9, N = B * T;
  const int H = 3, hd = 8;
  const std::vector<float> factors = {1.f, 2.f, 3.f};
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf})
    for (const int n_rot : {8, 6}) {
      CAPTURE(int(style));
      CAPTURE(n_rot);
      const float* ff = n_rot == 6 ? factors.data() : nullptr;
      const float mscale = n_rot == 6 ? 1.1f : 1.f;
      std::vector<float> cs(sz(T * n_rot / 2)), sn(cs.size());
      ref::rope_tables(T, n_rot, 500000.f, cs.data(), sn.data(), ff, mscale);
      const auto x = cast<float>(rand_vec(sz(N * H * hd), 60));
      std::vector<float> a = x, b = x;
      ref::rope(a.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), false);
      for (int64_t s = 0; s < B; ++s)
        loopus::Ops<loopus::Reference>::rope(b.data() + s * T * H * hd, T, H, hd, n_rot, 0, 500000.f, style, ff,
                                             mscale);
      expect_close("rope ref vs Ops<Reference>::rope", a, b, 1e-6);  // f32 tables vs double cos/sin
    }
}

TEST_CASE_TEMPLATE("[loopus] train ops: causal GQA attention_fwd / attention_bwd match the reference", S, float,
                   double) {
  struct Shape {
    int64_t B, T;
    int H, KV, hd;
  };
  // T = 70, 130: query blocks of 64 with a ragged last block; H != KV (groups 3 and 2) and H == KV; T = 1.
  for (const Shape sh : {Shape{2, 70, 6, 2, 5}, Shape{1, 130, 4, 2, 7}, Shape{2, 33, 3, 3, 9}, Shape{3, 1, 2, 1, 4}}) {
    const int64_t B = sh.B, T = sh.T, N = B * T;
    const int H = sh.H, KV = sh.KV, hd = sh.hd;
    CAPTURE(B);
    CAPTURE(T);
    CAPTURE(H);
    CAPTURE(KV);
    CAPTURE(hd);
    const uint64_t seed = uint64_t(100 + T);
    // scores up to ~hd·4/√hd: peaked softmax rows, not near-uniform ones
    const auto q = cast<S>(rand_vec(sz(N * H * hd), seed, -2, 2)),
               k = cast<S>(rand_vec(sz(N * KV * hd), seed + 1, -2, 2));
    const auto v = cast<S>(rand_vec(k.size(), seed + 2)), dout = cast<S>(rand_vec(q.size(), seed + 3));
    std::vector<S> ok(q.size()), orf(q.size()), lk(sz(B * H * T)), lr(lk.size());
    std::vector<S> scratch(sz(kern::attention_scratch(T, hd, kern::max_threads())));
    kern::attention_fwd(q.data(), k.data(), v.data(), B, T, H, KV, hd, ok.data(), lk.data(), scratch.data());
    ref::attention_fwd(q.data(), k.data(), v.data(), B, T, H, KV, hd, orf.data(), lr.data());
    expect_close("attention_fwd out", ok, orf, tol_reduce<S>());
    expect_close("attention_fwd lse", lk, lr, tol_reduce<S>());
    // prefilled with garbage: all three are overwritten. The kernel gets the reference's tape.
    std::vector<S> dqk = cast<S>(rand_vec(q.size(), 7)), dkk = cast<S>(rand_vec(k.size(), 8)), dvk = dkk;
    std::vector<S> dqr = dqk, dkr = dkk, dvr = dvk;
    kern::attention_bwd(q.data(), k.data(), v.data(), orf.data(), lr.data(), dout.data(), B, T, H, KV, hd, dqk.data(),
                        dkk.data(), dvk.data(), scratch.data());
    ref::attention_bwd(q.data(), k.data(), v.data(), orf.data(), lr.data(), dout.data(), B, T, H, KV, hd, dqr.data(),
                       dkr.data(), dvr.data());
    if (T > 1) {
      expect_close("attention_bwd dq", dqk, dqr, tol_reduce<S>());
      expect_close("attention_bwd dk", dkk, dkr, tol_reduce<S>());
    } else {  // one key per row: the softmax is constant, so q and k get no gradient
      for (size_t i = 0; i < dqr.size(); ++i) {
        CHECK_EQ(dqr[i], S(0));
        CHECK_LT(std::abs(double(dqk[i])), 1e-6);
      }
      for (size_t i = 0; i < dkr.size(); ++i) {
        CHECK_EQ(dkr[i], S(0));
        CHECK_LT(std::abs(double(dkk[i])), 1e-6);
      }
    }
    expect_close("attention_bwd dv", dvk, dvr, tol_reduce<S>());
  }
}

TEST_CASE_TEMPLATE("[loopus] train ops: swiglu and swiglu_bwd match the reference", S, float, double) {
  const int64_t n = 1003;  // SIMD body + a ragged tail
  const auto g = cast<S>(rand_vec(sz(n), 70, -12, 12)), u = cast<S>(rand_vec(sz(n), 71));
  const auto da = cast<S>(rand_vec(sz(n), 72));
  std::vector<S> ak(sz(n)), ar(sz(n)), dgk(sz(n)), dgr(sz(n)), duk(sz(n)), dur(sz(n));
  kern::swiglu(g.data(), u.data(), n, ak.data());
  ref::swiglu(g.data(), u.data(), n, ar.data());
  expect_close("swiglu", ak, ar, tol_elem<S>());
  kern::swiglu_bwd(g.data(), u.data(), da.data(), n, dgk.data(), duk.data());
  ref::swiglu_bwd(g.data(), u.data(), da.data(), n, dgr.data(), dur.data());
  expect_close("swiglu_bwd dg", dgk, dgr, tol_elem<S>());
  expect_close("swiglu_bwd du", duk, dur, tol_elem<S>());
}

TEST_CASE_TEMPLATE("[loopus] train ops: layernorm and layernorm_bwd (dx, dw, db) match the reference", S, float,
                   double) {
  const int64_t N = 5, d = 37;
  const auto x = cast<S>(rand_vec(sz(N * d), 80, -3, 2)), w = cast<S>(rand_vec(sz(d), 81, 0.5, 1.5));
  const auto b = cast<S>(rand_vec(sz(d), 82)), dy = cast<S>(rand_vec(sz(N * d), 83));
  std::vector<S> yk(x.size()), yr(x.size()), xhk(x.size()), xhr(x.size()), rk(sz(N)), rr(sz(N));
  kern::layernorm(x.data(), w.data(), b.data(), N, d, 1e-5, yk.data(), xhk.data(), rk.data());
  ref::layernorm(x.data(), w.data(), b.data(), N, d, 1e-5, yr.data(), xhr.data(), rr.data());
  expect_close("layernorm y", yk, yr, tol_reduce<S>());
  expect_close("layernorm xhat", xhk, xhr, tol_reduce<S>());
  expect_close("layernorm rstd", rk, rr, tol_reduce<S>());
  const auto dw0 = cast<S>(rand_vec(sz(d), 84)), db0 = cast<S>(rand_vec(sz(d), 85));  // accumulated into
  std::vector<S> dxk = cast<S>(rand_vec(x.size(), 86)), dxr = dxk;                    // overwritten
  std::vector<S> dwk = dw0, dwr = dw0, dbk = db0, dbr = db0;
  kern::layernorm_bwd(xhr.data(), rr.data(), w.data(), dy.data(), N, d, dxk.data(), dwk.data(), dbk.data());
  ref::layernorm_bwd(xhr.data(), rr.data(), w.data(), dy.data(), N, d, dxr.data(), dwr.data(), dbr.data());
  expect_close("layernorm_bwd dx", dxk, dxr, tol_reduce<S>());
  expect_close("layernorm_bwd dw", dwk, dwr, tol_reduce<S>());
  expect_close("layernorm_bwd db", dbk, dbr, tol_reduce<S>());
}

TEST_CASE_TEMPLATE("[loopus] train ops: cross_entropy (ignored rows, ties, grad_scale 0) matches the reference", S,
                   float, double) {
  const int64_t N = 37, V = 101;
  std::vector<S> x = cast<S>(rand_vec(sz(N * V), 90, -4, 4));
  std::vector<int32_t> tgt(sz(N));
  for (int64_t r = 0; r < N; ++r) tgt[sz(r)] = int32_t((r * 37 + 11) % V);
  tgt[1] = -1;
  tgt[6] = -100;  // any negative target is ignored
  tgt[20] = -1;
  tgt[30] = 0;
  tgt[31] = int32_t(V - 1);
  for (int64_t j = 0; j < V; ++j) x[sz(3 * V + j)] = S(0.5);   // all tied: argmax 0, uniform softmax
  x[sz(4 * V + 9)] = x[sz(4 * V + 40)] = S(9);                 // a tie for the max at 9 and 40: argmax 9
  x[sz(6 * V + 2)] = x[sz(6 * V + 5)] = S(9);                  // the same in an ignored row
  for (int64_t j = 0; j < V; ++j) x[sz(5 * V + j)] += S(100);  // e^100 overflows f32 unless shifted
  tgt[4] = 40;
  int64_t n_expect = 0;
  for (int32_t t : tgt) n_expect += t >= 0;
  for (const double gs : {0.0, 1.0 / double(n_expect), 0.37}) {
    CAPTURE(gs);
    std::vector<S> lk = x, lr = x;
    std::vector<int32_t> ak(sz(N), -7), ar(sz(N), -7);
    std::vector<double> rlk(sz(N), -1), rlr(sz(N), -1);
    int64_t nk = -1, nr = -1;
    const double sk = kern::cross_entropy(lk.data(), tgt.data(), N, V, gs, ak.data(), rlk.data(), &nk);
    const double sr = ref::cross_entropy(lr.data(), tgt.data(), N, V, gs, ar.data(), rlr.data(), &nr);
    CHECK_EQ(nk, n_expect);
    CHECK_EQ(nr, n_expect);
    CHECK(ak == ar);
    CHECK_EQ(ar[3], 0);
    CHECK_EQ(ar[4], 9);
    CHECK_EQ(ar[6], 2);
    const double tol = tol_elem<S>();
    CHECK_LT(std::abs(sk - sr), tol * std::abs(sr));
    report(std::string("cross_entropy sum ") + type_name<S>() + " vs ref", std::abs(sk - sr) / std::abs(sr));
    expect_close("cross_entropy row_loss", rlk, rlr, tol, type_name<S>());
    expect_close(gs == 0 ? "cross_entropy softmax (gs 0)" : "cross_entropy dlogits", lk, lr, tol);
    CHECK_EQ(rlr[1], 0.0);
    for (int64_t j = 0; j < V; ++j) {
      // ignored rows: zero gradient, or untouched logits when grad_scale is 0 (the softmax-only mode)
      CHECK_EQ(lr[sz(V + j)], gs == 0 ? x[sz(V + j)] : S(0));
      CHECK_EQ(lk[sz(V + j)], lr[sz(V + j)]);
    }
  }
  // every row ignored: nothing counted, zero loss
  std::vector<int32_t> none(sz(N), -1);
  std::vector<S> l = x;
  std::vector<double> rl(sz(N));
  int64_t n = -1;
  CHECK_EQ(ref::cross_entropy(l.data(), none.data(), N, V, 0.5, static_cast<int32_t*>(nullptr), rl.data(), &n), 0.0);
  CHECK_EQ(n, 0);
}

TEST_CASE("[loopus] train ops: softplus, SiLU, BCE-with-logits and their derivatives match the reference") {
  const double zs[] = {-800, -40, -20.5, -3, -1e-3, 0, 1e-3, 0.7, 3, 19.99, 20, 20.01, 40, 800};
  auto agree = [](double got, double want, double tol) {
    return std::abs(got - want) <= tol * std::abs(want) + 1e-300;
  };
  double worst_f = 0, worst_d = 0;
  auto track = [](double& worst, double got, double want) {
    if (want != 0) worst = std::max(worst, std::abs(got - want) / std::abs(want));
  };
  for (double z : zs) {
    CAPTURE(z);
    const float zf = float(z);
    CHECK(agree(kern::softplus(zf), ref::softplus(zf), 1e-6));  // f32: a few ulp of log1p / exp
    CHECK(agree(kern::softplus_grad(zf), ref::softplus_grad(zf), 1e-6));
    CHECK(agree(kern::softplus(z), ref::softplus(z), 1e-14));
    CHECK(agree(kern::softplus_grad(z), ref::softplus_grad(z), 1e-14));
    CHECK(agree(loopus::train::silu(z), ref::silu(z), 1e-14));
    CHECK(agree(loopus::train::silu_grad(z), ref::silu_grad(z), 1e-14));
    track(worst_f, kern::softplus(zf), ref::softplus(zf));
    track(worst_f, kern::softplus_grad(zf), ref::softplus_grad(zf));
    track(worst_d, kern::softplus(z), ref::softplus(z));
    track(worst_d, kern::softplus_grad(z), ref::softplus_grad(z));
    track(worst_d, loopus::train::silu(z), ref::silu(z));
    track(worst_d, loopus::train::silu_grad(z), ref::silu_grad(z));
    for (double t : {0.0, 0.3, 1.0}) {
      CAPTURE(t);
      // two formulas: kern max(x,0) − x·t + log1p(e^−|x|), ref t·sp(−x) + (1 − t)·sp(x)
      CHECK(agree(loopus::train::bce_with_logits(z, t), ref::bce_with_logits(z, t), 1e-13));
      CHECK(agree(loopus::train::bce_with_logits_grad(z, t), ref::bce_with_logits_grad(z, t), 1e-13));
      track(worst_d, loopus::train::bce_with_logits(z, t), ref::bce_with_logits(z, t));
      track(worst_d, loopus::train::bce_with_logits_grad(z, t), ref::bce_with_logits_grad(z, t));
    }
  }
  report("scalar (softplus, grad) f32 vs ref", worst_f);
  report("scalar (softplus, silu, bce, grads) f64 vs ref", worst_d);
  // torch's threshold: linear above 20, gradient exactly 1
  CHECK_EQ(ref::softplus(25.0), 25.0);
  CHECK_EQ(ref::softplus_grad(25.0), 1.0);
  CHECK_EQ(ref::softplus(20.0), doctest::Approx(20.0 + std::exp(-20.0)).epsilon(1e-15));
  CHECK_EQ(ref::bce_with_logits(0.0, 0.5), doctest::Approx(std::log(2.0)));
}

// ============================================================== reference backward against finite differences

TEST_CASE("[loopus] train ops: reference linear backward (dx, dW) matches finite differences") {
  const int64_t N = 5, in = 7, out = 3;
  auto W = rand_vec(sz(out * in), 200), x = rand_vec(sz(N * in), 201);
  const auto w = rand_vec(sz(N * out), 202);
  std::vector<double> y(sz(N * out));
  auto loss = [&] {
    ref::linear(W.data(), out, in, x.data(), N, y.data());
    return dotv(w, y);
  };
  std::vector<double> dx(sz(N * in)), dW(sz(out * in), 0.0);
  ref::linear_dx(W.data(), out, in, w.data(), N, dx.data(), false);
  ref::linear_dw(x.data(), in, w.data(), out, N, dW.data());
  expect_grad("linear_dx", dx, numeric_grad(x.data(), x.size(), loss));
  expect_grad("linear_dw", dW, numeric_grad(W.data(), W.size(), loss));
}

TEST_CASE("[loopus] train ops: reference rmsnorm backward (dx, dg) matches finite differences") {
  const int64_t N = 4, d = 9;
  auto x = rand_vec(sz(N * d), 210, -2, 2), g = rand_vec(sz(d), 211, 0.5, 1.5);
  const auto w = rand_vec(sz(N * d), 212);
  std::vector<double> y(x.size()), r(sz(N));
  auto loss = [&] {
    ref::rmsnorm(x.data(), g.data(), N, d, 1e-5, y.data(), r.data());
    return dotv(w, y);
  };
  loss();
  std::vector<double> dx(x.size()), dg(sz(d), 0.0);
  ref::rmsnorm_bwd(x.data(), g.data(), r.data(), w.data(), N, d, dx.data(), dg.data(), false);
  expect_grad("rmsnorm_bwd dx", dx, numeric_grad(x.data(), x.size(), loss));
  expect_grad("rmsnorm_bwd dg", dg, numeric_grad(g.data(), g.size(), loss));
}

TEST_CASE("[loopus] train ops: reference rope inverse is the transpose (backward) for both styles and longrope") {
  const int64_t B = 2, T = 5, N = B * T;
  const int H = 3, hd = 8, n_rot = 6;
  const std::vector<float> factors = {1.f, 2.5f, 7.f};
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf})
    for (const float mscale : {1.f, 1.2f}) {
      CAPTURE(int(style));
      CAPTURE(mscale);
      std::vector<double> cs(sz(T * n_rot / 2)), sn(cs.size());
      ref::rope_tables(T, n_rot, 10000.f, cs.data(), sn.data(), mscale == 1.f ? nullptr : factors.data(), mscale);
      auto x = rand_vec(sz(N * H * hd), 220);
      const auto w = rand_vec(x.size(), 221);
      std::vector<double> y(x.size());
      auto loss = [&] {
        y = x;
        ref::rope(y.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), false);
        return dotv(w, y);
      };
      std::vector<double> dx = w;
      ref::rope(dx.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), true);
      expect_grad(mscale == 1.f ? "rope inverse" : "rope inverse (longrope, mscale)", dx,
                  numeric_grad(x.data(), x.size(), loss));
      if (mscale == 1.f) {  // orthogonal: the transpose is the inverse
        loss();
        ref::rope(y.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), true);
        CHECK_LT(rel_err(y, x), 1e-14);
      }
    }
}

TEST_CASE("[loopus] train ops: reference causal GQA attention backward (dq, dk, dv) matches finite differences") {
  const int64_t B = 2, T = 9, N = B * T;
  const int H = 4, KV = 2, hd = 3;
  auto q = rand_vec(sz(N * H * hd), 230, -2, 2), k = rand_vec(sz(N * KV * hd), 231, -2, 2);
  auto v = rand_vec(k.size(), 232);
  const auto w = rand_vec(q.size(), 233);
  std::vector<double> out(q.size()), lse(sz(B * H * T));
  auto loss = [&] {
    ref::attention_fwd(q.data(), k.data(), v.data(), B, T, H, KV, hd, out.data(), lse.data());
    return dotv(w, out);
  };
  loss();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  ref::attention_bwd(q.data(), k.data(), v.data(), out.data(), lse.data(), w.data(), B, T, H, KV, hd, dq.data(),
                     dk.data(), dv.data());
  expect_grad("attention_bwd dq", dq, numeric_grad(q.data(), q.size(), loss));
  expect_grad("attention_bwd dk", dk, numeric_grad(k.data(), k.size(), loss));
  expect_grad("attention_bwd dv", dv, numeric_grad(v.data(), v.size(), loss));
  // causality and lse, straight from the definition: row 0 sees key 0 only; lse of row i is log Σ_{j ≤ i} e^s
  loss();
  for (int h = 0; h < H; ++h) {
    for (int e = 0; e < hd; ++e) CHECK_EQ(out[sz(h * hd + e)], doctest::Approx(v[sz((h / 2) * hd + e)]).epsilon(1e-14));
    const int64_t b = 1, i = 4;
    double z = 0;
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int e = 0; e < hd; ++e)
        s += q[sz((b * T + i) * H * hd + h * hd + e)] * k[sz((b * T + j) * KV * hd + (h / 2) * hd + e)];
      z += std::exp(s / std::sqrt(double(hd)));
    }
    CHECK_EQ(lse[sz((b * H + h) * T + i)], doctest::Approx(std::log(z)).epsilon(1e-14));
  }
}

TEST_CASE("[loopus] train ops: reference swiglu backward (dg, du) matches finite differences") {
  const int64_t n = 13;
  auto g = rand_vec(sz(n), 240, -6, 6), u = rand_vec(sz(n), 241);
  const auto w = rand_vec(sz(n), 242);
  std::vector<double> act(sz(n));
  auto loss = [&] {
    ref::swiglu(g.data(), u.data(), n, act.data());
    return dotv(w, act);
  };
  std::vector<double> dg(sz(n)), du(sz(n));
  ref::swiglu_bwd(g.data(), u.data(), w.data(), n, dg.data(), du.data());
  expect_grad("swiglu_bwd dg", dg, numeric_grad(g.data(), g.size(), loss));
  expect_grad("swiglu_bwd du", du, numeric_grad(u.data(), u.size(), loss));
}

TEST_CASE("[loopus] train ops: reference layernorm backward (dx, dw, db) matches finite differences") {
  const int64_t N = 3, d = 11;
  auto x = rand_vec(sz(N * d), 250, -2, 3), lw = rand_vec(sz(d), 251, 0.5, 1.5), lb = rand_vec(sz(d), 252);
  const auto w = rand_vec(sz(N * d), 253);
  std::vector<double> y(x.size()), xh(x.size()), r(sz(N));
  auto loss = [&] {
    ref::layernorm(x.data(), lw.data(), lb.data(), N, d, 1e-5, y.data(), xh.data(), r.data());
    return dotv(w, y);
  };
  loss();
  std::vector<double> dx(x.size()), dw(sz(d), 0.0), db(sz(d), 0.0);
  ref::layernorm_bwd(xh.data(), r.data(), lw.data(), w.data(), N, d, dx.data(), dw.data(), db.data());
  expect_grad("layernorm_bwd dx", dx, numeric_grad(x.data(), x.size(), loss));
  expect_grad("layernorm_bwd dw", dw, numeric_grad(lw.data(), lw.size(), loss));
  expect_grad("layernorm_bwd db", db, numeric_grad(lb.data(), lb.size(), loss));
}

TEST_CASE("[loopus] train ops: reference cross_entropy gradient matches finite differences of its loss") {
  const int64_t N = 6, V = 7;
  auto x = rand_vec(sz(N * V), 260, -3, 3);
  const std::vector<int32_t> tgt = {3, -1, 0, 6, -100, 2};
  for (const double gs : {0.25, 0.37}) {  // 0.25 = 1/n: the mean NLL's gradient
    CAPTURE(gs);
    std::vector<double> buf(x.size()), rl(sz(N));
    auto loss = [&] {
      buf = x;
      return gs * ref::cross_entropy(buf.data(), tgt.data(), N, V, 0.0, static_cast<int32_t*>(nullptr), rl.data(),
                                     static_cast<int64_t*>(nullptr));
    };
    buf = x;
    int64_t n = 0;
    ref::cross_entropy(buf.data(), tgt.data(), N, V, gs, static_cast<int32_t*>(nullptr), rl.data(), &n);
    CHECK_EQ(n, 4);
    const std::vector<double> grad = buf;
    expect_grad(gs == 0.25 ? "cross_entropy dlogits (mean)" : "cross_entropy dlogits", grad,
                numeric_grad(x.data(), x.size(), loss));
    for (int64_t j = 0; j < V; ++j) CHECK_EQ(grad[sz(V + j)], 0.0);
  }
  // the mean NLL, torch's reduction="mean" with ignore_index, from the definition
  std::vector<double> buf = x, rl(sz(N));
  int64_t n = 0;
  const double mean = ref::cross_entropy(buf.data(), tgt.data(), N, V, 0.0, static_cast<int32_t*>(nullptr), rl.data(),
                                         &n) /
                      double(n);
  double want = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (tgt[sz(r)] < 0) continue;
    double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(x[sz(r * V + j)]);
    want += -std::log(std::exp(x[sz(r * V + tgt[sz(r)])]) / z);
  }
  CHECK_EQ(mean, doctest::Approx(want / 4).epsilon(1e-13));
}

TEST_CASE("[loopus] train ops: reference softplus, SiLU and BCE-with-logits derivatives match finite differences") {
  std::vector<double> an, fd;
  for (double z : {-30.0, -3.0, -0.4, 0.0, 0.7, 4.0, 19.0, 25.0}) {
    double zz = z;
    an.push_back(ref::softplus_grad(z));
    fd.push_back(numeric_grad(&zz, 1, [&] { return ref::softplus(zz); })[0]);
    an.push_back(ref::silu_grad(z));
    fd.push_back(numeric_grad(&zz, 1, [&] { return ref::silu(zz); })[0]);
    for (double t : {0.0, 0.3, 1.0}) {
      an.push_back(ref::bce_with_logits_grad(z, t));
      fd.push_back(numeric_grad(&zz, 1, [&] { return ref::bce_with_logits(zz, t); })[0]);
    }
  }
  expect_grad("softplus / silu / bce grads", an, fd);
}
