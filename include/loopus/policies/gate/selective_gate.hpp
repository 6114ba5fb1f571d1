// SelectiveGate: the LoopUS Mamba-style per-token, per-channel gate between loop iterations.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loopus/core/backend.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// Parameters of `reasoning.gate`, always f32 (method spec section 3):
///   u = dt_input_proj(p - h)            [T, r], no bias, r = ceil(d / 16)
///   delta = softplus(delta_proj(u) + b) [T, d]
///   a = exp(-delta * exp(A_log))        [T, d], in (0, 1)
///   h <- a * p + (1 - a) * h
struct SelectiveGateWeights {
  int64_t d = 0, r = 0;
  std::vector<float> A_log;    ///< [d]
  std::vector<float> delta_w;  ///< [d, r]  delta_proj.weight
  std::vector<float> delta_b;  ///< [d]     delta_proj.bias
  std::vector<float> in_w;     ///< [r, d]  dt_input_proj.weight

  static int64_t rank_for(int64_t d) { return (d + 15) / 16; }

  /// The official initialisation of a fresh gate (S4D-real A, log-uniform dt).
  /// `uniform` returns U[0, 1) draws from the caller's seeded generator.
  template <class Uniform>
  static SelectiveGateWeights official_init(int64_t d, Uniform&& uniform) {
    SelectiveGateWeights g;
    g.d = d;
    g.r = rank_for(d);
    g.A_log.resize(size_t(d));
    for (int64_t c = 0; c < d; ++c) g.A_log[size_t(c)] = float(std::log(double(c + 1)));
    const double wb = 1.0 / std::sqrt(double(g.r));
    g.delta_w.resize(size_t(d * g.r));
    for (auto& v : g.delta_w) v = float((2 * uniform() - 1) * wb);
    g.delta_b.resize(size_t(d));
    for (auto& v : g.delta_b) {
      double dt = std::exp(uniform() * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
      dt = std::max(dt, 1e-4);
      v = float(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
    }
    const double ib = 1.0 / std::sqrt(double(d));  // PyTorch Linear default: U(+-1/sqrt(fan_in))
    g.in_w.resize(size_t(g.r * d));
    for (auto& v : g.in_w) v = float((2 * uniform() - 1) * ib);
    return g;
  }

  /// Official init with A_log = log(eps) for every channel, so a = exp(-delta * eps)
  /// is about 1 everywhere: loop 1 is the plain block (h <- p) until the gate learns.
  template <class Uniform>
  static SelectiveGateWeights open_init(int64_t d, Uniform&& uniform, double eps = 1e-2) {
    SelectiveGateWeights g = official_init(d, uniform);
    for (auto& v : g.A_log) v = float(std::log(eps));
    return g;
  }

  /// A gate that starts at a = alpha on every token and channel, whatever p - h:
  /// A_log = 0, delta_proj.weight = 0, delta_proj.bias = softplus^-1(-ln alpha);
  /// dt_input_proj as in the official init. Training then makes it input-dependent.
  /// alpha = 1/B turns B loops into B small steps along the block's update.
  template <class Uniform>
  static SelectiveGateWeights constant_init(int64_t d, double alpha, Uniform&& uniform) {
    if (!(alpha > 0 && alpha < 1))
      throw UsageError("gate init mix:ALPHA needs 0 < alpha < 1, got " + std::to_string(alpha));
    SelectiveGateWeights g = official_init(d, uniform);
    const double y = -std::log(alpha);                      // the softplus value that gives a = alpha
    const float b = float(y + std::log(-std::expm1(-y)));  // softplus^-1(y)
    std::fill(g.A_log.begin(), g.A_log.end(), 0.f);
    std::fill(g.delta_w.begin(), g.delta_w.end(), 0.f);
    std::fill(g.delta_b.begin(), g.delta_b.end(), b);
    return g;
  }

  /// A fresh gate from a spec: official | open | mix:ALPHA (see above).
  template <class Uniform>
  static SelectiveGateWeights from_spec(const std::string& spec, int64_t d, Uniform&& uniform) {
    if (spec == "official") return official_init(d, uniform);
    if (spec == "open") return open_init(d, uniform);
    if (spec.rfind("mix:", 0) == 0) {
      size_t used = 0;
      double alpha = 0;
      try {
        alpha = std::stod(spec.substr(4), &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != spec.size() - 4)
        throw UsageError("gate init '" + spec + "': expected mix:ALPHA with a number");
      return constant_init(d, alpha, uniform);
    }
    throw UsageError("gate init must be official, open or mix:ALPHA, got '" + spec + "'");
  }

  /// The gate's tensors as checkpoints store them, in this order, named below
  /// the gate's prefix ("reasoning.gate." in a LoopUS folder, "loopus.gate." in
  /// a loopus GGUF). Readers, writers and the trainer enumerate them through
  /// for_each / read; no other file names a gate tensor.
  static constexpr std::string_view kTensorNames[] = {"A_log", "delta_proj.weight", "delta_proj.bias",
                                                      "dt_input_proj.weight"};

  /// Calls f(name, shape, values, decay) for each tensor: shape as stored
  /// ([d] for vectors, [rows, cols] for matrices), decay = AdamW decays it by
  /// default (the Linear weights).
  template <class F>
  void for_each(F&& f) const {
    f(kTensorNames[0], std::vector<int64_t>{d}, A_log, false);
    f(kTensorNames[1], std::vector<int64_t>{d, r}, delta_w, true);
    f(kTensorNames[2], std::vector<int64_t>{d}, delta_b, false);
    f(kTensorNames[3], std::vector<int64_t>{r, d}, in_w, true);
  }
  template <class F>
  void for_each(F&& f) {
    f(kTensorNames[0], std::vector<int64_t>{d}, A_log, false);
    f(kTensorNames[1], std::vector<int64_t>{d, r}, delta_w, true);
    f(kTensorNames[2], std::vector<int64_t>{d}, delta_b, false);
    f(kTensorNames[3], std::vector<int64_t>{r, d}, in_w, true);
  }

  /// A gate of width d read from a checkpoint: shape_of(name) gives a stored
  /// tensor's shape, values(name, numel) its values as f32 (both throw for a
  /// missing or mis-sized tensor, naming it). The rank r comes from
  /// dt_input_proj.weight [r, d]; errors name the file (`where`) and the
  /// tensor under its `prefix`.
  template <class ShapeOf, class Values>
  static SelectiveGateWeights read(int64_t d, ShapeOf&& shape_of, Values&& values, const std::string& where,
                                   const std::string& prefix) {
    SelectiveGateWeights g;
    g.d = d;
    const std::vector<int64_t> in = shape_of(kTensorNames[3]);
    if (in.size() != 2 || in[1] != d)
      throw FormatError(where + ": tensor '" + prefix + std::string(kTensorNames[3]) + "' should be [r, " +
                        std::to_string(d) + "]");
    g.r = in[0];
    g.for_each([&](std::string_view name, const std::vector<int64_t>& shape, std::vector<float>& v, bool) {
      int64_t n = 1;
      for (int64_t e : shape) n *= e;
      v = values(name, n);
    });
    g.check(where);
    return g;
  }

  void check(const std::string& where) const {
    if (d <= 0 || r <= 0 || A_log.size() != size_t(d) || delta_w.size() != size_t(d * r) ||
        delta_b.size() != size_t(d) || in_w.size() != size_t(r * d))
      throw FormatError(where + ": selective gate tensors have inconsistent shapes (d=" + std::to_string(d) +
                        ", r=" + std::to_string(r) + ")");
  }
};

/// The learned gate. Holds its parameters by shared pointer (cheap to copy
/// into several models; a copy gets its own scratch) and its own scratch in
/// the backend's memory. Needs from Ops<Backend>: sub, matmul, selective_mix.
struct SelectiveGate {
  static constexpr std::string_view kName = "selective";
  using Weights = SelectiveGateWeights;

  SelectiveGate() = default;
  explicit SelectiveGate(std::shared_ptr<const Weights> w) : w_(std::move(w)) {
    if (!w_) throw UsageError("SelectiveGate needs weights (a LoopUS checkpoint, or official_init for a fresh gate)");
    w_->check("reasoning.gate");
  }
  SelectiveGate(const SelectiveGate& o) : w_(o.w_) {}
  SelectiveGate& operator=(const SelectiveGate& o) {
    if (this != &o) {
      w_ = o.w_;
      scratch_.reset();
    }
    return *this;
  }
  SelectiveGate(SelectiveGate&&) noexcept = default;
  SelectiveGate& operator=(SelectiveGate&&) noexcept = default;
  const Weights& weights() const { return *w_; }

  /// Sizes the scratch for T rows of width d on Backend (once, before the hot loop).
  template <class Backend>
  void reserve(int64_t T, int64_t d) {
    if (!w_) throw UsageError("SelectiveGate has no weights");
    if (d != w_->d)
      throw UsageError("reasoning.gate has d=" + std::to_string(w_->d) + " but the model's hidden size is " +
                       std::to_string(d));
    A_.resize(size_t(d));
    for (int64_t c = 0; c < d; ++c) A_[size_t(c)] = std::exp(w_->A_log[size_t(c)]);  // -A, > 0
    auto s = std::make_unique<Scratch<Backend>>();
    s->diff.reshape({T, d});
    s->z.reshape({T, d});
    s->u.reshape({T, w_->r});
    scratch_ = std::move(s);
  }

  template <class Backend>
  void blend(CSpan<Backend> p, Span<Backend> h, int64_t T) {
    using K = Ops<Backend>;
    const int64_t d = w_->d, r = w_->r;
    auto* s = dynamic_cast<Scratch<Backend>*>(scratch_.get());
    if (!s || s->diff.dim(0) < T)
      throw UsageError("SelectiveGate::blend: reserve<Backend>(T, d) was not called for this size");
    const Span<Backend> diff = s->diff.rows(0, T), z = s->z.rows(0, T), u = s->u.rows(0, T);
    K::sub(p, h, diff);
    K::matmul(Weight::f32(w_->in_w.data(), r, d), diff, T, u);
    K::matmul(Weight::f32(w_->delta_w.data(), d, r), u, T, z);
    mean_alpha_ = K::selective_mix(z, Weight::f32(w_->delta_b.data(), 1, d), Weight::f32(A_.data(), 1, d), p, h, T, d);
  }
  /// Mean of a over the last blend (the "Alpha" of the paper's Fig. 4b).
  float last_mean_alpha() const { return mean_alpha_; }
  /// The per-channel coefficients a of rows [first, first + count) of the last
  /// blend, to out[count, d] on the host (for observers; recomputed from the
  /// kept pre-activation z exactly as selective_mix does).
  template <class Backend>
  void alpha_rows(int64_t first, int64_t count, float* out) const {
    const int64_t d = w_->d;
    auto* s = dynamic_cast<const Scratch<Backend>*>(scratch_.get());
    if (!s || first < 0 || count < 0 || first + count > s->z.dim(0))
      throw UsageError("SelectiveGate::alpha_rows: rows outside the last blend");
    Ops<Backend>::download(s->z.rows(first, count), out);
    for (int64_t t = 0; t < count; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const double zz = double(out[t * d + c]) + double(w_->delta_b[size_t(c)]);
        const double delta = zz > 20.0 ? zz : std::log1p(std::exp(zz));
        out[t * d + c] = float(std::exp(-delta * double(A_[size_t(c)])));
      }
  }

 private:
  struct ScratchBase {
    virtual ~ScratchBase() = default;
  };
  template <class Backend>
  struct Scratch : ScratchBase {
    Tensor<Backend> diff, z, u;
  };
  std::shared_ptr<const Weights> w_;
  std::vector<float> A_;  ///< exp(A_log), host parameter
  std::unique_ptr<ScratchBase> scratch_;
  float mean_alpha_ = 0.f;
};

}  // namespace loopus
