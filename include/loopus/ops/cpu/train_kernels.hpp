// Cpu kernels of the training path (forward with tapes, backward, optimizer) on raw host arrays, templated on the
// scalar (float to train, double to check gradients). TrainOps<Cpu> (ops/cpu/train.hpp) wraps them for spans.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "loopus/ops/cpu/eigen.hpp"
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "loopus/core/buffer.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/cpu/ops.hpp"

namespace loopus::cpu {

/// Owning, 64-byte aligned, fixed-size array of S (allocated once, never on the hot path).
template <class S>
class Buf {
 public:
  Buf() = default;
  explicit Buf(int64_t n) { resize(n); }
  /// Resizes and zero-fills (call at setup time only).
  void resize(int64_t n) {
    n_ = n;
    buf_.resize(size_t(std::max<int64_t>(n, 1)) * sizeof(S));
    std::fill(data(), data() + n_, S(0));
  }
  S* data() { return buf_.as<S>(); }
  const S* data() const { return buf_.as<S>(); }
  int64_t size() const { return n_; }
  S& operator[](int64_t i) { return data()[i]; }
  const S& operator[](int64_t i) const { return data()[i]; }
  void zero() { std::fill(data(), data() + n_, S(0)); }

 private:
  AlignedBuffer buf_;
  int64_t n_ = 0;
};

namespace kern {

template <class S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using MatMap = Eigen::Map<RowMat<S>>;
template <class S>
using CMatMap = Eigen::Map<const RowMat<S>>;
template <class S>
using SMatMap = Eigen::Map<RowMat<S>, 0, Eigen::OuterStride<>>;
template <class S>
using CSMatMap = Eigen::Map<const RowMat<S>, 0, Eigen::OuterStride<>>;

/// Elementwise kernels (norms, RoPE, softmax-CE) below this many elements run on
/// the calling thread. They cost microseconds, and every OpenMP region costs a
/// scheduler round trip: on a busy 2-core machine (another process on a core)
/// thousands of small regions per batch made training 8x slower with 2
/// threads than with 1. Only GEMMs and attention (one region per call) fork.
inline constexpr int64_t kSerialWork = int64_t(1) << 22;

// OpenMP thread queries shared with the inference kernels.
using detail::max_threads;
inline int thread_id() { return detail::thread_num(); }

// ---------------------------------------------------------------- linear

/// y[N, out] = x[N, in] · Wᵀ, W row-major [out, in] (the HF / PyTorch Linear layout).
/// f32 goes through Ops<Cpu>::matmul, the inference GEMM, so training and
/// inference share one forward kernel.
template <class S>
void linear(const S* W, int64_t out, int64_t in, const S* x, int64_t N, S* y) {
  if (N <= 0) return;
  if constexpr (std::is_same_v<S, float>) {
    Ops<Cpu>::matmul(Weight{W, DType::kF32, out, in}, x, N, y);
  } else {
    gemm_chunks(N, double(N) * double(out) * double(in), [&](int64_t r0, int64_t r1) {
      MatMap<S>(y + r0 * out, r1 - r0, out).noalias() = CMatMap<S>(x + r0 * in, r1 - r0, in) * CMatMap<S>(W, out, in).transpose();
    });
  }
}

/// Runs f(r0, r1) over [0, n) split into one contiguous chunk per thread when
/// the GEMM behind it has at least 1e5 multiply-adds (Eigen's own threshold for
/// going parallel), else f(0, n) on the calling thread. Inside the region
/// Eigen runs single-threaded: its own GEMM threading synchronises by busy
/// waiting, which collapses when another process holds one of the cores.
/// Each output element is computed by one thread, so results are
/// deterministic for a given thread count. f32 chunks go to OpenBLAS when the
/// build has it (detail::sgemm), f64 (the gradient checks) stays on Eigen.
template <class F>
void gemm_chunks(int64_t n, double macs, F&& f) {
  const int nt = max_threads();
  if (nt <= 1 || macs < 1e5 || n < 2 * nt) {
    f(int64_t(0), n);
    return;
  }
  LOOPUS_OMP(omp parallel for schedule(static) num_threads(nt))
  for (int c = 0; c < nt; ++c) f(n * c / nt, n * (c + 1) / nt);
}

/// dx[N, in] = dy[N, out] · W (accumulate: +=).
template <class S>
void linear_dx(const S* W, int64_t out, int64_t in, const S* dy, int64_t N, S* dx, bool accumulate) {
  gemm_chunks(N, double(N) * double(out) * double(in), [&](int64_t r0, int64_t r1) {
#if defined(LOOPUS_HAS_CBLAS)
    if constexpr (std::is_same_v<S, float>) {
      if (detail::blas_fast()) {
        detail::sgemm(false, false, r1 - r0, in, out, dy + r0 * out, out, W, in, accumulate ? 1.f : 0.f, dx + r0 * in,
                      in);
        return;
      }
    }
#endif
    MatMap<S> DX(dx + r0 * in, r1 - r0, in);
    if (accumulate) DX.noalias() += CMatMap<S>(dy + r0 * out, r1 - r0, out) * CMatMap<S>(W, out, in);
    else DX.noalias() = CMatMap<S>(dy + r0 * out, r1 - r0, out) * CMatMap<S>(W, out, in);
  });
}

/// dW[out, in] += dy[N, out]ᵀ · x[N, in].
template <class S>
void linear_dw(const S* x, int64_t in, const S* dy, int64_t out, int64_t N, S* dW) {
  gemm_chunks(out, double(N) * double(out) * double(in), [&](int64_t r0, int64_t r1) {
#if defined(LOOPUS_HAS_CBLAS)
    if constexpr (std::is_same_v<S, float>) {
      if (detail::blas_fast()) {
        detail::sgemm(true, false, r1 - r0, in, N, dy + r0, out, x, in, 1.f, dW + r0 * in, in);
        return;
      }
    }
#endif
    CSMatMap<S> DY(dy + r0, N, r1 - r0, Eigen::OuterStride<>(out));
    MatMap<S>(dW + r0 * in, r1 - r0, in).noalias() += DY.transpose() * CMatMap<S>(x, N, in);
  });
}

// ---------------------------------------------------------------- RMSNorm

/// y = x / rms(x) · g per row of d; rstd[N] = 1 / rms (kept for the backward; may be null).
template <class S>
void rmsnorm(const S* x, const S* g, int64_t N, int64_t d, double eps, S* y, S* rstd) {
  LOOPUS_OMP(omp parallel for schedule(static) if (N * d >= kSerialWork))
  for (int64_t t = 0; t < N; ++t) {
    const S* xr = x + t * d;
    S* yr = y + t * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * double(xr[i]);
    const S r = S(1.0 / std::sqrt(ss / double(d) + eps));
    if (rstd) rstd[t] = r;
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * r * g[i];
  }
}

/// Backward of rmsnorm: dx (+)= r·(dy∘g) − x·r³/d·Σ(dy∘g∘x); dg += Σ_t dy∘x·r (dg may be null).
/// dg is reduced serially over rows so results do not depend on the thread count.
template <class S>
void rmsnorm_bwd(const S* x, const S* g, const S* rstd, const S* dy, int64_t N, int64_t d, S* dx, S* dg,
                 bool accumulate) {
  LOOPUS_OMP(omp parallel for schedule(static) if (N * d >= kSerialWork))
  for (int64_t t = 0; t < N; ++t) {
    const S* xr = x + t * d;
    const S* dyr = dy + t * d;
    S* dxr = dx + t * d;
    const S r = rstd[t];
    double dot = 0;
    for (int64_t i = 0; i < d; ++i) dot += double(dyr[i]) * double(g[i]) * double(xr[i]);
    const S c = S(dot * double(r) * double(r) * double(r) / double(d));
    if (accumulate)
      for (int64_t i = 0; i < d; ++i) dxr[i] += r * dyr[i] * g[i] - xr[i] * c;
    else
      for (int64_t i = 0; i < d; ++i) dxr[i] = r * dyr[i] * g[i] - xr[i] * c;
  }
  if (dg)
    for (int64_t t = 0; t < N; ++t) {
      const S* xr = x + t * d;
      const S* dyr = dy + t * d;
      const S r = rstd[t];
      for (int64_t i = 0; i < d; ++i) dg[i] += dyr[i] * xr[i] * r;
    }
}

// ---------------------------------------------------------------- RoPE

/// cos/sin tables [T, n_rot/2] for positions 0..T-1, angles in double exactly as Ops<Cpu>::rope forms them
/// (freq_factors / mscale: Phi-3 longrope; rope() with inverse=true is then the transpose, i.e. the backward).
template <class S>
void rope_tables(int64_t T, int n_rot, float theta, S* cs, S* sn, const float* freq_factors = nullptr,
                 float mscale = 1.f) {
  const int half = n_rot / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < half; ++i) {
      double freq = std::pow(double(theta), -2.0 * i / n_rot);
      if (freq_factors) freq /= double(freq_factors[i]);
      const double ang = double(t) * freq;
      if constexpr (std::is_same_v<S, float>) {
        cs[t * half + i] = float(std::cos(ang) * mscale);
        sn[t * half + i] = float(std::sin(ang) * mscale);
      } else {
        cs[t * half + i] = S(std::cos(ang) * mscale);
        sn[t * half + i] = S(std::sin(ang) * mscale);
      }
    }
}

/// Rotates x[N, n_head, head_dim] in place, row r at position r % T (each of the
/// N / T sequences starts at position 0). inverse: rotate by −angle, which is
/// the backward pass (the rotation is orthogonal, so its Jacobianᵀ is its inverse).
template <class S>
void rope(S* x, int64_t N, int64_t T, int n_head, int head_dim, int n_rot, RopeStyle style, const S* cs,
          const S* sn, bool inverse) {
  const int half = n_rot / 2;
  const S sgn = inverse ? S(-1) : S(1);
  LOOPUS_OMP(omp parallel for schedule(static) if (N * n_head * head_dim >= kSerialWork))
  for (int64_t r = 0; r < N; ++r) {
    const S* c = cs + (r % T) * half;
    const S* s = sn + (r % T) * half;
    for (int h = 0; h < n_head; ++h) {
      S* v = x + (r * n_head + h) * int64_t(head_dim);
      for (int i = 0; i < half; ++i) {
        const int a = style == RopeStyle::kInterleaved ? 2 * i : i;
        const int b = style == RopeStyle::kInterleaved ? 2 * i + 1 : i + half;
        const S x0 = v[a], x1 = v[b], si = sgn * s[i];
        v[a] = x0 * c[i] - x1 * si;
        v[b] = x0 * si + x1 * c[i];
      }
    }
  }
}

// ---------------------------------------------------------------- attention

/// Query rows per block of the causal attention kernels: a block of queries
/// only meets the keys up to its last row, which skips the upper triangle.
inline constexpr int64_t kAttnBlock = 64;

/// Scratch elements attention_fwd / attention_bwd need (per call, all threads).
/// One thread's share: two score blocks (P, dP) and seven [T, hd] head panels.
inline int64_t attention_scratch_per_thread(int64_t T, int hd) { return 2 * kAttnBlock * T + 7 * T * int64_t(hd); }
inline int64_t attention_scratch(int64_t T, int hd, int threads) {
  return int64_t(threads) * attention_scratch_per_thread(T, hd);
}

/// In place row[j] = exp(row[j] − m) for j < n; returns Σ (vectorised for f32).
template <class S>
inline double exp_shift(S* row, int64_t n, S m) {
  if constexpr (std::is_same_v<S, float>) {
    return detail::exp_shift_sum(row, n, m);
  } else {
    double z = 0;
    for (int64_t j = 0; j < n; ++j) z += double(row[j] = std::exp(row[j] - m));
    return z;
  }
}
template <class S>
inline S row_max(const S* row, int64_t n) {
  if constexpr (std::is_same_v<S, float>) {
    return detail::max_of(row, n);
  } else {
    S m = row[0];
    for (int64_t j = 1; j < n; ++j) m = std::max(m, row[j]);
    return m;
  }
}

/// Copies a [T, hd] head slice with row stride ld into contiguous dst (and back).
template <class S>
inline void gather_head(const S* src, int64_t ld, int64_t T, int hd, S* dst) {
  for (int64_t t = 0; t < T; ++t) std::memcpy(dst + t * hd, src + t * ld, size_t(hd) * sizeof(S));
}
template <class S>
inline void scatter_head(const S* src, int64_t T, int hd, S* dst, int64_t ld) {
  for (int64_t t = 0; t < T; ++t) std::memcpy(dst + t * ld, src + t * hd, size_t(hd) * sizeof(S));
}

/// Causal GQA self-attention over B independent sequences of T tokens.
/// q, out: [B·T, H·hd]; k, v: [B·T, KV·hd]. lse[B, H, T] receives each row's
/// log-sum-exp of the scaled scores (the backward recomputes P from it); may be null.
/// scratch: attention_scratch(T, hd, max_threads()) elements. One work item per
/// (sequence, K/V head); heads are packed contiguous and processed in query
/// blocks of kAttnBlock rows against keys 0 .. block end.
template <class S>
void attention_fwd(const S* q, const S* k, const S* v, int64_t B, int64_t T, int H, int KV, int hd, S* out, S* lse,
                   S* scratch) {
  const int group = H / KV;
  const S scale = S(1.0 / std::sqrt(double(hd)));
  const int64_t qld = int64_t(H) * hd, kld = int64_t(KV) * hd;
  const int64_t items = B * KV;
  const int64_t per_thread = attention_scratch_per_thread(T, hd);
  LOOPUS_OMP(omp parallel for schedule(dynamic, 1) if (items > 1 && T * T * hd * H >= 32768))
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / KV;
    const int kh = int(it % KV);
    S* base = scratch + int64_t(thread_id()) * per_thread;
    S* Pb = base;
    S* Qc = base + 2 * kAttnBlock * T;
    S* Kc = Qc + T * hd;
    S* Vc = Kc + T * hd;
    S* Oc = Vc + T * hd;
    gather_head(k + b * T * kld + kh * hd, kld, T, hd, Kc);
    gather_head(v + b * T * kld + kh * hd, kld, T, hd, Vc);
    for (int g = 0; g < group; ++g) {
      const int h = kh * group + g;
      gather_head(q + b * T * qld + h * hd, qld, T, hd, Qc);
      for (int64_t i0 = 0; i0 < T; i0 += kAttnBlock) {
        const int64_t nb = std::min(kAttnBlock, T - i0), nk = i0 + nb;
        MatMap<S> P(Pb, nb, nk);
        P.noalias() = (CMatMap<S>(Qc + i0 * hd, nb, hd) * CMatMap<S>(Kc, nk, hd).transpose()) * scale;
        for (int64_t r = 0; r < nb; ++r) {
          const int64_t i = i0 + r, n = i + 1;
          S* row = Pb + r * nk;
          const S m = row_max(row, n);
          const double z = exp_shift(row, n, m);
          const S inv = S(1.0 / z);
          for (int64_t j = 0; j < n; ++j) row[j] *= inv;
          for (int64_t j = n; j < nk; ++j) row[j] = S(0);
          if (lse) lse[(b * H + h) * T + i] = m + S(std::log(z));
        }
        MatMap<S>(Oc + i0 * hd, nb, hd).noalias() = P * CMatMap<S>(Vc, nk, hd);
      }
      scatter_head(Oc, T, hd, out + b * T * qld + h * hd, qld);
    }
  }
}

