// Runtime selection of gate and cache policies: turns CLI-style specs into one LoopedModel instantiation.
// SPDX-License-Identifier: MIT
#pragma once
#include <memory>
#include <string>

#include "loopus/core/random.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "loopus/policies/gate/no_gate.hpp"

namespace loopus {

/// The run-time choices a user makes for a looped model (CLI flags).
struct LoopRunSpec {
  std::string gate = "auto";       ///< auto | selective | none | mix:ALPHA
  std::string cache = "per-depth"; ///< per-depth | shared | none
  std::string exit_fill = "drop";  ///< drop (official) | latest (per-depth only)
  std::string halt = "auto";       ///< auto | fixed | q:THR | cdf:THR | conv:EPS | kl:EPS
  int loops = 8;                   ///< B
  int min_loops = 1;
  int q_eval_interval = 0;         ///< 0: the checkpoint's value
  bool q_on_delta = false;         ///< q head reads p - h (training path) instead of h
  uint64_t gate_seed = 0;          ///< for a fresh selective gate on a plain model

  HaltingParams halting(const LoopedWeights& lw) const {
    std::string h = halt;
    if (h == "auto") {
      const auto& d = lw.defaults;
      if (!lw.q_head) h = "fixed";
      else if (d.halting_strategy == "cdf") h = "cdf:" + std::to_string(d.q_threshold);
      else if (d.halting_strategy == "convergence") h = "conv:" + std::to_string(d.convergence_epsilon);
      else h = "q:" + std::to_string(d.q_threshold);
    }
    HaltingParams p = HaltingParams::parse(h, loops);
    p.min_loops = min_loops;
    p.eval_interval = q_eval_interval > 0 ? q_eval_interval : lw.defaults.q_eval_interval;
    p.q_input = q_on_delta ? QInput::kDelta : QInput::kState;
    if (q_eval_interval < 0)
      throw UsageError("LoopRunSpec::q_eval_interval must be >= 1 (or 0: the checkpoint's), got " +
                       std::to_string(q_eval_interval));
    if (min_loops < 1 || min_loops > loops)
      throw UsageError("LoopRunSpec::min_loops must be in 1..LoopRunSpec::loops (" + std::to_string(loops) + "), got " +
                       std::to_string(min_loops));
    return p;
  }
};

/// Builds the LoopedModel the spec asks for and calls fn(model). A plain model
/// asked for "selective" gets a fresh gate with the official initialisation.
template <class Backend, class Fn>
void with_looped_model(std::shared_ptr<const LoopedWeights> lw, const LoopRunSpec& spec, ContextParams cp, Fn&& fn) {
  LoopParams lp;
  lp.halting = spec.halting(*lw);
  auto with_cache = [&](auto gate) {
    using G = decltype(gate);
    if (spec.cache == "per-depth") {
      PerDepthCache c;
      if (spec.exit_fill == "drop") c.exit_fill = ExitFill::kDrop;
      else if (spec.exit_fill != "latest")
        throw UsageError("LoopRunSpec::exit_fill must be latest or drop, got '" + spec.exit_fill + "'");
      LoopedModel<Backend, G, PerDepthCache> m(lw, lp, cp, std::move(gate), c);
      fn(m);
    } else if (spec.cache == "shared") {
      LoopedModel<Backend, G, SharedCache> m(lw, lp, cp, std::move(gate));
      fn(m);
    } else if (spec.cache == "none") {
      LoopedModel<Backend, G, NoCache> m(lw, lp, cp, std::move(gate));
      fn(m);
    } else {
      throw UsageError("LoopRunSpec::cache must be per-depth, shared or none, got '" + spec.cache + "'");
    }
  };
  std::string g = spec.gate;
  if (g == "auto") g = lw->gate ? "selective" : "none";
  if (g == "selective") {
    auto gw = lw->gate;
    if (!gw) {
      SplitMix64 rng(spec.gate_seed);
      gw = std::make_shared<SelectiveGateWeights>(
          SelectiveGateWeights::official_init(lw->base->hp.n_embd, [&] { return rng.uniform(); }));
    }
    with_cache(SelectiveGate(gw));
  } else if (g == "none") {
    with_cache(NoGate{});
  } else if (g.rfind("mix:", 0) == 0) {
    float a;
    try {
      a = std::stof(g.substr(4));
    } catch (const std::exception&) {
      throw UsageError("LoopRunSpec::gate '" + g + "': expected mix:ALPHA with a number");
    }
    with_cache(FixedMixGate(a));
  } else {
    throw UsageError("LoopRunSpec::gate must be selective, none or mix:ALPHA, got '" + g + "'");
  }
}

}  // namespace loopus
