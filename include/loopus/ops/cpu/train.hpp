// TrainOps<Cpu>: the training path's kernels (ops/cpu/train_kernels.hpp) on spans of Cpu memory.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train_kernels.hpp"

namespace loopus {

/// The Cpu training kernels: Eigen / OpenBLAS GEMMs, OpenMP over rows and
/// heads, AVX-512/AVX2 for the f32 elementwise maths. The contract of every
/// operation is in ops/concept.hpp (TrainOpsFor); scalar S is float to train
/// and double for the gradient checks. Host-side arguments (ids, targets,
/// row indices, argmax and row losses) are host arrays on every backend.
template <>
struct TrainOps<Cpu> {
  template <class S>
  using Sp = Span<Cpu, S>;
  /// Read-only spans are not deduced: S comes from the written span (a
  /// Span<Cpu, S> converts to CS<S> at the call).
  template <class S>
  using CS = std::type_identity_t<CSpan<Cpu, S>>;
  template <class S>
  using Val = std::type_identity_t<S>;

  /// Threads the kernels use (OpenMP's maximum).
  static int threads() { return cpu::kern::max_threads(); }

  // ---- transfers and host access
  template <class S>
  static void upload(const S* src, Sp<S> dst) {
    if (dst.size()) std::memcpy(dst.p_, src, size_t(dst.size()) * sizeof(S));
  }
  template <class S>
  static void download(CS<S> src, S* dst) {
    if (src.size()) std::memcpy(dst, src.p_, size_t(src.size()) * sizeof(S));
  }
  template <class S>
  static void copy(Sp<S> dst, CS<S> src) {
    LOOPUS_ASSERT(dst.size() == src.size());
    if (dst.size() && dst.p_ != src.p_) std::memcpy(dst.p_, src.p_, size_t(dst.size()) * sizeof(S));
  }
  template <class S>
  static void fill(Sp<S> x, Val<S> v) {
    std::fill(x.p_, x.p_ + x.size(), v);
  }
  /// Host address of Cpu memory (optional in the contract: a host backend lets
  /// TrainModel export f32 weights as views of its master copies).
  template <class T>
  static T* data(Span<Cpu, T> x) {
    return x.p_;
  }
  /// A span over caller host memory (Cpu memory is host memory; tests and
  /// host code hand their own arrays to the blocks through it).
  template <class S>
  static Sp<S> borrow_host(S* p, int64_t n) {
    return Sp<S>(p, n);
  }

