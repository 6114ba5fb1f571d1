// AdamW (decoupled weight decay, torch semantics), global-norm clipping, and a token-driven warm-up + cosine schedule.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/train/params.hpp"

namespace loopus::train {

/// Hyperparameters of AdamW; the defaults are torch.optim.AdamW's (and the official run's, lr aside).
struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;
  /// Decay every tensor (the official run: torch AdamW on all parameters,
  /// A_log included). Default off: only Linear weights decay, not norms,
  /// gains, biases or A_log.
  bool decay_all = false;
  double clip = 0;  ///< global gradient-norm clip; 0 = off (the official run has none)
};

/// Linear warm-up to lr over warmup_tokens, then cosine decay to lr·min_ratio
/// at total_tokens (held there beyond). Driven by tokens consumed, not by
/// optimizer steps (the official per-micro-step cosine is a known quirk).
struct LrSchedule {
  double lr = 5e-5;
  double min_ratio = 0.0;
  double warmup_tokens = 0;
  double total_tokens = 1;

  double at(double tokens) const {
    if (warmup_tokens > 0 && tokens < warmup_tokens) return lr * tokens / warmup_tokens;
    const double span = std::max(1.0, total_tokens - warmup_tokens);
    const double p = std::min(1.0, std::max(0.0, (tokens - warmup_tokens) / span));
    const double lo = lr * min_ratio;
    return lo + (lr - lo) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  }
};

/// AdamW over the trainable tensors of a TrainModel. Moments are kept in S
/// (f32 when training) in Backend's memory; the update runs as
/// TrainOps<Backend>::adamw. step() uses and then clears the gradients.
template <class Backend, class S = float>
class AdamW {
 public:
  using Kernels = TrainOps<Backend>;

  AdamW(TrainModel<Backend, S>& m, AdamWConfig cfg) : m_(m), cfg_(cfg) {
    for (auto& p : m_.params()) {
      if (!p.trainable) continue;
      State s;
      s.p = &p;
      s.m.reshape({p.numel()});
      s.v.reshape({p.numel()});
      Kernels::fill(s.m.span(), S(0));
      Kernels::fill(s.v.span(), S(0));
      state_.push_back(std::move(s));
    }
  }
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  const AdamWConfig& config() const { return cfg_; }
  int64_t steps() const { return t_; }

  /// Global L2 norm of the current gradients (double accumulation, fixed order).
  double grad_norm() const {
    double ss = 0;
    for (const auto& s : state_) ss += Kernels::sum_squares(s.p->g.span());
    return std::sqrt(ss);
  }

  /// One update with learning rate lr; clips first when cfg.clip > 0.
  /// Returns the gradient norm before clipping. Zeroes the gradients.
  double step(double lr) {
    const double gn = grad_norm();
    const double scale = cfg_.clip > 0 && gn > cfg_.clip ? cfg_.clip / (gn + 1e-6) : 1.0;
    ++t_;
    const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
    for (auto& s : state_) {
      Param<Backend, S>& p = *s.p;
      const double plr = lr * p.lr_mult;  // parameter-group learning rate
      AdamWStep st;
      st.beta1 = cfg_.beta1;
      st.beta2 = cfg_.beta2;
      st.eps = cfg_.eps;
      st.step_size = plr / bc1;
      st.bc2_sqrt = std::sqrt(bc2);
      st.decay = cfg_.weight_decay > 0 && (cfg_.decay_all || p.decay);
      st.keep = 1.0 - plr * cfg_.weight_decay;
      st.scale = scale;
      Kernels::adamw(p.w.span(), p.g.span(), s.m.span(), s.v.span(), st);
    }
    return gn;
  }

  /// The moment buffers of each trainable tensor, in TrainModel order (for checkpoints).
  struct State {
    Param<Backend, S>* p = nullptr;
    Tensor<Backend, S> m, v;
  };
  std::vector<State>& state() { return state_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  TrainModel<Backend, S>& m_;
  AdamWConfig cfg_;
  std::vector<State> state_;
  int64_t t_ = 0;
};

}  // namespace loopus::train
