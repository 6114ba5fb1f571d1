// Ops<Reference>: plain scalar loops, double accumulation. The oracle for every kernel.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "loopus/core/backend.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// Every backend's Ops<B> provides exactly these static functions, with these
/// shapes (T tokens of one sequence, row-major). See docs/architecture.md.
template <>
struct Ops<Reference> {
  /// y[T, W.rows] = x[T, W.cols] · Wᵀ
  static void matmul(const Weight& W, const float* x, int64_t T, float* y) {
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
};

}  // namespace loopus
