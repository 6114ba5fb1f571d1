// Halting: when the loop stops (fixed B, q threshold, CDF/hazard, convergence, KL between decodes).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <string>

#include "loopus/core/error.hpp"

namespace loopus {

/// The halting rule is a runtime choice (CLI --halt), so it is a value, not a type.
enum class HaltRule {
  kFixed,        ///< always max_loops
  kThreshold,    ///< q > threshold (official default, "threshold")
  kCdf,          ///< 1 - prod(1 - q_j) > threshold (official "cdf")
  kConvergence,  ///< ||h_r - h_{r-1}|| of the last token < eps (official "convergence")
  kKl,           ///< KL(p_{r-1} || p_r) of successive decoded distributions < eps (zero-shot, no q head)
};

/// Which state the q head reads (method spec open question 1).
enum class QInput {
  kState,  ///< post-gate state h[-1] (official inference path; default)
  kDelta,  ///< pre-gate delta p - h (official training path)
};

struct HaltingParams {
  HaltRule rule = HaltRule::kFixed;
  float threshold = 0.6f;  ///< q_threshold for kThreshold / kCdf
  float eps = 1e-2f;       ///< convergence_epsilon / KL epsilon
  int eval_interval = 1;   ///< q_eval_interval: check after loop r when (r + 1) % interval == 0
  int min_loops = 1;
  int max_loops = 8;       ///< B (the official N)
  QInput q_input = QInput::kState;

  bool needs_q() const { return rule == HaltRule::kThreshold || rule == HaltRule::kCdf; }
  bool needs_decode() const { return rule == HaltRule::kKl; }

  /// "fixed", "q:THR", "cdf:THR", "conv:EPS", "kl:EPS".
  static HaltingParams parse(const std::string& spec, int max_loops) {
    HaltingParams h;
    h.max_loops = max_loops;
    auto colon = spec.find(':');
    const std::string kind = spec.substr(0, colon);
    float value = 0.f;
    bool has_value = colon != std::string::npos;
    if (has_value) {
      try {
        size_t used = 0;
        value = std::stof(spec.substr(colon + 1), &used);
        if (used != spec.size() - colon - 1) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        throw UsageError("halting spec '" + spec + "': '" + spec.substr(colon + 1) + "' is not a number");
      }
    }
    if (kind == "fixed" && !has_value) {
      h.rule = HaltRule::kFixed;
    } else if (kind == "q" || kind == "threshold") {
      h.rule = HaltRule::kThreshold;
      if (has_value) h.threshold = value;
    } else if (kind == "cdf") {
      h.rule = HaltRule::kCdf;
      if (has_value) h.threshold = value;
    } else if (kind == "conv" || kind == "convergence") {
      h.rule = HaltRule::kConvergence;
      if (has_value) h.eps = value;
    } else if (kind == "kl") {
      h.rule = HaltRule::kKl;
      h.eps = has_value ? value : 1e-3f;
    } else {
      throw UsageError("halting spec '" + spec + "': expected fixed, q:THR, cdf:THR, conv:EPS or kl:EPS");
    }
    if (h.needs_q() && !(h.threshold > 0.f && h.threshold < 1.f))
      throw UsageError("halting spec '" + spec + "': the threshold must be in (0, 1)");
    if (!(h.eps > 0.f)) throw UsageError("halting spec '" + spec + "': epsilon must be > 0");
    return h;
  }
  std::string text() const {
    switch (rule) {
      case HaltRule::kFixed: return "fixed";
      case HaltRule::kThreshold: return "q:" + std::to_string(threshold);
      case HaltRule::kCdf: return "cdf:" + std::to_string(threshold);
      case HaltRule::kConvergence: return "conv:" + std::to_string(eps);
      case HaltRule::kKl: return "kl:" + std::to_string(eps);
    }
    return "?";
  }
};

/// Per-forward halting state: feed it one observation per loop, it says stop.
class Halter {
 public:
  explicit Halter(const HaltingParams& p) : p_(p) {}
  void begin() { survive_ = 1.0; }
  /// Is this loop r (0-based) one where the rule is checked?
  bool checks_at(int r) const {
    if (p_.rule == HaltRule::kFixed || r + 1 < p_.min_loops) return false;
    if (p_.needs_q()) return (r + 1) % std::max(1, p_.eval_interval) == 0;
    if (p_.rule == HaltRule::kKl) return r >= 1;  // needs the previous loop's distribution
    return true;                                  // convergence compares with the loop input (h0 at r = 0)
  }
  /// Decide after loop r from the quantity the rule reads: q (probability),
  /// ||Δh||, or KL; returns true to stop.
  bool decide(float value) {
    switch (p_.rule) {
      case HaltRule::kThreshold: return value > p_.threshold;
      case HaltRule::kCdf: {
        const double lam = std::min(double(value), 1.0 - 1e-7);
        survive_ *= 1.0 - lam;
        return 1.0 - survive_ > p_.threshold;
      }
      case HaltRule::kConvergence:
      case HaltRule::kKl: return value < p_.eps;
      case HaltRule::kFixed: return false;
    }
    return false;
  }
  const HaltingParams& params() const { return p_; }

 private:
  HaltingParams p_;
  double survive_ = 1.0;
};

}  // namespace loopus