  // ---- forward
  template <class S>
  static void embed(const Weight& E, const int32_t* ids, int64_t N, Sp<S> out) {
    LOOPUS_ASSERT(out.size() >= N * E.cols);
    if constexpr (std::is_same_v<S, float>) {
      Ops<Cpu>::embed(E, ids, N, out.p_);
    } else {
      for (int64_t t = 0; t < N; ++t)
        for (int64_t c = 0; c < E.cols; ++c) out.p_[t * E.cols + c] = S(E.at(ids[t], c));
    }
  }
  template <class S>
  static void linear(CS<S> W, int64_t out, int64_t in, CS<S> x, int64_t N, Sp<S> y) {
    LOOPUS_ASSERT(W.size() == out * in && x.size() >= N * in && y.size() >= N * out);
    cpu::kern::linear(W.p_, out, in, x.p_, N, y.p_);
  }
  template <class S>
  static void rmsnorm(CS<S> x, CS<S> g, int64_t N, int64_t d, double eps, Sp<S> y, Sp<S> rstd) {
    LOOPUS_ASSERT(x.size() >= N * d && g.size() == d && y.size() >= N * d && rstd.size() >= N);
    cpu::kern::rmsnorm(x.p_, g.p_, N, d, eps, y.p_, rstd.p_);
  }
  template <class S>
  static void rope_tables(int64_t T, int n_rot, float theta, Sp<S> cs, Sp<S> sn, const float* freq_factors,
                          float mscale) {
    LOOPUS_ASSERT(cs.size() >= T * (n_rot / 2) && sn.size() >= T * (n_rot / 2));
    cpu::kern::rope_tables(T, n_rot, theta, cs.p_, sn.p_, freq_factors, mscale);
  }
  template <class S>
  static void rope(Sp<S> x, int64_t N, int64_t T, int n_head, int head_dim, int n_rot, RopeStyle style, CS<S> cs,
                   CS<S> sn, bool inverse) {
    LOOPUS_ASSERT(x.size() >= N * n_head * head_dim);
    cpu::kern::rope(x.p_, N, T, n_head, head_dim, n_rot, style, cs.p_, sn.p_, inverse);
  }
  /// Scratch elements attention_fwd / attention_bwd need for sequences of T tokens.
  static int64_t attention_scratch(int64_t T, int hd) {
    return cpu::kern::attention_scratch(T, hd, cpu::kern::max_threads());
  }
  template <class S>
  static void attention_fwd(CS<S> q, CS<S> k, CS<S> v, int64_t B, int64_t T, int H, int KV, int hd, Sp<S> out,
                            Sp<S> lse, Sp<S> scratch) {
    LOOPUS_ASSERT(out.size() >= B * T * H * hd && lse.size() >= B * H * T);
    cpu::kern::attention_fwd(q.p_, k.p_, v.p_, B, T, H, KV, hd, out.p_, lse.p_, scratch.p_);
  }
  template <class S>
  static void swiglu(CS<S> g, CS<S> u, Sp<S> act) {
    LOOPUS_ASSERT(g.size() == u.size() && act.size() == g.size());
    cpu::kern::swiglu(g.p_, u.p_, g.size(), act.p_);
  }
  template <class S>
  static void add(Sp<S> y, CS<S> x) {
    LOOPUS_ASSERT(y.size() == x.size());
    if constexpr (std::is_same_v<S, float>) {
      Ops<Cpu>::add(y.p_, x.p_, y.size());
    } else {
      for (int64_t i = 0; i < y.size(); ++i) y.p_[i] += x.p_[i];
    }
  }
  /// out = a − b
  template <class S>
  static void sub(CS<S> a, CS<S> b, Sp<S> out) {
    LOOPUS_ASSERT(a.size() == b.size() && out.size() == a.size());
    for (int64_t i = 0; i < a.size(); ++i) out.p_[i] = a.p_[i] - b.p_[i];
  }
  /// x *= c
  template <class S>
  static void scale(Sp<S> x, Val<S> c) {
    for (int64_t i = 0; i < x.size(); ++i) x.p_[i] *= c;
  }
  template <class S>
  static void gate_mix(CS<S> A_log, CS<S> bias, Sp<S> z, CS<S> p, CS<S> h, Sp<S> a, Sp<S> out, int64_t N, int64_t d) {
    LOOPUS_ASSERT(A_log.size() == d && bias.size() == d && z.size() >= N * d && out.size() >= N * d);
    cpu::kern::gate_mix(A_log.p_, bias.p_, z.p_, p.p_, h.p_, a.p_, out.p_, N, d);
  }
  template <class S>
  static void layernorm(CS<S> x, CS<S> w, CS<S> b, int64_t N, int64_t d, double eps, Sp<S> y, Sp<S> xhat, Sp<S> rstd) {
    LOOPUS_ASSERT(x.size() >= N * d && w.size() == d && b.size() == d && rstd.size() >= N);
    cpu::kern::layernorm(x.p_, w.p_, b.p_, N, d, eps, y.p_, xhat.p_, rstd.p_);
  }
  template <class S>
  static void row_dot(CS<S> y, CS<S> w, CS<S> bias, int64_t N, int64_t d, Sp<S> out) {
    LOOPUS_ASSERT(y.size() >= N * d && w.size() == d && bias.size() == 1 && out.size() >= N);
    cpu::kern::row_dot(y.p_, w.p_, bias.p_, N, d, out.p_);
  }
  template <class S>
  static void gather_rows_diff(CS<S> a, CS<S> b, const int64_t* rows, int64_t n, int64_t d, Sp<S> out) {
    LOOPUS_ASSERT(out.size() >= n * d);
    for (int64_t i = 0; i < n; ++i) LOOPUS_ASSERT(rows[i] >= 0 && (rows[i] + 1) * d <= a.size());
    cpu::kern::gather_rows_diff(a.p_, b.p_, rows, n, d, out.p_);
  }
  template <class S>
  static void scatter_rows_add(Sp<S> x, const int64_t* rows, int64_t n, int64_t d, CS<S> src, Val<S> sign) {
    for (int64_t i = 0; i < n; ++i) LOOPUS_ASSERT(rows[i] >= 0 && (rows[i] + 1) * d <= x.size());
    cpu::kern::scatter_rows_add(x.p_, rows, n, d, src.p_, sign);
  }
  template <class S>
  static double cross_entropy(Sp<S> logits, const int32_t* target, int64_t N, int64_t V, double grad_scale,
                              int32_t* argmax, double* row_loss, int64_t* n_counted) {
    LOOPUS_ASSERT(logits.size() >= N * V);
    return cpu::kern::cross_entropy(logits.p_, target, N, V, grad_scale, argmax, row_loss, n_counted);
  }

