// Differentiable blocks of a looped model (transformer layer, selective gate, q head, final norm + lm_head) with
// tapes, composed of TrainOps<Backend> calls on Backend storage.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/model/hparams.hpp"
#include "loopus/ops/concept.hpp"
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

  /// Largest B·T a batch may hold: far beyond any memory, low enough that N·V cannot overflow.
  static constexpr int64_t kMaxRows = int64_t(1) << 36;

  static Dims of(const HParams& hp, int64_t B, int64_t T) {
    if (B > 0 && T > 0 && (B > kMaxRows || T > kMaxRows || B * T > kMaxRows))
      throw LimitError("a batch of " + std::to_string(B) + " sequences of " + std::to_string(T) +
                       " tokens is beyond the limit of " + std::to_string(kMaxRows) + " tokens per batch");
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

/// A read-only span parameter that does not take part in deduction (a
/// Span<Backend, S> converts to it at the call).
template <class Backend, class S>
using In = std::type_identity_t<CSpan<Backend, S>>;

/// A zero-filled tensor of n elements of Backend's memory (setup time only).
template <class Backend, class S>
void zeros(Tensor<Backend, S>& t, int64_t n) {
  t.reshape({n});
  TrainOps<Backend>::fill(t.span(), S(0));
}

/// What one layer application keeps for its backward pass (all sized for N rows).
template <class Backend, class S = float>
struct LayerTape {
  using Buf = Tensor<Backend, S>;
  Buf x;             ///< [N, d] layer input
  Buf r1, r2;        ///< [N] 1/rms of the two pre-norms
  Buf xn1, xn2;      ///< [N, d] normed inputs of attention and MLP
  Buf q_raw, k_raw;  ///< [N, qd], [N, kvd] projections before the Qwen3 q/k norm (qk_norm only)
  Buf rq, rk;        ///< [N·H], [N·KV] 1/rms of the q/k norm (qk_norm only)
  Buf q, k, v;       ///< after norm and RoPE: [N, qd], [N, kvd], [N, kvd]
  Buf lse;           ///< [B, H, T] attention log-sum-exp per query row
  Buf att;           ///< [N, qd] attention output (input of o_proj)
  Buf x2;            ///< [N, d] residual stream after attention
  Buf g, u;          ///< [N, ff] MLP gate and up projections

  void allocate(const Dims& D) {
    zeros(x, D.N * D.d);
    zeros(r1, D.N);
    zeros(r2, D.N);
    zeros(xn1, D.N * D.d);
    zeros(xn2, D.N * D.d);
    if (D.qk_norm) {
      zeros(q_raw, D.N * D.qd);
      zeros(k_raw, D.N * D.kvd);
      zeros(rq, D.N * D.H);
      zeros(rk, D.N * D.KV);
    }
    zeros(q, D.N * D.qd);
    zeros(k, D.N * D.kvd);
    zeros(v, D.N * D.kvd);
    zeros(lse, D.B * D.H * D.T);
    zeros(att, D.N * D.qd);
    zeros(x2, D.N * D.d);
    zeros(g, D.N * D.ff);
    zeros(u, D.N * D.ff);
  }
  int64_t bytes() const {
    int64_t n = 0;
    for (const Buf* b : {&x, &r1, &r2, &xn1, &xn2, &q_raw, &k_raw, &rq, &rk, &q, &k, &v, &lse, &att, &x2, &g, &u})
      n += b->numel();
    return n * int64_t(sizeof(S));
  }
};

/// The selective gate's tape: inputs p (proposal) and h (state), the low-rank
/// u, the pre-softplus z and the coefficient a.
template <class Backend, class S = float>
struct GateTape {
  Tensor<Backend, S> p, h, u, z, a;
  void allocate(const Dims& D, int64_t r) {
    zeros(p, D.N * D.d);
    zeros(h, D.N * D.d);
    zeros(u, D.N * r);
    zeros(z, D.N * D.d);
    zeros(a, D.N * D.d);
  }
};

/// The q head's tape for B pooled rows.
template <class Backend, class S = float>
struct QTape {
  Tensor<Backend, S> x, xhat, rstd, y, logit;
  void allocate(const Dims& D) {
    zeros(x, D.B * D.d);
    zeros(xhat, D.B * D.d);
    zeros(rstd, D.B);
    zeros(y, D.B * D.d);
    zeros(logit, D.B);
  }
};

/// The final norm's tape (the logits live in the caller's [N, V] tensor).
template <class Backend, class S = float>
struct HeadTape {
  Tensor<Backend, S> x, r, xn;
  void allocate(const Dims& D) {
    zeros(x, D.N * D.d);
    zeros(r, D.N);
    zeros(xn, D.N * D.d);
  }
};

/// Scratch shared by every block (allocated once; nothing allocates per step).
template <class Backend, class S = float>
struct Workspace {
  using Buf = Tensor<Backend, S>;
  Buf cs, sn;                                              ///< RoPE tables [T, n_rot/2]
  Buf attn;                                                ///< attention scratch (the backend's size)
  Buf dxn, dq, dk, dv, dqr, dkr, datt, dg, du, dact, act;  // layer backward
  Buf gdz, gdu, gdiff;                                     // gate backward
  Buf qdy, qdx;                                            // q head backward

  void allocate(const Dims& D, int64_t gate_r) {
    zeros(cs, D.T * (D.n_rot / 2));
    zeros(sn, D.T * (D.n_rot / 2));
    TrainOps<Backend>::rope_tables(D.T, D.n_rot, D.theta, cs.span(), sn.span(),
                                   D.rope_factors.empty() ? nullptr : D.rope_factors.data(), D.rope_mscale);
    zeros(attn, TrainOps<Backend>::attention_scratch(D.T, D.hd));
    zeros(dxn, D.N * D.d);
    zeros(dq, D.N * D.qd);
    zeros(dk, D.N * D.kvd);
    zeros(dv, D.N * D.kvd);
    if (D.qk_norm) {
      zeros(dqr, D.N * D.qd);
      zeros(dkr, D.N * D.kvd);
    }
    zeros(datt, D.N * D.qd);
    zeros(dg, D.N * D.ff);
    zeros(du, D.N * D.ff);
    zeros(dact, D.N * D.ff);
    zeros(act, D.N * D.ff);
    zeros(gdz, D.N * D.d);
    zeros(gdu, D.N * std::max<int64_t>(gate_r, 1));
    zeros(gdiff, D.N * D.d);
    zeros(qdy, D.B * D.d);
    zeros(qdx, D.B * D.d);
  }
};

/// A parameter's gradient span when it trains, else an empty span (no gradient).
template <class Backend, class S>
inline Span<Backend, S> grad_of(const Param<Backend, S>* p) {
  return p && p->trainable ? const_cast<Param<Backend, S>*>(p)->g.span() : Span<Backend, S>{};
}
/// A parameter's value.
template <class Backend, class S>
inline CSpan<Backend, S> val(const Param<Backend, S>* p) {
  return p->w.span();
}

// ---------------------------------------------------------------- transformer layer

/// One pre-norm layer in place on x[N, d] (B sequences of T tokens from
/// position 0, causal attention), recording what the backward needs in tape.
template <class Backend, class S>
void layer_fwd(const LayerP<Backend, S>& P, const Dims& D, Workspace<Backend, S>& ws, Span<Backend, S> x,
               LayerTape<Backend, S>& t) {
  using K = TrainOps<Backend>;
  const int64_t N = D.N, d = D.d;
  K::copy(t.x.span(), x);
  K::rmsnorm(CSpan<Backend, S>(x), val(P.attn_norm), N, d, D.eps, t.xn1.span(), t.r1.span());
  const Span<Backend, S> qp = D.qk_norm ? t.q_raw.span() : t.q.span();
  const Span<Backend, S> kp = D.qk_norm ? t.k_raw.span() : t.k.span();
  K::linear(val(P.wq), D.qd, d, t.xn1.span(), N, qp);
  K::linear(val(P.wk), D.kvd, d, t.xn1.span(), N, kp);
  K::linear(val(P.wv), D.kvd, d, t.xn1.span(), N, t.v.span());
  if (D.qk_norm) {
    K::rmsnorm(CSpan<Backend, S>(qp), val(P.q_norm), N * D.H, D.hd, D.eps, t.q.span(), t.rq.span());
    K::rmsnorm(CSpan<Backend, S>(kp), val(P.k_norm), N * D.KV, D.hd, D.eps, t.k.span(), t.rk.span());
  }
  K::rope(t.q.span(), N, D.T, D.H, D.hd, D.n_rot, D.style, ws.cs.span(), ws.sn.span(), false);
  K::rope(t.k.span(), N, D.T, D.KV, D.hd, D.n_rot, D.style, ws.cs.span(), ws.sn.span(), false);
  K::attention_fwd(t.q.span(), t.k.span(), t.v.span(), D.B, D.T, D.H, D.KV, D.hd, t.att.span(), t.lse.span(),
                   ws.attn.span());
  K::linear(val(P.wo), d, D.qd, t.att.span(), N, ws.dxn.span());
  K::add(x, ws.dxn.span());
  K::copy(t.x2.span(), x);
  K::rmsnorm(CSpan<Backend, S>(x), val(P.ffn_norm), N, d, D.eps, t.xn2.span(), t.r2.span());
  K::linear(val(P.w_gate), D.ff, d, t.xn2.span(), N, t.g.span());
  K::linear(val(P.w_up), D.ff, d, t.xn2.span(), N, t.u.span());
  K::swiglu(t.g.span(), t.u.span(), ws.act.span());
  K::linear(val(P.w_down), d, D.ff, ws.act.span(), N, ws.dxn.span());
  K::add(x, ws.dxn.span());
}

/// Backward of layer_fwd: dx holds dL/d(output) on entry and dL/d(input) on
/// exit. Parameter gradients are added when the layer trains.
template <class Backend, class S>
void layer_bwd(const LayerP<Backend, S>& P, const Dims& D, Workspace<Backend, S>& ws, const LayerTape<Backend, S>& t,
               Span<Backend, S> dx) {
  using K = TrainOps<Backend>;
  const int64_t N = D.N, d = D.d;
  // MLP: out = x2 + down(silu(g)·u)
  K::swiglu(t.g.span(), t.u.span(), ws.act.span());
  if (const auto gw = grad_of(P.w_down); !gw.empty()) K::linear_dw(ws.act.span(), D.ff, dx, d, N, gw);
  K::linear_dx(val(P.w_down), d, D.ff, dx, N, ws.dact.span(), false);
  K::swiglu_bwd(t.g.span(), t.u.span(), ws.dact.span(), ws.dg.span(), ws.du.span());
  if (const auto gw = grad_of(P.w_gate); !gw.empty()) K::linear_dw(t.xn2.span(), d, ws.dg.span(), D.ff, N, gw);
  if (const auto gw = grad_of(P.w_up); !gw.empty()) K::linear_dw(t.xn2.span(), d, ws.du.span(), D.ff, N, gw);
  K::linear_dx(val(P.w_gate), D.ff, d, ws.dg.span(), N, ws.dxn.span(), false);
  K::linear_dx(val(P.w_up), D.ff, d, ws.du.span(), N, ws.dxn.span(), true);
  K::rmsnorm_bwd(t.x2.span(), val(P.ffn_norm), t.r2.span(), ws.dxn.span(), N, d, dx, grad_of(P.ffn_norm), true);
  // attention: x2 = x + o_proj(attn(rope(norm(q)), rope(norm(k)), v))
  if (const auto gw = grad_of(P.wo); !gw.empty()) K::linear_dw(t.att.span(), D.qd, dx, d, N, gw);
  K::linear_dx(val(P.wo), d, D.qd, dx, N, ws.datt.span(), false);
  K::attention_bwd(t.q.span(), t.k.span(), t.v.span(), t.att.span(), t.lse.span(), ws.datt.span(), D.B, D.T, D.H, D.KV,
                   D.hd, ws.dq.span(), ws.dk.span(), ws.dv.span(), ws.attn.span());
  K::rope(ws.dq.span(), N, D.T, D.H, D.hd, D.n_rot, D.style, ws.cs.span(), ws.sn.span(), true);
  K::rope(ws.dk.span(), N, D.T, D.KV, D.hd, D.n_rot, D.style, ws.cs.span(), ws.sn.span(), true);
  CSpan<Backend, S> dq = ws.dq.span(), dk = ws.dk.span();
  if (D.qk_norm) {
    K::rmsnorm_bwd(t.q_raw.span(), val(P.q_norm), t.rq.span(), ws.dq.span(), N * D.H, D.hd, ws.dqr.span(),
                   grad_of(P.q_norm), false);
    K::rmsnorm_bwd(t.k_raw.span(), val(P.k_norm), t.rk.span(), ws.dk.span(), N * D.KV, D.hd, ws.dkr.span(),
                   grad_of(P.k_norm), false);
    dq = ws.dqr.span();
    dk = ws.dkr.span();
  }
  if (const auto gw = grad_of(P.wq); !gw.empty()) K::linear_dw(t.xn1.span(), d, dq, D.qd, N, gw);
  if (const auto gw = grad_of(P.wk); !gw.empty()) K::linear_dw(t.xn1.span(), d, dk, D.kvd, N, gw);
  if (const auto gw = grad_of(P.wv); !gw.empty()) K::linear_dw(t.xn1.span(), d, ws.dv.span(), D.kvd, N, gw);
  K::linear_dx(val(P.wq), D.qd, d, dq, N, ws.dxn.span(), false);
  K::linear_dx(val(P.wk), D.kvd, d, dk, N, ws.dxn.span(), true);
  K::linear_dx(val(P.wv), D.kvd, d, ws.dv.span(), N, ws.dxn.span(), true);
  K::rmsnorm_bwd(t.x.span(), val(P.attn_norm), t.r1.span(), ws.dxn.span(), N, d, dx, grad_of(P.attn_norm), true);
}

// ---------------------------------------------------------------- selective gate

/// out = a·p + (1 − a)·h with a = exp(−softplus(delta_proj(dt_input_proj(p − h))) · exp(A_log)),
/// per token and channel (method spec section 3). out may alias p or h.
template <class Backend, class S>
void gate_fwd(const GateP<Backend, S>& G, const Dims& D, In<Backend, S> p, In<Backend, S> h, Span<Backend, S> out,
              GateTape<Backend, S>& t) {
  using K = TrainOps<Backend>;
  const int64_t N = D.N, d = D.d, r = G.r;
  K::copy(t.p.span(), p);
  K::copy(t.h.span(), h);
  K::sub(t.p.span(), t.h.span(), t.a.span());  // p − h, overwritten by a below
  K::linear(val(G.in_w), r, d, t.a.span(), N, t.u.span());
  K::linear(val(G.delta_w), d, r, t.u.span(), N, t.z.span());
  K::gate_mix(val(G.A_log), val(G.delta_b), t.z.span(), t.p.span(), t.h.span(), t.a.span(), out, N, d);
}

/// Backward of gate_fwd: dp = dL/dp, dh = dL/dh (overwritten) from dout.
template <class Backend, class S>
void gate_bwd(const GateP<Backend, S>& G, const Dims& D, Workspace<Backend, S>& ws, const GateTape<Backend, S>& t,
              In<Backend, S> dout, Span<Backend, S> dp, Span<Backend, S> dh) {
  using K = TrainOps<Backend>;
  const int64_t N = D.N, d = D.d, r = G.r;
  const Span<Backend, S> dz = ws.gdz.span();
  K::gate_mix_bwd(dout, t.p.span(), t.h.span(), t.z.span(), t.a.span(), val(G.A_log), dp, dh, dz, grad_of(G.A_log), N,
                  d);
  if (const auto gb = grad_of(G.delta_b); !gb.empty()) K::col_sum_add(dz, N, d, gb);
  if (const auto gw = grad_of(G.delta_w); !gw.empty()) K::linear_dw(t.u.span(), r, dz, d, N, gw);
  K::linear_dx(val(G.delta_w), d, r, dz, N, ws.gdu.span().sub(0, N * r), false);
  const Span<Backend, S> diff = ws.gdiff.span();
  if (const auto gw = grad_of(G.in_w); !gw.empty()) {
    K::sub(t.p.span(), t.h.span(), diff);
    K::linear_dw(diff, d, ws.gdu.span().sub(0, N * r), r, N, gw);
  }
  K::linear_dx(val(G.in_w), r, d, ws.gdu.span().sub(0, N * r), N, diff, false);  // d(p − h)
  K::add(dp, diff);
  K::sub(dh, diff, dh);
}

// ---------------------------------------------------------------- q head

/// logit[b] = Linear(LayerNorm(x[b])) for B rows x[B, d].
template <class Backend, class S>
void qhead_fwd(const QHeadP<Backend, S>& Q, const Dims& D, In<Backend, S> x, QTape<Backend, S>& t) {
  using K = TrainOps<Backend>;
  K::copy(t.x.span(), x);
  K::layernorm(x, val(Q.ln_w), val(Q.ln_b), D.B, D.d, Q.eps, t.y.span(), t.xhat.span(), t.rstd.span());
  K::row_dot(t.y.span(), val(Q.w), val(Q.b), D.B, D.d, t.logit.span());
}

/// Backward of qhead_fwd from dlogit[B]; dx[B, d] overwritten.
template <class Backend, class S>
void qhead_bwd(const QHeadP<Backend, S>& Q, const Dims& D, Workspace<Backend, S>& ws, const QTape<Backend, S>& t,
               In<Backend, S> dlogit, Span<Backend, S> dx) {
  using K = TrainOps<Backend>;
  K::row_dot_bwd(dlogit, val(Q.w), t.y.span(), D.B, D.d, ws.qdy.span(), grad_of(Q.w), grad_of(Q.b));
  K::layernorm_bwd(t.xhat.span(), t.rstd.span(), val(Q.ln_w), ws.qdy.span(), D.B, D.d, dx, grad_of(Q.ln_w),
                   grad_of(Q.ln_b));
}

// ---------------------------------------------------------------- final norm + lm_head

/// logits[N, V] = lm_head(norm(x[N, d])).
template <class Backend, class S>
void head_fwd(const Param<Backend, S>& norm, const Param<Backend, S>& lm_head, const Dims& D, In<Backend, S> x,
              Span<Backend, S> logits, HeadTape<Backend, S>& t) {
  using K = TrainOps<Backend>;
  K::copy(t.x.span(), x);
  K::rmsnorm(x, val(&norm), D.N, D.d, D.eps, t.xn.span(), t.r.span());
  K::linear(val(&lm_head), D.V, D.d, t.xn.span(), D.N, logits);
}

/// Backward of head_fwd from dlogits[N, V]; dx[N, d] overwritten.
template <class Backend, class S>
void head_bwd(const Param<Backend, S>& norm, const Param<Backend, S>& lm_head, const Dims& D, Workspace<Backend, S>& ws,
              const HeadTape<Backend, S>& t, In<Backend, S> dlogits, Span<Backend, S> dx) {
  using K = TrainOps<Backend>;
  if (const auto gw = grad_of(&lm_head); !gw.empty()) K::linear_dw(t.xn.span(), D.d, dlogits, D.V, D.N, gw);
  K::linear_dx(val(&lm_head), D.V, D.d, dlogits, D.N, ws.dxn.span(), false);
  K::rmsnorm_bwd(t.x.span(), val(&norm), t.r.span(), ws.dxn.span(), D.N, D.d, dx, grad_of(&norm), false);
}

}  // namespace loopus::train
