// LoopedWeights: a base model recast into encoder / reasoning / decoder, plus gate and q-head parameters.
// SPDX-License-Identifier: MIT
#pragma once
#include <memory>
#include <string>

#include "loopus/model/confidence_head.hpp"
#include "loopus/model/layer_split.hpp"
#include "loopus/model/weights.hpp"
#include "loopus/policies/gate/selective_gate.hpp"
#include "loopus/policies/halting/halting.hpp"

namespace loopus {

/// Loop settings stored in a LoopUS config.json (N, q_threshold, ...).
struct LoopDefaults {
  int n_loops = 8;                 ///< "N"
  float q_threshold = 0.9f;
  int q_eval_interval = 1;
  std::string halting_strategy = "threshold";
  float convergence_epsilon = 1e-2f;
};

/// Everything a LoopedModel reads. gate / q_head are null when the model was
/// recast from a plain checkpoint and none was created.
struct LoopedWeights {
  std::shared_ptr<const ModelWeights> base;
  LayerSplit split;
  std::shared_ptr<const SelectiveGateWeights> gate;
  std::shared_ptr<const ConfidenceHead> q_head;
  LoopDefaults defaults;
};

}  // namespace loopus

namespace loopus {

/// Recasts a plain model: same weights, split into blocks; no gate or q head.
inline std::shared_ptr<LoopedWeights> recast(std::shared_ptr<const ModelWeights> base, LayerSplit split) {
  auto w = std::make_shared<LoopedWeights>();
  if (split.n_layer() != base->hp.n_layer)
    throw UsageError("layer split " + split.text() + " does not match the model's " + std::to_string(base->hp.n_layer) +
                     " layers");
  w->base = std::move(base);
  w->split = std::move(split);
  return w;
}

}  // namespace loopus
