// TrainOps<Reference>: the training path's scalar oracle (ops/reference/train_ops.hpp) on opaque Reference spans.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/ops/reference/train_ops.hpp"

namespace loopus {

/// The Reference training kernels: the plain loops of loopus::ref_train
/// (double accumulation, one rounding per output) behind the same span
/// interface as TrainOps<Cpu>. Reference storage is opaque outside this
/// struct and Ops<Reference>, so a LoopusTrainer<Reference> that compiles
/// reaches activations, parameters, gradients and moments only through these
/// functions. Contracts: ops/concept.hpp (TrainOpsFor).
template <>
struct TrainOps<Reference> {
  template <class S>
  using Sp = Span<Reference, S>;
  /// Read-only spans are not deduced: S comes from the written span (a
  /// Span<Reference, S> converts to CS<S> at the call).
  template <class S>
  using CS = std::type_identity_t<CSpan<Reference, S>>;
  template <class S>
  using Val = std::type_identity_t<S>;

  /// Threads the kernels use (the oracle runs on the calling thread).
  static int threads() { return 1; }

  // ---- transfers
  template <class S>
  static void upload(const S* src, Sp<S> dst) {
    std::copy(src, src + dst.size(), dst.p_);
  }
  template <class S>
  static void download(CS<S> src, S* dst) {
    std::copy(src.p_, src.p_ + src.size(), dst);
  }
  template <class S>
  static void copy(Sp<S> dst, CS<S> src) {
    LOOPUS_ASSERT(dst.size() == src.size());
    std::copy(src.p_, src.p_ + src.size(), dst.p_);
  }
  template <class S>
  static void fill(Sp<S> x, Val<S> v) {
    std::fill(x.p_, x.p_ + x.size(), v);
  }