/// Backward of attention_fwd. dout: [B·T, H·hd]. Writes dq (same layout as q)
/// and dk, dv (overwritten). One work item per (sequence, K/V head), so the
/// heads sharing a K/V head accumulate into it without races.
template <class S>
void attention_bwd(const S* q, const S* k, const S* v, const S* out, const S* lse, const S* dout, int64_t B,
                   int64_t T, int H, int KV, int hd, S* dq, S* dk, S* dv, S* scratch) {
  const int group = H / KV;
  const S scale = S(1.0 / std::sqrt(double(hd)));
  const int64_t qld = int64_t(H) * hd, kld = int64_t(KV) * hd;
  const int64_t items = B * KV;
  const int64_t per_thread = attention_scratch_per_thread(T, hd);
  LOOPUS_OMP(omp parallel for schedule(dynamic, 1) if (items > 1 && T * T * hd * H >= 32768))
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / KV;
    const int kh = int(it % KV);
    S* base = scratch + int64_t(thread_id()) * per_thread;
    S* Pb = base;
    S* dPb = base + kAttnBlock * T;
    S* Qc = base + 2 * kAttnBlock * T;
    S* Kc = Qc + T * hd;
    S* Vc = Kc + T * hd;
    S* dOc = Vc + T * hd;
    S* dQc = dOc + T * hd;
    S* dKc = dQc + T * hd;
    S* dVc = dKc + T * hd;
    gather_head(k + b * T * kld + kh * hd, kld, T, hd, Kc);
    gather_head(v + b * T * kld + kh * hd, kld, T, hd, Vc);
    std::fill(dKc, dKc + 2 * T * hd, S(0));  // dK, dV
    for (int g = 0; g < group; ++g) {
      const int h = kh * group + g;
      gather_head(q + b * T * qld + h * hd, qld, T, hd, Qc);
      gather_head(dout + b * T * qld + h * hd, qld, T, hd, dOc);
      const S* L = lse + (b * H + h) * T;
      const S* O = out + b * T * qld + h * hd;
      for (int64_t i0 = 0; i0 < T; i0 += kAttnBlock) {
        const int64_t nb = std::min(kAttnBlock, T - i0), nk = i0 + nb;
        MatMap<S> P(Pb, nb, nk), dP(dPb, nb, nk);
        CMatMap<S> Qb(Qc + i0 * hd, nb, hd), dOb(dOc + i0 * hd, nb, hd);
        P.noalias() = (Qb * CMatMap<S>(Kc, nk, hd).transpose()) * scale;
        dP.noalias() = dOb * CMatMap<S>(Vc, nk, hd).transpose();
        for (int64_t r = 0; r < nb; ++r) {
          const int64_t i = i0 + r, n = i + 1;
          S* pr = Pb + r * nk;
          S* dpr = dPb + r * nk;
          S Di = 0;  // rowsum(dO ∘ O)
          for (int e = 0; e < hd; ++e) Di += dOc[i * hd + e] * O[i * qld + e];
          exp_shift(pr, n, L[i]);
          for (int64_t j = 0; j < n; ++j) dpr[j] = pr[j] * (dpr[j] - Di);  // dS
          for (int64_t j = n; j < nk; ++j) pr[j] = dpr[j] = S(0);
        }
        MatMap<S>(dVc, nk, hd).noalias() += P.transpose() * dOb;
        MatMap<S>(dQc + i0 * hd, nb, hd).noalias() = (dP * CMatMap<S>(Kc, nk, hd)) * scale;
        MatMap<S>(dKc, nk, hd).noalias() += (dP.transpose() * Qb) * scale;
      }
      scatter_head(dQc, T, hd, dq + b * T * qld + h * hd, qld);
    }
    scatter_head(dKc, T, hd, dk + b * T * kld + kh * hd, kld);
    scatter_head(dVc, T, hd, dv + b * T * kld + kh * hd, kld);
  }
}

