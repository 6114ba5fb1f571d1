// synth_loop_parts: random LoopUS parameters (official-init gate, random q head) for a recast model.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <memory>

#include "loopus/core/random.hpp"
#include "loopus/model/looped_weights.hpp"

namespace loopus {

/// Gives `lw` an official-init selective gate and a random, non-trivial q
/// head, both drawn from one generator seeded with seed ^ a fixed constant
/// (what `loopus synth --loopus` writes; the parity goldens depend on this
/// exact stream).
inline void synth_loop_parts(LoopedWeights& lw, uint64_t seed) {
  const int64_t d = lw.base->hp.n_embd;
  SplitMix64 rng(seed ^ 0x6c6f6f7075735eedull);
  auto uni = [&] { return rng.uniform(); };
  lw.gate = std::make_shared<SelectiveGateWeights>(SelectiveGateWeights::official_init(d, uni));
  auto q = std::make_shared<ConfidenceHead>();
  q->d = d;
  for (int64_t i = 0; i < d; ++i) {
    q->ln_w.push_back(float(0.5 + uni()));
    q->ln_b.push_back(float(0.2 * (uni() - 0.5)));
    q->w.push_back(float((uni() - 0.5) * 0.5));
  }
  q->b = 0.1f;
  lw.q_head = q;
}

}  // namespace loopus
