// Differentiable blocks of a looped model: transformer layer, selective gate, q head, final norm + lm_head, with tapes.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "loopus/model/hparams.hpp"
#include "loopus/train/kernels.hpp"
#include "loopus/train/params.hpp"

namespace loopus::train {

/// Shapes of one training batch: B sequences of T tokens, N = B·T rows.
struct Dims {
  int64_t B = 0, T = 0, N = 0, d = 0, qd = 0, kvd = 0, ff = 0, V = 0;
  int H = 0, KV = 0, hd = 0, n_rot = 0;
  RopeStyle style = RopeStyle::kHalf;
  double eps = 1e-5;
  float theta = 10000.f;
  bool qk_norm = false;
  std::vector<float> rope_factors;  ///< Phi-3 longrope factors for sequences of T tokens (empty: none)
  float rope_mscale = 1.f;

  static Dims of(const HParams& hp, int64_t B, int64_t T) {
    Dims D;
    D.B = B;
    D.T = T;
    D.N = B * T;
    D.d = hp.n_embd;
    D.qd = hp.q_dim();
    D.kvd = hp.kv_dim();
    D.ff = hp.n_ff;
    D.V = hp.n_vocab;
    D.H = hp.n_head;
    D.KV = hp.n_head_kv;
    D.hd = hp.head_dim;
    D.n_rot = hp.n_rot;
    D.style = hp.rope_style;
    D.eps = hp.rms_eps;
    D.theta = hp.rope_theta;
    D.qk_norm = hp.qk_norm;
    if (const float* f = hp.rope_scaling.factors(T)) D.rope_factors.assign(f, f + hp.n_rot / 2);
    D.rope_mscale = hp.rope_scaling.mscale();
    return D;
  }
};

/// What one layer application keeps for its backward pass (all sized for N rows).
template <class S>
struct LayerTape {
  Buf<S> x;            ///< [N, d] layer input
  Buf<S> r1, r2;       ///< [N] 1/rms of the two pre-norms
  Buf<S> xn1, xn2;     ///< [N, d] normed inputs of attention and MLP
  Buf<S> q_raw, k_raw; ///< [N, qd], [N, kvd] projections before the Qwen3 q/k norm (qk_norm only)
  Buf<S> rq, rk;       ///< [N·H], [N·KV] 1/rms of the q/k norm (qk_norm only)
  Buf<S> q, k, v;      ///< after norm and RoPE: [N, qd], [N, kvd], [N, kvd]
  Buf<S> lse;          ///< [B, H, T] attention log-sum-exp per query row
  Buf<S> att;          ///< [N, qd] attention output (input of o_proj)
  Buf<S> x2;           ///< [N, d] residual stream after attention
  Buf<S> g, u;         ///< [N, ff] MLP gate and up projections