// ---------------------------------------------------------------- elementwise

template <class S>
inline S sigmoid(S x) {
  return S(1) / (S(1) + std::exp(-x));
}

/// act = silu(g) · u
template <class S>
void swiglu(const S* g, const S* u, int64_t n, S* act) {
  int64_t i = 0;
  if constexpr (std::is_same_v<S, float>) {
    namespace simd = simd;
    using simd::VecF;
    constexpr int64_t W = simd::kLanes;
    const VecF one = VecF::set1(1.f), zero = VecF::zero();
    for (; i + W <= n; i += W) {
      const VecF gv = VecF::load(g + i);
      (gv * VecF::load(u + i) / (one + simd::exp(zero - gv))).store(act + i);
    }
  }
  for (; i < n; ++i) act[i] = g[i] / (S(1) + std::exp(-g[i])) * u[i];
}

/// dg = dact·u·silu'(g), du = dact·silu(g); silu'(g) = σ(g)(1 + g(1 − σ(g))).
template <class S>
void swiglu_bwd(const S* g, const S* u, const S* dact, int64_t n, S* dg, S* du) {
  int64_t i = 0;
  if constexpr (std::is_same_v<S, float>) {
    namespace simd = simd;
    using simd::VecF;
    constexpr int64_t W = simd::kLanes;
    const VecF one = VecF::set1(1.f), zero = VecF::zero();
    for (; i + W <= n; i += W) {
      const VecF gv = VecF::load(g + i), da = VecF::load(dact + i);
      const VecF s = one / (one + simd::exp(zero - gv));
      (da * gv * s).store(du + i);
      (da * VecF::load(u + i) * s * simd::fma(gv, one - s, one)).store(dg + i);
    }
  }
  for (; i < n; ++i) {
    const S s = sigmoid(g[i]);
    du[i] = dact[i] * g[i] * s;
    dg[i] = dact[i] * u[i] * s * (S(1) + g[i] * (S(1) - s));
  }
}

