// Scalar reference of the training kernels (ops/cpu/train_kernels.hpp): the oracle behind TrainOps<Reference>.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/rope.hpp"

/// The oracle of the training path's forward and backward kernels.
///
/// Every function here has the argument list of its namesake in
/// loopus::cpu::kern (ops/cpu/train_kernels.hpp), so a test hands both the same
/// buffers; the attention pair alone takes no scratch. They are written from
/// the math, as plain loops over the scalar S (float or double) that read S,
/// compute and accumulate in double, and round to S once per output element:
/// for float inputs the result is the float-rounded exact value, the one any
/// optimised kernel is measured against. No threads, no SIMD, no BLAS.
/// Shapes are row-major; N counts rows (tokens of all sequences).
/// ops/ includes only core/: this header must not include train/.
namespace loopus::ref_train {

namespace detail {
/// σ(x) = 1 / (1 + e^(−x)), evaluated without overflow on either side.
inline double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}
/// log(1 + e^z) for every z (no threshold): max(z, 0) + log1p(e^(−|z|)).
inline double softplus_exact(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }
}  // namespace detail

// ---------------------------------------------------------------- linear

/// y[N, out] = x[N, in] · Wᵀ with W row-major [out, in]: y[n, o] = Σ_i x[n, i]·W[o, i].
template <class S>
void linear(const S* W, int64_t out, int64_t in, const S* x, int64_t N, S* y) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += double(x[n * in + i]) * double(W[o * in + i]);
      y[n * out + o] = S(s);
    }
}

/// dx[N, in] (+)= dy[N, out] · W: dx[n, i] = Σ_o dy[n, o]·W[o, i]; accumulate adds to dx, else overwrites.
template <class S>
void linear_dx(const S* W, int64_t out, int64_t in, const S* dy, int64_t N, S* dx, bool accumulate) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < in; ++i) {
      double s = accumulate ? double(dx[n * in + i]) : 0.0;
      for (int64_t o = 0; o < out; ++o) s += double(dy[n * out + o]) * double(W[o * in + i]);
      dx[n * in + i] = S(s);
    }
}

/// dW[out, in] += dy[N, out]ᵀ · x[N, in]: dW[o, i] += Σ_n dy[n, o]·x[n, i] (always accumulates).
template <class S>
void linear_dw(const S* x, int64_t in, const S* dy, int64_t out, int64_t N, S* dW) {
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double s = dW[o * in + i];
      for (int64_t n = 0; n < N; ++n) s += double(dy[n * out + o]) * double(x[n * in + i]);
      dW[o * in + i] = S(s);
    }
}

// ---------------------------------------------------------------- RMSNorm

/// Per row of d: r = (Σ x²/d + eps)^(−1/2), y = x·r·g; rstd[N] = r (may be null).
template <class S>
void rmsnorm(const S* x, const S* g, int64_t N, int64_t d, double eps, S* y, S* rstd) {
  for (int64_t t = 0; t < N; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[t * d + i]) * double(x[t * d + i]);
    const double r = 1.0 / std::sqrt(ss / double(d) + eps);
    if (rstd) rstd[t] = S(r);
    for (int64_t i = 0; i < d; ++i) y[t * d + i] = S(double(x[t * d + i]) * r * double(g[i]));
  }
}

/// Backward of rmsnorm given its rstd: with ∂r/∂x_j = −r³x_j/d,
/// dx_j (+)= r·g_j·dy_j − x_j·(r³/d)·Σ_i dy_i·g_i·x_i; dg_i += Σ_t dy_ti·x_ti·r_t (dg may be null).
template <class S>
void rmsnorm_bwd(const S* x, const S* g, const S* rstd, const S* dy, int64_t N, int64_t d, S* dx, S* dg,
                 bool accumulate) {
  for (int64_t t = 0; t < N; ++t) {
    const double r = rstd[t];
    double dot = 0;
    for (int64_t i = 0; i < d; ++i) dot += double(dy[t * d + i]) * double(g[i]) * double(x[t * d + i]);
    const double c = r * r * r / double(d) * dot;
    for (int64_t i = 0; i < d; ++i) {
      const double v = r * double(g[i]) * double(dy[t * d + i]) - double(x[t * d + i]) * c;
      dx[t * d + i] = S(accumulate ? double(dx[t * d + i]) + v : v);
    }
  }
  if (dg)
    for (int64_t i = 0; i < d; ++i) {
      double s = dg[i];
      for (int64_t t = 0; t < N; ++t) s += double(dy[t * d + i]) * double(x[t * d + i]) * double(rstd[t]);
      dg[i] = S(s);
    }
}

// ---------------------------------------------------------------- RoPE

