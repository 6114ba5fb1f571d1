// SharedCache: one KV slot per reasoning layer, reused by every depth (B times less memory).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string_view>

#include "loopus/core/kv_cache.hpp"

namespace loopus {

/// Every depth of reasoning layer j shares slot j: a token overwrites its row
/// at each depth, so later tokens see each past token's keys/values from the
/// last depth it ran. An approximation of PerDepthCache (measured in docs/).
struct SharedCache {
  static constexpr std::string_view kName = "shared";
  static constexpr bool kRecompute = false;
  int reasoning_slots(int n_reason, int) const { return n_reason; }
  int slot(int j, int, int) const { return j; }
  /// Nothing to do: the slot already holds the last depth each token ran.
  template <class Backend>
  void after_exit(KvCache<Backend>&, int, int, int, int64_t, int64_t) const {}
};

}  // namespace loopus