/// softplus as torch.nn.functional.softplus (beta 1, threshold 20: linear above it).
template <class S>
inline S softplus(S z) {
  return z > S(20) ? z : S(std::log1p(std::exp(z)));
}
/// d softplus / dz, matching torch's backward (1 above the threshold).
template <class S>
inline S softplus_grad(S z) {
  return z > S(20) ? S(1) : sigmoid(z);
}

// ---------------------------------------------------------------- LayerNorm (q head)

/// y = (x − mean)/sqrt(var + eps)·w + b per row of d (biased variance, as torch); keeps xhat and rstd.
template <class S>
void layernorm(const S* x, const S* w, const S* b, int64_t N, int64_t d, double eps, S* y, S* xhat, S* rstd) {
  for (int64_t t = 0; t < N; ++t) {
    const S* xr = x + t * d;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += xr[i];
    mean /= double(d);
    for (int64_t i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= double(d);
    const double r = 1.0 / std::sqrt(var + eps);
    rstd[t] = S(r);
    for (int64_t i = 0; i < d; ++i) {
      xhat[t * d + i] = S((xr[i] - mean) * r);
      y[t * d + i] = xhat[t * d + i] * w[i] + b[i];
    }
  }
}

/// dx = r·(dxh − mean(dxh) − xhat·mean(dxh∘xhat)) with dxh = dy∘w; dw += Σ dy∘xhat; db += Σ dy.
template <class S>
void layernorm_bwd(const S* xhat, const S* rstd, const S* w, const S* dy, int64_t N, int64_t d, S* dx, S* dw,
                   S* db) {
  for (int64_t t = 0; t < N; ++t) {
    const S* xh = xhat + t * d;
    const S* dyr = dy + t * d;
    double m1 = 0, m2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double g = double(dyr[i]) * w[i];
      m1 += g;
      m2 += g * xh[i];
    }
    m1 /= double(d);
    m2 /= double(d);
    for (int64_t i = 0; i < d; ++i)
      dx[t * d + i] = S(double(rstd[t]) * (double(dyr[i]) * w[i] - m1 - xh[i] * m2));
    if (dw)
      for (int64_t i = 0; i < d; ++i) dw[i] += dyr[i] * xh[i];
    if (db)
      for (int64_t i = 0; i < d; ++i) db[i] += dyr[i];
  }
}