/// cs, sn [T, n_rot/2]: cos / sin of t·θ_i scaled by mscale, θ_i = theta^(−2i/n_rot) / freq_factors[i]
/// (factors optional: Phi-3 longrope), t = 0 .. T−1; the angle is formed in double, then rounded to S.
template <class S>
void rope_tables(int64_t T, int n_rot, float theta, S* cs, S* sn, const float* freq_factors = nullptr,
                 float mscale = 1.f) {
  const int half = n_rot / 2;
  for (int i = 0; i < half; ++i) {
    double f = std::pow(double(theta), -double(2 * i) / double(n_rot));
    if (freq_factors) f /= double(freq_factors[i]);
    for (int64_t t = 0; t < T; ++t) {
      const double a = double(t) * f;
      cs[t * half + i] = S(std::cos(a) * double(mscale));
      sn[t * half + i] = S(std::sin(a) * double(mscale));
    }
  }
}

/// In place on x[N, n_head, head_dim], row r at position r % T (N/T sequences, each from 0): each pair
/// (a, b) of the first n_rot dims (style: (2i, 2i+1) or (i, i + n_rot/2)) becomes (a·c − b·s, a·s + b·c)
/// with c, s = the tables at (r % T, i); dims ≥ n_rot pass. inverse: multiply by the transpose instead
/// (s → −s), the backward; it is the inverse when mscale = 1.
template <class S>
void rope(S* x, int64_t N, int64_t T, int n_head, int head_dim, int n_rot, RopeStyle style, const S* cs, const S* sn,
          bool inverse) {
  const int half = n_rot / 2;
  for (int64_t r = 0; r < N; ++r) {
    const int64_t pos = r % T;
    for (int h = 0; h < n_head; ++h) {
      S* v = x + (r * n_head + h) * int64_t(head_dim);
      for (int i = 0; i < half; ++i) {
        const int a = style == RopeStyle::kHalf ? i : 2 * i;
        const int b = style == RopeStyle::kHalf ? i + half : 2 * i + 1;
        const double c = cs[pos * half + i];
        const double s = inverse ? -double(sn[pos * half + i]) : double(sn[pos * half + i]);
        const double x0 = v[a], x1 = v[b];
        v[a] = S(x0 * c - x1 * s);
        v[b] = S(x0 * s + x1 * c);
      }
    }
  }
}

// ---------------------------------------------------------------- attention

/// Causal GQA attention over B sequences of T tokens; q, out [B·T, H·hd], k, v [B·T, KV·hd], head h
/// reads K/V head h / (H/KV). s_ij = q_i·k_j/√hd for j ≤ i, lse_i = log Σ_j e^(s_ij) (lse [B, H, T],
/// may be null), out_i = Σ_j e^(s_ij − lse_i)·v_j. No scratch.
template <class S>
void attention_fwd(const S* q, const S* k, const S* v, int64_t B, int64_t T, int H, int KV, int hd, S* out, S* lse) {
  LOOPUS_ASSERT(KV > 0 && H % KV == 0);
  const int group = H / KV;
  const double scale = 1.0 / std::sqrt(double(hd));
  const int64_t qld = int64_t(H) * hd, kld = int64_t(KV) * hd;
  std::vector<double> s(static_cast<size_t>(std::max<int64_t>(T, 1)));
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int kh = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const S* qi = q + (b * T + i) * qld + int64_t(h) * hd;
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const S* kj = k + (b * T + j) * kld + int64_t(kh) * hd;
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += double(qi[e]) * double(kj[e]);
          s[size_t(j)] = dot * scale;
          m = std::max(m, s[size_t(j)]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += std::exp(s[size_t(j)] - m);
        const double l = m + std::log(z);
        if (lse) lse[(b * H + h) * T + i] = S(l);
        for (int e = 0; e < hd; ++e) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j)
            acc += std::exp(s[size_t(j)] - l) * double(v[(b * T + j) * kld + int64_t(kh) * hd + e]);
          out[(b * T + i) * qld + int64_t(h) * hd + e] = S(acc);
        }
      }
    }
}