  void allocate(const Dims& D) {
    x.resize(D.N * D.d);
    r1.resize(D.N);
    r2.resize(D.N);
    xn1.resize(D.N * D.d);
    xn2.resize(D.N * D.d);
    if (D.qk_norm) {
      q_raw.resize(D.N * D.qd);
      k_raw.resize(D.N * D.kvd);
      rq.resize(D.N * D.H);
      rk.resize(D.N * D.KV);
    }
    q.resize(D.N * D.qd);
    k.resize(D.N * D.kvd);
    v.resize(D.N * D.kvd);
    lse.resize(D.B * D.H * D.T);
    att.resize(D.N * D.qd);
    x2.resize(D.N * D.d);
    g.resize(D.N * D.ff);
    u.resize(D.N * D.ff);
  }
  int64_t bytes() const {
    int64_t n = 0;
    for (const Buf<S>* b : {&x, &r1, &r2, &xn1, &xn2, &q_raw, &k_raw, &rq, &rk, &q, &k, &v, &lse, &att, &x2, &g, &u})
      n += b->size();
    return n * int64_t(sizeof(S));
  }
};

/// The selective gate's tape: inputs p (proposal) and h (state), the low-rank
/// u, the pre-softplus z and the coefficient a.
template <class S>
struct GateTape {
  Buf<S> p, h, u, z, a;
  void allocate(const Dims& D, int64_t r) {
    p.resize(D.N * D.d);
    h.resize(D.N * D.d);
    u.resize(D.N * r);
    z.resize(D.N * D.d);
    a.resize(D.N * D.d);
  }
};

/// The q head's tape for B pooled rows.
template <class S>
struct QTape {
  Buf<S> x, xhat, rstd, y, logit;
  void allocate(const Dims& D) {
    x.resize(D.B * D.d);
    xhat.resize(D.B * D.d);
    rstd.resize(D.B);
    y.resize(D.B * D.d);
    logit.resize(D.B);
  }
};

/// The final norm's tape (the logits live in the caller's [N, V] buffer).
template <class S>
struct HeadTape {
  Buf<S> x, r, xn;
  void allocate(const Dims& D) {
    x.resize(D.N * D.d);
    r.resize(D.N);
    xn.resize(D.N * D.d);
  }
};

/// Scratch shared by every block (allocated once; nothing allocates per step).
template <class S>
struct Workspace {
  Buf<S> cs, sn;        ///< RoPE tables [T, n_rot/2]
  Buf<S> attn;          ///< attention scratch, per thread
  Buf<S> dxn, dq, dk, dv, dqr, dkr, datt, dg, du, dact, act;  // layer backward
  Buf<S> gdz, gdu, gdiff;                                      // gate backward
  Buf<S> qdy, qdx;                                             // q head backward