// ---------------------------------------------------------------- losses

/// Token-level cross-entropy over rows of V logits. Row r's target is
/// target[r] (< 0: ignored, like ignore_index = −100). Returns the sum of the
/// losses of the counted rows (summed serially from row_loss[N], so the result
/// does not depend on the thread count) and sets *n_counted; argmax[r] gets the
/// first maximal index of row r (torch's tie rule; may be null). The logits
/// are consumed: each row becomes grad_scale·(softmax − onehot) (zero for
/// ignored rows), the gradient of grad_scale·Σ loss (softmax only when
/// grad_scale is 0).
template <class S>
double cross_entropy(S* logits, const int32_t* target, int64_t N, int64_t V, double grad_scale, int32_t* argmax,
                     double* row_loss, int64_t* n_counted) {
  LOOPUS_OMP(omp parallel for schedule(static) if (N * V >= kSerialWork))
  for (int64_t r = 0; r < N; ++r) {
    S* row = logits + r * V;
    const int32_t y = target[r];
    const S m = row_max(row, V);
    if (argmax) {
      int64_t am = 0;
      while (am + 1 < V && !(row[am] == m)) ++am;  // first maximal index
      argmax[r] = int32_t(am);
    }
    row_loss[r] = 0;
    if (y < 0) {
      if (grad_scale != 0) std::fill(row, row + V, S(0));
      continue;
    }
    const S xy = row[y];
    const double z = exp_shift(row, V, m);  // row = exp(x − m)
    const double lse = double(m) + std::log(z);
    row_loss[r] = lse - double(xy);
    const S c = S((grad_scale != 0 ? grad_scale : 1.0) / z);
    for (int64_t j = 0; j < V; ++j) row[j] *= c;
    if (grad_scale != 0) row[y] -= S(grad_scale);
  }
  double total = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < N; ++r)
    if (target[r] >= 0) {
      total += row_loss[r];
      ++counted;
    }
  if (n_counted) *n_counted = counted;
  return total;
}

