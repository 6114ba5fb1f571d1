// Ops<Reference>: plain scalar loops, double accumulation. The oracle for every kernel.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loopus/core/backend.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"

namespace loopus {

/// The scalar oracle. Two layers, as every backend has them:
///  - the kernels on host arrays (pointer arguments), which tests compare each
///    optimised kernel against;
///  - the same operations on Span<Reference> (the OpsBackend concept in
///    ops/concept.hpp), which is all that model and policy code may call.
/// Span<Reference> is opaque outside this struct, so a LoopedModel<Reference>
/// that compiles cannot touch activation memory except through these
/// functions: it is the compiler's check that the model code is backend-clean.
/// Shapes: T tokens of one sequence, row-major. See docs/architecture.md.
template <>
struct Ops<Reference> {
  using S = Span<Reference>;
  using CS = CSpan<Reference>;
  /// y[T, W.rows] = x[T, W.cols] · Wᵀ: the exact product, in double. A quantized W is widened
  /// row by row to the f32 values its blocks encode (dequantize); the activations stay exact
  /// (the fast kernels' rounding of x to 8-bit blocks has its own oracle, ops/reference/quant.hpp).
  static void matmul(const Weight& W, const float* x, int64_t T, float* y) {
    if (W.quantized()) {
      std::vector<float> row(static_cast<size_t>(W.cols));
      for (int64_t r = 0; r < W.rows; ++r) {
        dequantize_rows(W, r, 1, row.data());
        for (int64_t t = 0; t < T; ++t) {
          double s = 0;
          for (int64_t c = 0; c < W.cols; ++c) s += double(row[size_t(c)]) * x[t * W.cols + c];
          y[t * W.rows + r] = float(s);
        }
      }
      return;
    }
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < W.rows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < W.cols; ++c) s += double(W.at(r, c)) * x[t * W.cols + c];
        y[t * W.rows + r] = float(s);
      }
  }

  /// y[T, d] = x / rms(x) * g, per row; y may alias x.
  static void rmsnorm(const float* x, const Weight& g, int64_t T, int64_t d, float eps, float* y) {
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += double(x[t * d + i]) * x[t * d + i];
      const float inv = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
      for (int64_t i = 0; i < d; ++i) y[t * d + i] = x[t * d + i] * inv * g.at(0, i);
    }
  }

  /// Rotates x[T, n_head, head_dim] in place; token t is at position pos0 + t.
  /// Only the first n_rot dims of each head rotate; frequency of pair i is theta^(-2i/n_rot),
  /// divided by freq_factors[i] when given (Phi-3 longrope); cos and sin are scaled by mscale.
  static void rope(float* x, int64_t T, int n_head, int head_dim, int n_rot, int64_t pos0, float theta,
                   RopeStyle style, const float* freq_factors = nullptr, float mscale = 1.f) {
    const int half = n_rot / 2;
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < n_head; ++h) {
        float* v = x + (t * n_head + h) * head_dim;
        for (int i = 0; i < half; ++i) {
          double freq = std::pow(double(theta), -2.0 * i / n_rot);
          if (freq_factors) freq /= double(freq_factors[i]);
          const double ang = double(pos0 + t) * freq;
          const double c = std::cos(ang) * mscale, s = std::sin(ang) * mscale;
          const int a = style == RopeStyle::kInterleaved ? 2 * i : i;
          const int b = style == RopeStyle::kInterleaved ? 2 * i + 1 : i + half;
          const double x0 = v[a], x1 = v[b];
          v[a] = float(x0 * c - x1 * s);
          v[b] = float(x0 * s + x1 * c);
        }
      }
  }

  /// Causal grouped-query attention for T new tokens at positions pos0..pos0+T-1.
  /// q: [T, n_head, hd]. k, v: cache rows [n_ctx, n_kv, hd], already holding the
  /// new tokens' rows; token t attends to rows kv_begin .. pos0 + t.
  /// out: [T, n_head * hd].
  static void attention(const float* q, const float* k, const float* v, int64_t T, int64_t pos0,
                        int64_t kv_begin, int n_head, int n_kv, int hd, float* out) {
    const int group = n_head / n_kv;
    const double scale = 1.0 / std::sqrt(double(hd));
    const int64_t row = int64_t(n_kv) * hd;
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < n_head; ++h) {
        const float* qv = q + (t * n_head + h) * hd;
        const int kh = h / group;
        const int64_t end = pos0 + t + 1;
        double m = -INFINITY;
        double* sc = new double[size_t(end - kv_begin)];
        for (int64_t j = kv_begin; j < end; ++j) {
          double s = 0;
          for (int i = 0; i < hd; ++i) s += double(qv[i]) * k[j * row + kh * hd + i];
          sc[j - kv_begin] = s * scale;
          m = std::max(m, sc[j - kv_begin]);
        }
        double z = 0;
        for (int64_t j = kv_begin; j < end; ++j) z += (sc[j - kv_begin] = std::exp(sc[j - kv_begin] - m));
        for (int i = 0; i < hd; ++i) {
          double acc = 0;
          for (int64_t j = kv_begin; j < end; ++j) acc += sc[j - kv_begin] * v[j * row + kh * hd + i];
          out[(t * n_head + h) * hd + i] = float(acc / z);
        }
        delete[] sc;
      }
  }

  /// out[n] = silu(gate) * up
  static void swiglu(const float* gate, const float* up, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      out[i] = float(g / (1.0 + std::exp(-g)) * up[i]);
    }
  }

  /// y += x
  static void add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }

  /// out[T, E.cols] = rows ids[t] of E
  static void embed(const Weight& E, const int32_t* ids, int64_t T, float* out) {
    if (E.quantized()) {
      for (int64_t t = 0; t < T; ++t) dequantize_rows(E, ids[t], 1, out + t * E.cols);
      return;
    }
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < E.cols; ++c) out[t * E.cols + c] = E.at(ids[t], c);
  }

  /// In-place softmax over n values.
  static void softmax(float* x, int64_t n) {
    double m = -INFINITY, z = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
    for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - m);
    for (int64_t i = 0; i < n; ++i) x[i] = float(std::exp(double(x[i]) - m) / z);
  }

  // ---- the same operations on Reference storage (see ops/concept.hpp for each contract) ----

  // No borrow_host: like a device backend, Reference hands logits back through
  // its own memory and download (Transformer::head_to_host's staging path), so
  // every Reference test runs that path; only Cpu writes the caller's buffer in place.
  static void upload(const float* src, S dst) { std::copy(src, src + dst.size(), dst.p_); }
  static void download(CS src, float* dst) { std::copy(src.p_, src.p_ + src.size(), dst); }
  static void copy(S dst, CS src) {
    LOOPUS_ASSERT(dst.size() == src.size());
    std::copy(src.p_, src.p_ + src.size(), dst.p_);
  }
  static void fill(S x, float v) { std::fill(x.p_, x.p_ + x.size(), v); }

  static void embed(const Weight& E, const int32_t* ids, int64_t T, S out) {
    LOOPUS_ASSERT(out.size() >= T * E.cols);
    embed(E, ids, T, out.p_);
  }
  static void matmul(const Weight& W, CS x, int64_t T, S y) {
    LOOPUS_ASSERT(x.size() >= T * W.cols && y.size() >= T * W.rows);
    matmul(W, x.p_, T, y.p_);
  }
  static void rmsnorm(CS x, const Weight& g, int64_t T, int64_t d, float eps, S y) {
    LOOPUS_ASSERT(x.size() >= T * d && y.size() >= T * d);
    rmsnorm(x.p_, g, T, d, eps, y.p_);
  }
  static void rope(S x, int64_t T, int n_head, int head_dim, int n_rot, int64_t pos0, float theta, RopeStyle style,
                   const float* freq_factors = nullptr, float mscale = 1.f) {
    LOOPUS_ASSERT(x.size() >= T * n_head * head_dim);
    rope(x.p_, T, n_head, head_dim, n_rot, pos0, theta, style, freq_factors, mscale);
  }
  static void attention(CS q, CS k, CS v, int64_t T, int64_t pos0, int64_t kv_begin, int n_head, int n_kv, int hd,
                        S out) {
    LOOPUS_ASSERT(k.size() >= (pos0 + T) * n_kv * hd && out.size() >= T * n_head * hd);
    attention(q.p_, k.p_, v.p_, T, pos0, kv_begin, n_head, n_kv, hd, out.p_);
  }
  static void swiglu(CS gate, CS up, S out) {
    LOOPUS_ASSERT(gate.size() == out.size() && up.size() == out.size());
    swiglu(gate.p_, up.p_, out.size(), out.p_);
  }
  static void add(S y, CS x) {
    LOOPUS_ASSERT(y.size() == x.size());
    add(y.p_, x.p_, y.size());
  }
  static void softmax(S x) { softmax(x.p_, x.size()); }

  /// out = a − b
  static void sub(CS a, CS b, S out) {
    LOOPUS_ASSERT(a.size() == out.size() && b.size() == out.size());
    for (int64_t i = 0; i < out.size(); ++i) out.p_[i] = float(double(a.p_[i]) - double(b.p_[i]));
  }
  /// h <- alpha·p + (1 − alpha)·h
  static void mix(S h, CS p, float alpha) {
    LOOPUS_ASSERT(h.size() == p.size());
    for (int64_t i = 0; i < h.size(); ++i) h.p_[i] = float(double(alpha) * p.p_[i] + (1.0 - double(alpha)) * h.p_[i]);
  }
  /// The selective gate's mix for T rows of width d: a = exp(−softplus(z + bias)·A) per channel
  /// (torch softplus, threshold 20), h <- a·p + (1 − a)·h. Returns the mean of a.
  static float selective_mix(CS z, const Weight& bias, const Weight& A, CS p, S h, int64_t T, int64_t d) {
    LOOPUS_ASSERT(z.size() >= T * d && p.size() >= T * d && h.size() >= T * d);
    double asum = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const double zz = double(z.p_[t * d + c]) + bias.at(0, c);
        const double delta = zz > 20.0 ? zz : std::log1p(std::exp(zz));
        const double a = std::exp(-delta * A.at(0, c));
        float& hv = h.p_[t * d + c];
        hv = float(a * p.p_[t * d + c] + (1.0 - a) * hv);
        asum += a;
      }
    return T * d > 0 ? float(asum / double(T * d)) : 0.f;
  }
  /// Linear(d -> 1)(LayerNorm(x)) of one row x[d] (biased variance, as torch): the confidence head's logit.
  static float layernorm_dot(CS x, const Weight& ln_w, const Weight& ln_b, const Weight& w, float bias, float eps) {
    const int64_t d = x.size();
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x.p_[i];
    mean /= double(d);
    for (int64_t i = 0; i < d; ++i) var += (x.p_[i] - mean) * (x.p_[i] - mean);
    var /= double(d);
    const double inv = 1.0 / std::sqrt(var + double(eps));
    double s = bias;
    for (int64_t i = 0; i < d; ++i) s += double(w.at(0, i)) * ((x.p_[i] - mean) * inv * ln_w.at(0, i) + ln_b.at(0, i));
    return float(s);
  }
  /// ‖a − b‖₂
  static double distance(CS a, CS b) {
    LOOPUS_ASSERT(a.size() == b.size());
    double ss = 0;
    for (int64_t i = 0; i < a.size(); ++i) ss += (double(a.p_[i]) - b.p_[i]) * (double(a.p_[i]) - b.p_[i]);
    return std::sqrt(ss);
  }
  /// In place: x <- x − logsumexp(x).
  static void log_softmax(S x) {
    double m = -INFINITY, z = 0;
    for (int64_t i = 0; i < x.size(); ++i) m = std::max(m, double(x.p_[i]));
    for (int64_t i = 0; i < x.size(); ++i) z += std::exp(double(x.p_[i]) - m);
    const double lz = m + std::log(z);
    for (int64_t i = 0; i < x.size(); ++i) x.p_[i] = float(double(x.p_[i]) - lz);
  }
  /// KL(P ‖ Q) = Σ exp(logp)·(logp − logq) of two log-distributions.
  static double kl_div(CS logp, CS logq) {
    LOOPUS_ASSERT(logp.size() == logq.size());
    double kl = 0;
    for (int64_t i = 0; i < logp.size(); ++i)
      kl += std::exp(double(logp.p_[i])) * (double(logp.p_[i]) - double(logq.p_[i]));
    return kl;
  }
  /// Index of the largest value (the first one on ties); -1 when empty.
  static int64_t argmax(CS x) {
    int64_t best = x.empty() ? -1 : 0;
    for (int64_t i = 1; i < x.size(); ++i)
      if (x.p_[i] > x.p_[best]) best = i;
    return best;
  }
};

static_assert(OpsBackend<Reference>, "Ops<Reference> must provide every operation of ops/concept.hpp");

}  // namespace loopus
