// NoCache: every call recomputes the whole sequence (the paper's Fig. 3 baseline).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string_view>

#include "loopus/core/kv_cache.hpp"

namespace loopus {

/// No key/value reuse between calls: each eval() reruns encoder, loop and
/// decoder over the full sequence, so every token shares the depth the last
/// token's halting picked (the official lm-eval path). Scratch caches hold
/// one depth at a time.
struct NoCache {
  static constexpr std::string_view kName = "none";
  static constexpr bool kRecompute = true;
  int reasoning_slots(int n_reason, int) const { return n_reason; }
  int slot(int j, int, int) const { return j; }
  /// Nothing is kept between calls.
  template <class Backend>
  void after_exit(KvCache<Backend>&, int, int, int, int64_t, int64_t) const {}
};

}  // namespace loopus