  // ---- forward
  template <class S>
  static void embed(const Weight& E, const int32_t* ids, int64_t N, Sp<S> out) {
    LOOPUS_ASSERT(out.size() >= N * E.cols);
    for (int64_t t = 0; t < N; ++t)
      for (int64_t c = 0; c < E.cols; ++c) out.p_[t * E.cols + c] = S(E.at(ids[t], c));
  }
  template <class S>
  static void linear(CS<S> W, int64_t out, int64_t in, CS<S> x, int64_t N, Sp<S> y) {
    LOOPUS_ASSERT(W.size() == out * in && x.size() >= N * in && y.size() >= N * out);
    ref_train::linear(W.p_, out, in, x.p_, N, y.p_);
  }
  template <class S>
  static void rmsnorm(CS<S> x, CS<S> g, int64_t N, int64_t d, double eps, Sp<S> y, Sp<S> rstd) {
    LOOPUS_ASSERT(x.size() >= N * d && g.size() == d && y.size() >= N * d && rstd.size() >= N);
    ref_train::rmsnorm(x.p_, g.p_, N, d, eps, y.p_, rstd.p_);
  }
  template <class S>
  static void rope_tables(int64_t T, int n_rot, float theta, Sp<S> cs, Sp<S> sn, const float* freq_factors,
                          float mscale) {
    LOOPUS_ASSERT(cs.size() >= T * (n_rot / 2) && sn.size() >= T * (n_rot / 2));
    ref_train::rope_tables(T, n_rot, theta, cs.p_, sn.p_, freq_factors, mscale);
  }
  template <class S>
  static void rope(Sp<S> x, int64_t N, int64_t T, int n_head, int head_dim, int n_rot, RopeStyle style, CS<S> cs,
                   CS<S> sn, bool inverse) {
    LOOPUS_ASSERT(x.size() >= N * n_head * head_dim);
    ref_train::rope(x.p_, N, T, n_head, head_dim, n_rot, style, cs.p_, sn.p_, inverse);
  }
  static int64_t attention_scratch(int64_t, int) { return 0; }
  template <class S>
  static void attention_fwd(CS<S> q, CS<S> k, CS<S> v, int64_t B, int64_t T, int H, int KV, int hd, Sp<S> out,
                            Sp<S> lse, Sp<S>) {
    LOOPUS_ASSERT(out.size() >= B * T * H * hd && lse.size() >= B * H * T);
    ref_train::attention_fwd(q.p_, k.p_, v.p_, B, T, H, KV, hd, out.p_, lse.p_);
  }
  template <class S>
  static void swiglu(CS<S> g, CS<S> u, Sp<S> act) {
    LOOPUS_ASSERT(g.size() == u.size() && act.size() == g.size());
    ref_train::swiglu(g.p_, u.p_, g.size(), act.p_);
  }
  template <class S>
  static void add(Sp<S> y, CS<S> x) {
    LOOPUS_ASSERT(y.size() == x.size());
    for (int64_t i = 0; i < y.size(); ++i) y.p_[i] = S(double(y.p_[i]) + double(x.p_[i]));
  }
  template <class S>
  static void sub(CS<S> a, CS<S> b, Sp<S> out) {
    LOOPUS_ASSERT(a.size() == b.size() && out.size() == a.size());
    for (int64_t i = 0; i < a.size(); ++i) out.p_[i] = S(double(a.p_[i]) - double(b.p_[i]));
  }
  template <class S>
  static void scale(Sp<S> x, Val<S> c) {
    for (int64_t i = 0; i < x.size(); ++i) x.p_[i] = S(double(x.p_[i]) * double(c));
  }
  /// z += bias; a = exp(−softplus(z)·exp(A_log)); out = a·p + (1 − a)·h, in double per element.
  template <class S>
  static void gate_mix(CS<S> A_log, CS<S> bias, Sp<S> z, CS<S> p, CS<S> h, Sp<S> a, Sp<S> out, int64_t N, int64_t d) {
    LOOPUS_ASSERT(A_log.size() == d && bias.size() == d && z.size() >= N * d && out.size() >= N * d);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < d; ++c) {
        const int64_t i = n * d + c;
        z.p_[i] = S(double(z.p_[i]) + double(bias.p_[c]));
        const double ai = std::exp(-ref_train::softplus(double(z.p_[i])) * std::exp(double(A_log.p_[c])));
        a.p_[i] = S(ai);
        out.p_[i] = S(ai * double(p.p_[i]) + (1.0 - ai) * double(h.p_[i]));
      }
  }
  template <class S>
  static void layernorm(CS<S> x, CS<S> w, CS<S> b, int64_t N, int64_t d, double eps, Sp<S> y, Sp<S> xhat, Sp<S> rstd) {
    LOOPUS_ASSERT(x.size() >= N * d && w.size() == d && b.size() == d && rstd.size() >= N);
    ref_train::layernorm(x.p_, w.p_, b.p_, N, d, eps, y.p_, xhat.p_, rstd.p_);
  }
  template <class S>
  static void row_dot(CS<S> y, CS<S> w, CS<S> bias, int64_t N, int64_t d, Sp<S> out) {
    LOOPUS_ASSERT(y.size() >= N * d && w.size() == d && bias.size() == 1 && out.size() >= N);
    for (int64_t n = 0; n < N; ++n) {
      double s = double(bias.p_[0]);
      for (int64_t i = 0; i < d; ++i) s += double(w.p_[i]) * double(y.p_[n * d + i]);
      out.p_[n] = S(s);
    }
  }
  template <class S>
  static void gather_rows_diff(CS<S> a, CS<S> b, const int64_t* rows, int64_t n, int64_t d, Sp<S> out) {
    LOOPUS_ASSERT(out.size() >= n * d);
    for (int64_t i = 0; i < n; ++i) {
      LOOPUS_ASSERT(rows[i] >= 0 && (rows[i] + 1) * d <= a.size());
      for (int64_t c = 0; c < d; ++c)
        out.p_[i * d + c] = S(double(a.p_[rows[i] * d + c]) - double(b.p_[rows[i] * d + c]));
    }
  }
  template <class S>
  static void scatter_rows_add(Sp<S> x, const int64_t* rows, int64_t n, int64_t d, CS<S> src, Val<S> sign) {
    for (int64_t i = 0; i < n; ++i) {
      LOOPUS_ASSERT(rows[i] >= 0 && (rows[i] + 1) * d <= x.size());
      for (int64_t c = 0; c < d; ++c)
        x.p_[rows[i] * d + c] = S(double(x.p_[rows[i] * d + c]) + double(sign) * double(src.p_[i * d + c]));
    }
  }
  template <class S>
  static double cross_entropy(Sp<S> logits, const int32_t* target, int64_t N, int64_t V, double grad_scale,
                              int32_t* argmax, double* row_loss, int64_t* n_counted) {
    LOOPUS_ASSERT(logits.size() >= N * V);
    return ref_train::cross_entropy(logits.p_, target, N, V, grad_scale, argmax, row_loss, n_counted);
  }