// ---------------------------------------------------------------- selective gate, q head, rows

/// The gate's elementwise forward on N rows of d: z += bias; a = exp(−softplus(z)·exp(A_log));
/// out = a·p + (1 − a)·h (out must not alias p, h, z or a).
template <class S>
void gate_mix(const S* A_log, const S* bias, S* z, const S* p, const S* h, S* a, S* out, int64_t N, int64_t d) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) {
      const int64_t i = n * d + c;
      z[i] += bias[c];
      const S ai = std::exp(-softplus(z[i]) * std::exp(A_log[c]));
      a[i] = ai;
      out[i] = ai * p[i] + (S(1) - ai) * h[i];
    }
}

/// Backward of gate_mix: dp = a·dout, dh = (1 − a)·dout (overwritten), dz = dL/dz (overwritten),
/// gA += dL/dA_log (may be null). With a = exp(−δ·A), δ = softplus(z), A = exp(A_log):
/// da/dδ = −A·a and da/dA_log = −δ·A·a.
template <class S>
void gate_mix_bwd(const S* dout, const S* p, const S* h, const S* z, const S* a, const S* A_log, S* dp, S* dh, S* dz,
                  S* gA, int64_t N, int64_t d) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) {
      const int64_t i = n * d + c;
      const S ai = a[i], diff = p[i] - h[i], A = std::exp(A_log[c]);
      const S da = dout[i] * diff;
      dp[i] = ai * dout[i];
      dh[i] = (S(1) - ai) * dout[i];
      if (gA) gA[c] += -softplus(z[i]) * A * ai * da;
      dz[i] = -A * ai * da * softplus_grad(z[i]);
    }
}