  void allocate(const Dims& D, int64_t gate_r) {
    cs.resize(D.T * (D.n_rot / 2));
    sn.resize(D.T * (D.n_rot / 2));
    kern::rope_tables(D.T, D.n_rot, D.theta, cs.data(), sn.data(),
                      D.rope_factors.empty() ? nullptr : D.rope_factors.data(), D.rope_mscale);
    attn.resize(kern::attention_scratch(D.T, D.hd, kern::max_threads()));
    dxn.resize(D.N * D.d);
    dq.resize(D.N * D.qd);
    dk.resize(D.N * D.kvd);
    dv.resize(D.N * D.kvd);
    if (D.qk_norm) {
      dqr.resize(D.N * D.qd);
      dkr.resize(D.N * D.kvd);
    }
    datt.resize(D.N * D.qd);
    dg.resize(D.N * D.ff);
    du.resize(D.N * D.ff);
    dact.resize(D.N * D.ff);
    act.resize(D.N * D.ff);
    gdz.resize(D.N * D.d);
    gdu.resize(D.N * std::max<int64_t>(gate_r, 1));
    gdiff.resize(D.N * D.d);
    qdy.resize(D.B * D.d);
    qdx.resize(D.B * D.d);
  }
};

/// Adds g to a parameter's gradient slot only when it trains.
template <class S>
inline S* grad_of(const Param<S>* p) {
  return p && p->trainable ? const_cast<S*>(p->g.data()) : nullptr;
}

// ---------------------------------------------------------------- transformer layer

/// One pre-norm layer in place on x[N, d] (B sequences of T tokens from
/// position 0, causal attention), recording what the backward needs in tape.
template <class S>
void layer_fwd(const LayerP<S>& P, const Dims& D, Workspace<S>& ws, S* x, LayerTape<S>& t) {
  const int64_t N = D.N, d = D.d;
  std::memcpy(t.x.data(), x, size_t(N * d) * sizeof(S));
  kern::rmsnorm(x, P.attn_norm->w.data(), N, d, D.eps, t.xn1.data(), t.r1.data());
  S* qp = D.qk_norm ? t.q_raw.data() : t.q.data();
  S* kp = D.qk_norm ? t.k_raw.data() : t.k.data();
  kern::linear(P.wq->w.data(), D.qd, d, t.xn1.data(), N, qp);
  kern::linear(P.wk->w.data(), D.kvd, d, t.xn1.data(), N, kp);
  kern::linear(P.wv->w.data(), D.kvd, d, t.xn1.data(), N, t.v.data());
  if (D.qk_norm) {
    kern::rmsnorm(qp, P.q_norm->w.data(), N * D.H, D.hd, D.eps, t.q.data(), t.rq.data());
    kern::rmsnorm(kp, P.k_norm->w.data(), N * D.KV, D.hd, D.eps, t.k.data(), t.rk.data());
  }
  kern::rope(t.q.data(), N, D.T, D.H, D.hd, D.n_rot, D.style, ws.cs.data(), ws.sn.data(), false);
  kern::rope(t.k.data(), N, D.T, D.KV, D.hd, D.n_rot, D.style, ws.cs.data(), ws.sn.data(), false);
  kern::attention_fwd(t.q.data(), t.k.data(), t.v.data(), D.B, D.T, D.H, D.KV, D.hd, t.att.data(), t.lse.data(),
                      ws.attn.data());
  kern::linear(P.wo->w.data(), d, D.qd, t.att.data(), N, ws.dxn.data());
  for (int64_t i = 0; i < N * d; ++i) x[i] += ws.dxn[i];
  std::memcpy(t.x2.data(), x, size_t(N * d) * sizeof(S));
  kern::rmsnorm(x, P.ffn_norm->w.data(), N, d, D.eps, t.xn2.data(), t.r2.data());
  kern::linear(P.w_gate->w.data(), D.ff, d, t.xn2.data(), N, t.g.data());
  kern::linear(P.w_up->w.data(), D.ff, d, t.xn2.data(), N, t.u.data());
  kern::swiglu(t.g.data(), t.u.data(), N * D.ff, ws.act.data());
  kern::linear(P.w_down->w.data(), d, D.ff, ws.act.data(), N, ws.dxn.data());
  for (int64_t i = 0; i < N * d; ++i) x[i] += ws.dxn[i];
}

/// Backward of layer_fwd: dx holds dL/d(output) on entry and dL/d(input) on
/// exit. Parameter gradients are added when the layer trains.
template <class S>
void layer_bwd(const LayerP<S>& P, const Dims& D, Workspace<S>& ws, const LayerTape<S>& t, S* dx) {
  const int64_t N = D.N, d = D.d;
  // MLP: out = x2 + down(silu(g)·u)
  kern::swiglu(t.g.data(), t.u.data(), N * D.ff, ws.act.data());
  if (S* gw = grad_of(P.w_down)) kern::linear_dw(ws.act.data(), D.ff, dx, d, N, gw);
  kern::linear_dx(P.w_down->w.data(), d, D.ff, dx, N, ws.dact.data(), false);
  kern::swiglu_bwd(t.g.data(), t.u.data(), ws.dact.data(), N * D.ff, ws.dg.data(), ws.du.data());
  if (S* gw = grad_of(P.w_gate)) kern::linear_dw(t.xn2.data(), d, ws.dg.data(), D.ff, N, gw);
  if (S* gw = grad_of(P.w_up)) kern::linear_dw(t.xn2.data(), d, ws.du.data(), D.ff, N, gw);
  kern::linear_dx(P.w_gate->w.data(), D.ff, d, ws.dg.data(), N, ws.dxn.data(), false);
  kern::linear_dx(P.w_up->w.data(), D.ff, d, ws.du.data(), N, ws.dxn.data(), true);
  kern::rmsnorm_bwd(t.x2.data(), P.ffn_norm->w.data(), t.r2.data(), ws.dxn.data(), N, d, dx, grad_of(P.ffn_norm),
                    true);
  // attention: x2 = x + o_proj(attn(rope(norm(q)), rope(norm(k)), v))
  if (S* gw = grad_of(P.wo)) kern::linear_dw(t.att.data(), D.qd, dx, d, N, gw);
  kern::linear_dx(P.wo->w.data(), d, D.qd, dx, N, ws.datt.data(), false);
  kern::attention_bwd(t.q.data(), t.k.data(), t.v.data(), t.att.data(), t.lse.data(), ws.datt.data(), D.B, D.T, D.H,
                      D.KV, D.hd, ws.dq.data(), ws.dk.data(), ws.dv.data(), ws.attn.data());
  kern::rope(ws.dq.data(), N, D.T, D.H, D.hd, D.n_rot, D.style, ws.cs.data(), ws.sn.data(), true);
  kern::rope(ws.dk.data(), N, D.T, D.KV, D.hd, D.n_rot, D.style, ws.cs.data(), ws.sn.data(), true);
  const S* dq = ws.dq.data();
  const S* dk = ws.dk.data();
  if (D.qk_norm) {
    kern::rmsnorm_bwd(t.q_raw.data(), P.q_norm->w.data(), t.rq.data(), ws.dq.data(), N * D.H, D.hd, ws.dqr.data(),
                      grad_of(P.q_norm), false);
    kern::rmsnorm_bwd(t.k_raw.data(), P.k_norm->w.data(), t.rk.data(), ws.dk.data(), N * D.KV, D.hd, ws.dkr.data(),
                      grad_of(P.k_norm), false);
    dq = ws.dqr.data();
    dk = ws.dkr.data();
  }
  if (S* gw = grad_of(P.wq)) kern::linear_dw(t.xn1.data(), d, dq, D.qd, N, gw);
  if (S* gw = grad_of(P.wk)) kern::linear_dw(t.xn1.data(), d, dk, D.kvd, N, gw);
  if (S* gw = grad_of(P.wv)) kern::linear_dw(t.xn1.data(), d, ws.dv.data(), D.kvd, N, gw);
  kern::linear_dx(P.wq->w.data(), D.qd, d, dq, N, ws.dxn.data(), false);
  kern::linear_dx(P.wk->w.data(), D.kvd, d, dk, N, ws.dxn.data(), true);
  kern::linear_dx(P.wv->w.data(), D.kvd, d, ws.dv.data(), N, ws.dxn.data(), true);
  kern::rmsnorm_bwd(t.x.data(), P.attn_norm->w.data(), t.r1.data(), ws.dxn.data(), N, d, dx, grad_of(P.attn_norm),
                    true);
}

// ---------------------------------------------------------------- selective gate

/// out = a·p + (1 − a)·h with a = exp(−softplus(delta_proj(dt_input_proj(p − h))) · exp(A_log)),
/// per token and channel (method spec section 3). out may alias p or h.
template <class S>
void gate_fwd(const GateP<S>& G, const Dims& D, const S* p, const S* h, S* out, GateTape<S>& t) {
  const int64_t N = D.N, d = D.d, r = G.r;
  std::memcpy(t.p.data(), p, size_t(N * d) * sizeof(S));
  std::memcpy(t.h.data(), h, size_t(N * d) * sizeof(S));
  S* diff = t.a.data();  // p − h, overwritten by a below
  for (int64_t i = 0; i < N * d; ++i) diff[i] = t.p[i] - t.h[i];
  kern::linear(G.in_w->w.data(), r, d, diff, N, t.u.data());
  kern::linear(G.delta_w->w.data(), d, r, t.u.data(), N, t.z.data());
  const S* A_log = G.A_log->w.data();
  const S* bias = G.delta_b->w.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) {
      const int64_t i = n * d + c;
      t.z[i] += bias[c];
      const S a = std::exp(-kern::softplus(t.z[i]) * std::exp(A_log[c]));
      t.a[i] = a;
      out[i] = a * t.p[i] + (S(1) - a) * t.h[i];
    }
}