/// Backward of attention_fwd for dout [B·T, H·hd]; dq, dk, dv overwritten. With P_ij = e^(s_ij − lse_i):
/// dv_j = Σ_i P_ij·dout_i; dP_ij = dout_i·v_j; dS_ij = P_ij(dP_ij − Σ_l P_il·dP_il);
/// dq_i = Σ_j dS_ij·k_j/√hd; dk_j = Σ_i dS_ij·q_i/√hd (sums over the heads sharing a K/V head).
/// out and lse (the forward's tape in kern) are accepted for the same argument list but not read:
/// P and Σ_l P_il·dP_il (= dout_i·out_i) are recomputed in double from q, k, v.
template <class S>
void attention_bwd(const S* q, const S* k, const S* v, const S* out, const S* lse, const S* dout, int64_t B, int64_t T,
                   int H, int KV, int hd, S* dq, S* dk, S* dv) {
  LOOPUS_ASSERT(KV > 0 && H % KV == 0);
  (void)out;
  (void)lse;
  const int group = H / KV;
  const double scale = 1.0 / std::sqrt(double(hd));
  const int64_t qld = int64_t(H) * hd, kld = int64_t(KV) * hd;
  // dk, dv sum over query rows and heads: accumulate all of them in double, round once.
  std::vector<double> dK(static_cast<size_t>(B * T * kld), 0.0), dV(dK.size(), 0.0);
  std::vector<double> p(static_cast<size_t>(std::max<int64_t>(T, 1))), dp(p.size()), dqi(static_cast<size_t>(hd));
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int kh = h / group;
      auto kv_at = [&](int64_t j, int e) { return (b * T + j) * kld + int64_t(kh) * hd + e; };
      for (int64_t i = 0; i < T; ++i) {
        const int64_t qi = (b * T + i) * qld + int64_t(h) * hd;
        // P_i· from scratch (stable softmax over j ≤ i)
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += double(q[qi + e]) * double(k[kv_at(j, e)]);
          p[size_t(j)] = dot * scale;
          m = std::max(m, p[size_t(j)]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
        for (int64_t j = 0; j <= i; ++j) p[size_t(j)] /= z;
        double rowdot = 0;  // Σ_j P_ij·dP_ij
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int e = 0; e < hd; ++e) s += double(dout[qi + e]) * double(v[kv_at(j, e)]);
          dp[size_t(j)] = s;
          rowdot += p[size_t(j)] * s;
        }
        std::fill(dqi.begin(), dqi.end(), 0.0);
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[size_t(j)] * (dp[size_t(j)] - rowdot);
          for (int e = 0; e < hd; ++e) {
            dqi[size_t(e)] += ds * double(k[kv_at(j, e)]) * scale;
            dK[size_t(kv_at(j, e))] += ds * double(q[qi + e]) * scale;
            dV[size_t(kv_at(j, e))] += p[size_t(j)] * double(dout[qi + e]);
          }
        }
        for (int e = 0; e < hd; ++e) dq[qi + e] = S(dqi[size_t(e)]);
      }
    }
  for (size_t i = 0; i < dK.size(); ++i) {
    dk[i] = S(dK[i]);
    dv[i] = S(dV[i]);
  }
}

// ---------------------------------------------------------------- elementwise

/// act = silu(g)·u = g·σ(g)·u elementwise over n.
template <class S>
void swiglu(const S* g, const S* u, int64_t n, S* act) {
  for (int64_t i = 0; i < n; ++i) act[i] = S(double(g[i]) * detail::sigmoid(double(g[i])) * double(u[i]));
}

/// Backward of swiglu: du = dact·g·σ(g); dg = dact·u·σ(g)·(1 + g·(1 − σ(g))) (= dact·u·silu'(g)).
template <class S>
void swiglu_bwd(const S* g, const S* u, const S* dact, int64_t n, S* dg, S* du) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = g[i], s = detail::sigmoid(x), da = dact[i];
    du[i] = S(da * x * s);
    dg[i] = S(da * double(u[i]) * (s + x * s * (1.0 - s)));
  }
}

/// torch.nn.functional.softplus (beta 1, threshold 20): z when z > 20, else log(1 + e^z).
template <class S>
S softplus(S z) {
  return double(z) > 20.0 ? z : S(detail::softplus_exact(double(z)));
}
/// Derivative of softplus as torch's backward: 1 when z > 20, else σ(z).
template <class S>
S softplus_grad(S z) {
  return double(z) > 20.0 ? S(1) : S(detail::sigmoid(double(z)));
}

/// silu(x) = x·σ(x).
inline double silu(double x) { return x * detail::sigmoid(x); }
/// silu'(x) = σ(x) + x·σ(x)·(1 − σ(x)).
inline double silu_grad(double x) {
  const double s = detail::sigmoid(x);
  return s + x * s * (1.0 - s);
}

// ---------------------------------------------------------------- LayerNorm