  // ---- backward (an empty gradient span means "frozen: no gradient")
  template <class S>
  static void linear_dx(CS<S> W, int64_t out, int64_t in, CS<S> dy, int64_t N, Sp<S> dx, bool accumulate) {
    LOOPUS_ASSERT(W.size() == out * in && dy.size() >= N * out && dx.size() >= N * in);
    if (N > 0) cpu::kern::linear_dx(W.p_, out, in, dy.p_, N, dx.p_, accumulate);
  }
  template <class S>
  static void linear_dw(CS<S> x, int64_t in, CS<S> dy, int64_t out, int64_t N, Sp<S> dW) {
    LOOPUS_ASSERT(x.size() >= N * in && dy.size() >= N * out && dW.size() == out * in);
    if (N > 0) cpu::kern::linear_dw(x.p_, in, dy.p_, out, N, dW.p_);
  }
  template <class S>
  static void rmsnorm_bwd(CS<S> x, CS<S> g, CS<S> rstd, CS<S> dy, int64_t N, int64_t d, Sp<S> dx, Sp<S> dg,
                          bool accumulate) {
    LOOPUS_ASSERT(x.size() >= N * d && dy.size() >= N * d && dx.size() >= N * d && rstd.size() >= N);
    cpu::kern::rmsnorm_bwd(x.p_, g.p_, rstd.p_, dy.p_, N, d, dx.p_, dg.empty() ? nullptr : dg.p_, accumulate);
  }
  template <class S>
  static void attention_bwd(CS<S> q, CS<S> k, CS<S> v, CS<S> out, CS<S> lse, CS<S> dout, int64_t B, int64_t T, int H,
                            int KV, int hd, Sp<S> dq, Sp<S> dk, Sp<S> dv, Sp<S> scratch) {
    LOOPUS_ASSERT(dq.size() >= B * T * H * hd && dk.size() >= B * T * KV * hd && dv.size() >= B * T * KV * hd);
    cpu::kern::attention_bwd(q.p_, k.p_, v.p_, out.p_, lse.p_, dout.p_, B, T, H, KV, hd, dq.p_, dk.p_, dv.p_,
                             scratch.p_);
  }
  template <class S>
  static void swiglu_bwd(CS<S> g, CS<S> u, CS<S> dact, Sp<S> dg, Sp<S> du) {
    LOOPUS_ASSERT(g.size() == u.size() && dact.size() == g.size() && dg.size() == g.size() && du.size() == g.size());
    cpu::kern::swiglu_bwd(g.p_, u.p_, dact.p_, g.size(), dg.p_, du.p_);
  }
  template <class S>
  static void gate_mix_bwd(CS<S> dout, CS<S> p, CS<S> h, CS<S> z, CS<S> a, CS<S> A_log, Sp<S> dp, Sp<S> dh, Sp<S> dz,
                           Sp<S> gA, int64_t N, int64_t d) {
    LOOPUS_ASSERT(dout.size() >= N * d && dp.size() >= N * d && dh.size() >= N * d && dz.size() >= N * d);
    cpu::kern::gate_mix_bwd(dout.p_, p.p_, h.p_, z.p_, a.p_, A_log.p_, dp.p_, dh.p_, dz.p_,
                            gA.empty() ? nullptr : gA.p_, N, d);
  }
  template <class S>
  static void col_sum_add(CS<S> x, int64_t N, int64_t d, Sp<S> acc) {
    LOOPUS_ASSERT(x.size() >= N * d && acc.size() == d);
    cpu::kern::col_sum_add(x.p_, N, d, acc.p_);
  }
  template <class S>
  static void layernorm_bwd(CS<S> xhat, CS<S> rstd, CS<S> w, CS<S> dy, int64_t N, int64_t d, Sp<S> dx, Sp<S> dw,
                            Sp<S> db) {
    LOOPUS_ASSERT(xhat.size() >= N * d && dy.size() >= N * d && dx.size() >= N * d);
    cpu::kern::layernorm_bwd(xhat.p_, rstd.p_, w.p_, dy.p_, N, d, dx.p_, dw.empty() ? nullptr : dw.p_,
                             db.empty() ? nullptr : db.p_);
  }
  template <class S>
  static void row_dot_bwd(CS<S> dout, CS<S> w, CS<S> y, int64_t N, int64_t d, Sp<S> dy, Sp<S> gw, Sp<S> gb) {
    LOOPUS_ASSERT(dout.size() >= N && y.size() >= N * d && dy.size() >= N * d);
    cpu::kern::row_dot_bwd(dout.p_, w.p_, y.p_, N, d, dy.p_, gw.empty() ? nullptr : gw.p_,
                           gb.empty() ? nullptr : gb.p_);
  }

  // ---- optimizer
  template <class T>
  static double sum_squares(Span<Cpu, T> x) {
    return cpu::kern::sum_squares(x.p_, x.size());
  }
  template <class S>
  static void adamw(Sp<S> w, Sp<S> g, Sp<S> m, Sp<S> v, const AdamWStep& st) {
    LOOPUS_ASSERT(g.size() == w.size() && m.size() == w.size() && v.size() == w.size());
    cpu::kern::adamw(w.p_, g.p_, m.p_, v.p_, w.size(), S(st.beta1), S(st.beta2), S(st.eps), S(st.step_size),
                     S(st.bc2_sqrt), st.decay, S(st.keep), S(st.scale));
  }
};

static_assert(TrainOpsFor<Cpu, float> && TrainOpsFor<Cpu, double>,
              "TrainOps<Cpu> must provide every training operation of ops/concept.hpp");

}  // namespace loopus
