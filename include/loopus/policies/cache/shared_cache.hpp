// SharedCache: one KV slot per reasoning layer, reused by every depth (B times less memory).
// SPDX-License-Identifier: MIT
#pragma once
#include <string_view>

namespace loopus {

/// Every depth of reasoning layer j shares slot j: a token overwrites its row
/// at each depth, so later tokens see each past token's keys/values from the
/// last depth it ran. An approximation of PerDepthCache (measured in docs/).
struct SharedCache {
  static constexpr std::string_view kName = "shared";
  static constexpr bool kRecompute = false;
  int reasoning_slots(int n_reason, int) const { return n_reason; }
  int slot(int j, int, int) const { return j; }
};

}  // namespace loopus