/// Per row of d: μ, biased σ², r = (σ² + eps)^(−1/2); xhat = (x − μ)·r, y = xhat·w + b; rstd[N] = r.
template <class S>
void layernorm(const S* x, const S* w, const S* b, int64_t N, int64_t d, double eps, S* y, S* xhat, S* rstd) {
  for (int64_t t = 0; t < N; ++t) {
    double mu = 0;
    for (int64_t i = 0; i < d; ++i) mu += double(x[t * d + i]);
    mu /= double(d);
    double var = 0;
    for (int64_t i = 0; i < d; ++i) var += (double(x[t * d + i]) - mu) * (double(x[t * d + i]) - mu);
    var /= double(d);
    const double r = 1.0 / std::sqrt(var + eps);
    rstd[t] = S(r);
    for (int64_t i = 0; i < d; ++i) {
      const double xh = (double(x[t * d + i]) - mu) * r;
      xhat[t * d + i] = S(xh);
      y[t * d + i] = S(xh * double(w[i]) + double(b[i]));
    }
  }
}

/// Backward of layernorm from its xhat and rstd: with ∂xhat_i/∂x_j = r(δ_ij − 1/d − xhat_i·xhat_j/d) and
/// gx = dy∘w, dx_j = r·(gx_j − mean(gx) − xhat_j·mean(gx∘xhat)) (overwritten); dw += Σ_t dy∘xhat and
/// db += Σ_t dy (each may be null).
template <class S>
void layernorm_bwd(const S* xhat, const S* rstd, const S* w, const S* dy, int64_t N, int64_t d, S* dx, S* dw, S* db) {
  for (int64_t t = 0; t < N; ++t) {
    double mg = 0, mgx = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double gx = double(dy[t * d + i]) * double(w[i]);
      mg += gx;
      mgx += gx * double(xhat[t * d + i]);
    }
    mg /= double(d);
    mgx /= double(d);
    for (int64_t i = 0; i < d; ++i) {
      const double gx = double(dy[t * d + i]) * double(w[i]);
      dx[t * d + i] = S(double(rstd[t]) * (gx - mg - double(xhat[t * d + i]) * mgx));
    }
  }
  for (int64_t i = 0; i < d; ++i) {
    double sw = dw ? double(dw[i]) : 0.0, sb = db ? double(db[i]) : 0.0;
    for (int64_t t = 0; t < N; ++t) {
      sw += double(dy[t * d + i]) * double(xhat[t * d + i]);
      sb += double(dy[t * d + i]);
    }
    if (dw) dw[i] = S(sw);
    if (db) db[i] = S(sb);
  }
}

// ---------------------------------------------------------------- losses

/// Binary cross-entropy of logit x against soft target t ∈ [0, 1]: −t·log σ(x) − (1 − t)·log(1 − σ(x))
/// = t·log(1 + e^(−x)) + (1 − t)·log(1 + e^x).
inline double bce_with_logits(double x, double t) {
  return t * detail::softplus_exact(-x) + (1.0 - t) * detail::softplus_exact(x);
}
/// d bce_with_logits / dx = σ(x) − t.
inline double bce_with_logits_grad(double x, double t) { return detail::sigmoid(x) - t; }

/// Cross-entropy of N rows of V logits against target[r] (< 0: row ignored, like ignore_index −100).
/// Counted row r: row_loss[r] = logsumexp(x_r) − x_r[y], and the row becomes grad_scale·(softmax − onehot(y)),
/// or the softmax alone when grad_scale == 0. Ignored row: row_loss[r] = 0, and the row becomes zeros, or is
/// left as it is when grad_scale == 0. argmax[r] = first index of row r's maximum (every row; may be null).
/// Returns Σ row_loss over counted rows (the mean NLL is that / *n_counted); *n_counted = their number (may
/// be null).
template <class S>
double cross_entropy(S* logits, const int32_t* target, int64_t N, int64_t V, double grad_scale, int32_t* argmax,
                     double* row_loss, int64_t* n_counted) {
  double total = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < N; ++r) {
    S* x = logits + r * V;
    const int32_t y = target[r];
    int64_t best = 0;
    for (int64_t j = 1; j < V; ++j)
      if (x[j] > x[best]) best = j;
    if (argmax) argmax[r] = int32_t(best);
    row_loss[r] = 0;
    if (y < 0) {
      if (grad_scale != 0) std::fill(x, x + V, S(0));
      continue;
    }
    LOOPUS_ASSERT(y < V);
    const double m = double(x[best]);
    double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(double(x[j]) - m);
    const double lse = m + std::log(z);
    row_loss[r] = lse - double(x[y]);
    total += row_loss[r];
    ++counted;
    for (int64_t j = 0; j < V; ++j) {
      const double p = std::exp(double(x[j]) - lse);
      x[j] = S(grad_scale == 0 ? p : grad_scale * (p - (j == y ? 1.0 : 0.0)));
    }
  }
  if (n_counted) *n_counted = counted;
  return total;
}

}  // namespace loopus::ref_train