/// acc[c] += Σ_n x[n, c] (rows in order).
template <class S>
void col_sum_add(const S* x, int64_t N, int64_t d, S* acc) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < d; ++c) acc[c] += x[n * d + c];
}

/// out[n] = bias[0] + Σ_i w[i]·y[n, i] (double accumulation).
template <class S>
void row_dot(const S* y, const S* w, const S* bias, int64_t N, int64_t d, S* out) {
  for (int64_t n = 0; n < N; ++n) {
    double s = double(bias[0]);
    for (int64_t i = 0; i < d; ++i) s += double(w[i]) * double(y[n * d + i]);
    out[n] = S(s);
  }
}

/// Backward of row_dot from dout[N]: dy = dout ⊗ w (overwritten); gw += Σ_n dout[n]·y[n] and gb += Σ dout
/// (each may be null).
template <class S>
void row_dot_bwd(const S* dout, const S* w, const S* y, int64_t N, int64_t d, S* dy, S* gw, S* gb) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < d; ++i) {
      dy[n * d + i] = dout[n] * w[i];
      if (gw) gw[i] += dout[n] * y[n * d + i];
    }
    if (gb) gb[0] += dout[n];
  }
}

/// out[i, :] = a[rows[i], :] − b[rows[i], :] for i < n (rows of width d).
template <class S>
void gather_rows_diff(const S* a, const S* b, const int64_t* rows, int64_t n, int64_t d, S* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c) out[i * d + c] = a[rows[i] * d + c] - b[rows[i] * d + c];
}

/// x[rows[i], :] += sign·src[i, :] for i < n.
template <class S>
void scatter_rows_add(S* x, const int64_t* rows, int64_t n, int64_t d, const S* src, S sign) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c) x[rows[i] * d + c] += sign * src[i * d + c];
}

// ---------------------------------------------------------------- optimizer

/// Σ x² in double, in index order.
template <class S>
double sum_squares(const S* x, int64_t n) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  return ss;
}

/// One AdamW update of n parameters (torch semantics, decoupled decay); zeroes g.
/// step_size = lr / bc1, keep = 1 − lr·wd (applied when decay), bc2_sqrt = sqrt(bc2), scale = clip factor.
template <class S>
void adamw(S* w, S* g, S* m, S* v, int64_t n, S b1, S b2, S eps, S step_size, S bc2_sqrt, bool decay, S keep, S scale) {
  const S one = S(1);
  for (int64_t i = 0; i < n; ++i) {
    const S gi = g[i] * scale;
    if (decay) w[i] *= keep;
    m[i] = b1 * m[i] + (one - b1) * gi;
    v[i] = b2 * v[i] + (one - b2) * gi * gi;
    w[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    g[i] = S(0);
  }
}

}  // namespace kern
}  // namespace loopus::cpu