  // ---- backward (an empty gradient span: frozen, no gradient)
  template <class S>
  static void linear_dx(CS<S> W, int64_t out, int64_t in, CS<S> dy, int64_t N, Sp<S> dx, bool accumulate) {
    LOOPUS_ASSERT(W.size() == out * in && dy.size() >= N * out && dx.size() >= N * in);
    ref_train::linear_dx(W.p_, out, in, dy.p_, N, dx.p_, accumulate);
  }
  template <class S>
  static void linear_dw(CS<S> x, int64_t in, CS<S> dy, int64_t out, int64_t N, Sp<S> dW) {
    LOOPUS_ASSERT(x.size() >= N * in && dy.size() >= N * out && dW.size() == out * in);
    ref_train::linear_dw(x.p_, in, dy.p_, out, N, dW.p_);
  }
  template <class S>
  static void rmsnorm_bwd(CS<S> x, CS<S> g, CS<S> rstd, CS<S> dy, int64_t N, int64_t d, Sp<S> dx, Sp<S> dg,
                          bool accumulate) {
    LOOPUS_ASSERT(x.size() >= N * d && dy.size() >= N * d && dx.size() >= N * d && rstd.size() >= N);
    ref_train::rmsnorm_bwd(x.p_, g.p_, rstd.p_, dy.p_, N, d, dx.p_, dg.empty() ? nullptr : dg.p_, accumulate);
  }
  template <class S>
  static void attention_bwd(CS<S> q, CS<S> k, CS<S> v, CS<S> out, CS<S> lse, CS<S> dout, int64_t B, int64_t T, int H,
                            int KV, int hd, Sp<S> dq, Sp<S> dk, Sp<S> dv, Sp<S>) {
    LOOPUS_ASSERT(dq.size() >= B * T * H * hd && dk.size() >= B * T * KV * hd && dv.size() >= B * T * KV * hd);
    ref_train::attention_bwd(q.p_, k.p_, v.p_, out.p_, lse.p_, dout.p_, B, T, H, KV, hd, dq.p_, dk.p_, dv.p_);
  }
  template <class S>
  static void swiglu_bwd(CS<S> g, CS<S> u, CS<S> dact, Sp<S> dg, Sp<S> du) {
    LOOPUS_ASSERT(g.size() == u.size() && dact.size() == g.size() && dg.size() == g.size() && du.size() == g.size());
    ref_train::swiglu_bwd(g.p_, u.p_, dact.p_, g.size(), dg.p_, du.p_);
  }
  /// Backward of gate_mix in double per element: dp = a·dout, dh = (1 − a)·dout, dz = −A·a·(p − h)·dout·softplus'(z),
  /// gA += −softplus(z)·A·a·(p − h)·dout.
  template <class S>
  static void gate_mix_bwd(CS<S> dout, CS<S> p, CS<S> h, CS<S> z, CS<S> a, CS<S> A_log, Sp<S> dp, Sp<S> dh, Sp<S> dz,
                           Sp<S> gA, int64_t N, int64_t d) {
    LOOPUS_ASSERT(dout.size() >= N * d && dp.size() >= N * d && dh.size() >= N * d && dz.size() >= N * d);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < d; ++c) {
        const int64_t i = n * d + c;
        const double ai = double(a.p_[i]), g = double(dout.p_[i]), A = std::exp(double(A_log.p_[c]));
        const double da = g * (double(p.p_[i]) - double(h.p_[i]));
        dp.p_[i] = S(ai * g);
        dh.p_[i] = S((1.0 - ai) * g);
        if (!gA.empty()) gA.p_[c] = S(double(gA.p_[c]) - ref_train::softplus(double(z.p_[i])) * A * ai * da);
        dz.p_[i] = S(-A * ai * da * ref_train::softplus_grad(double(z.p_[i])));
      }
  }
  template <class S>
  static void col_sum_add(CS<S> x, int64_t N, int64_t d, Sp<S> acc) {
    LOOPUS_ASSERT(x.size() >= N * d && acc.size() == d);
    for (int64_t c = 0; c < d; ++c) {
      double s = double(acc.p_[c]);
      for (int64_t n = 0; n < N; ++n) s += double(x.p_[n * d + c]);
      acc.p_[c] = S(s);
    }
  }
  template <class S>
  static void layernorm_bwd(CS<S> xhat, CS<S> rstd, CS<S> w, CS<S> dy, int64_t N, int64_t d, Sp<S> dx, Sp<S> dw,
                            Sp<S> db) {
    LOOPUS_ASSERT(xhat.size() >= N * d && dy.size() >= N * d && dx.size() >= N * d);
    ref_train::layernorm_bwd(xhat.p_, rstd.p_, w.p_, dy.p_, N, d, dx.p_, dw.empty() ? nullptr : dw.p_,
                             db.empty() ? nullptr : db.p_);
  }
  template <class S>
  static void row_dot_bwd(CS<S> dout, CS<S> w, CS<S> y, int64_t N, int64_t d, Sp<S> dy, Sp<S> gw, Sp<S> gb) {
    LOOPUS_ASSERT(dout.size() >= N && y.size() >= N * d && dy.size() >= N * d);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < d; ++i) dy.p_[n * d + i] = S(double(dout.p_[n]) * double(w.p_[i]));
    if (!gw.empty())
      for (int64_t i = 0; i < d; ++i) {
        double s = double(gw.p_[i]);
        for (int64_t n = 0; n < N; ++n) s += double(dout.p_[n]) * double(y.p_[n * d + i]);
        gw.p_[i] = S(s);
      }
    if (!gb.empty()) {
      double s = double(gb.p_[0]);
      for (int64_t n = 0; n < N; ++n) s += double(dout.p_[n]);
      gb.p_[0] = S(s);
    }
  }

  // ---- optimizer
  template <class T>
  static double sum_squares(Span<Reference, T> x) {
    double ss = 0;
    for (int64_t i = 0; i < x.size(); ++i) ss += double(x.p_[i]) * double(x.p_[i]);
    return ss;
  }
  /// One AdamW update in double per element, rounded to S once per state value.
  template <class S>
  static void adamw(Sp<S> w, Sp<S> g, Sp<S> m, Sp<S> v, const AdamWStep& st) {
    LOOPUS_ASSERT(g.size() == w.size() && m.size() == w.size() && v.size() == w.size());
    for (int64_t i = 0; i < w.size(); ++i) {
      const double gi = double(g.p_[i]) * st.scale;
      double wi = double(w.p_[i]);
      if (st.decay) wi *= st.keep;
      const double mi = st.beta1 * double(m.p_[i]) + (1.0 - st.beta1) * gi;
      const double vi = st.beta2 * double(v.p_[i]) + (1.0 - st.beta2) * gi * gi;
      m.p_[i] = S(mi);
      v.p_[i] = S(vi);
      w.p_[i] = S(wi - st.step_size * mi / (std::sqrt(vi) / st.bc2_sqrt + st.eps));
      g.p_[i] = S(0);
    }
  }
};

static_assert(TrainOpsFor<Reference, float> && TrainOpsFor<Reference, double>,
              "TrainOps<Reference> must provide every training operation of ops/concept.hpp");

}  // namespace loopus