/// Backward of gate_fwd: dp = dL/dp, dh = dL/dh (overwritten) from dout.
template <class S>
void gate_bwd(const GateP<S>& G, const Dims& D, Workspace<S>& ws, const GateTape<S>& t, const S* dout, S* dp, S* dh) {
  const int64_t N = D.N, d = D.d, r = G.r;
  const S* A_log = G.A_log->w.data();
  S* dz = ws.gdz.data();
  S* gA = grad_of(G.A_log);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) {
      const int64_t i = n * d + c;
      const S a = t.a[i], diff = t.p[i] - t.h[i], A = std::exp(A_log[c]);
      const S da = dout[i] * diff;
      dp[i] = a * dout[i];
      dh[i] = (S(1) - a) * dout[i];
      // a = exp(−delta·A): da/ddelta = −A·a, da/dA_log = −delta·A·a
      const S dadelta = -A * a * da;
      if (gA) gA[c] += -kern::softplus(t.z[i]) * A * a * da;
      dz[i] = dadelta * kern::softplus_grad(t.z[i]);
    }
  if (S* gb = grad_of(G.delta_b))
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < d; ++c) gb[c] += dz[n * d + c];
  if (S* gw = grad_of(G.delta_w)) kern::linear_dw(t.u.data(), r, dz, d, N, gw);
  kern::linear_dx(G.delta_w->w.data(), d, r, dz, N, ws.gdu.data(), false);
  S* diff = ws.gdiff.data();
  if (S* gw = grad_of(G.in_w)) {
    for (int64_t i = 0; i < N * d; ++i) diff[i] = t.p[i] - t.h[i];
    kern::linear_dw(diff, d, ws.gdu.data(), r, N, gw);
  }
  kern::linear_dx(G.in_w->w.data(), r, d, ws.gdu.data(), N, diff, false);  // d(p − h)
  for (int64_t i = 0; i < N * d; ++i) {
    dp[i] += diff[i];
    dh[i] -= diff[i];
  }
}

// ---------------------------------------------------------------- q head

/// logit[b] = Linear(LayerNorm(x[b])) for B rows x[B, d].
template <class S>
void qhead_fwd(const QHeadP<S>& Q, const Dims& D, const S* x, QTape<S>& t) {
  const int64_t B = D.B, d = D.d;
  std::memcpy(t.x.data(), x, size_t(B * d) * sizeof(S));
  kern::layernorm(x, Q.ln_w->w.data(), Q.ln_b->w.data(), B, d, Q.eps, t.y.data(), t.xhat.data(), t.rstd.data());
  for (int64_t b = 0; b < B; ++b) {
    double s = double(Q.b->w[0]);
    for (int64_t i = 0; i < d; ++i) s += double(Q.w->w[i]) * double(t.y[b * d + i]);
    t.logit[b] = S(s);
  }
}

/// Backward of qhead_fwd from dlogit[B]; dx[B, d] overwritten.
template <class S>
void qhead_bwd(const QHeadP<S>& Q, const Dims& D, Workspace<S>& ws, const QTape<S>& t, const S* dlogit, S* dx) {
  const int64_t B = D.B, d = D.d;
  S* dy = ws.qdy.data();
  S* gw = grad_of(Q.w);
  S* gb = grad_of(Q.b);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < d; ++i) {
      dy[b * d + i] = dlogit[b] * Q.w->w[i];
      if (gw) gw[i] += dlogit[b] * t.y[b * d + i];
    }
    if (gb) gb[0] += dlogit[b];
  }
  kern::layernorm_bwd(t.xhat.data(), t.rstd.data(), Q.ln_w->w.data(), dy, B, d, dx, grad_of(Q.ln_w), grad_of(Q.ln_b));
}

// ---------------------------------------------------------------- final norm + lm_head

/// logits[N, V] = lm_head(norm(x[N, d])).
template <class S>
void head_fwd(const Param<S>& norm, const Param<S>& lm_head, const Dims& D, const S* x, S* logits, HeadTape<S>& t) {
  std::memcpy(t.x.data(), x, size_t(D.N * D.d) * sizeof(S));
  kern::rmsnorm(x, norm.w.data(), D.N, D.d, D.eps, t.xn.data(), t.r.data());
  kern::linear(lm_head.w.data(), D.V, D.d, t.xn.data(), D.N, logits);
}

/// Backward of head_fwd from dlogits[N, V]; dx[N, d] overwritten.
template <class S>
void head_bwd(const Param<S>& norm, const Param<S>& lm_head, const Dims& D, Workspace<S>& ws, const HeadTape<S>& t,
              const S* dlogits, S* dx) {
  if (S* gw = grad_of(&lm_head)) kern::linear_dw(t.xn.data(), D.d, dlogits, D.V, D.N, gw);
  kern::linear_dx(lm_head.w.data(), D.V, D.d, dlogits, D.N, ws.dxn.data(), false);
  kern::rmsnorm_bwd(t.x.data(), norm.w.data(), t.r.data(), ws.dxn.data(), D.N, D.d, dx, grad_of(&norm), false);
}

}  // namespace loopus::train
