// PerDepthCache: one KV cache per loop depth for the reasoning block (the official layout).
// SPDX-License-Identifier: MIT
#pragma once
#include <string_view>

namespace loopus {

/// What a token that halted after e loops leaves in the caches of depths >= e.
enum class ExitFill {
  kLatest,  ///< loopus's option: copy its keys/values from depth e-1 ("latest available depth")
  kDrop,    ///< official, the default: drop those depth caches; later tokens see only tokens after the exit
};

/// Depth r of reasoning layer j reads and writes slot r * |M| + j, so a token
/// at depth r attends to the keys/values every earlier token made at depth r.
/// With fixed halting this is exact: identical to NoCache.
struct PerDepthCache {
  static constexpr std::string_view kName = "per-depth";
  static constexpr bool kRecompute = false;
  ExitFill exit_fill = ExitFill::kDrop;
  int reasoning_slots(int n_reason, int n_loop) const { return n_reason * n_loop; }
  int slot(int j, int r, int n_reason) const { return r * n_reason + j; }
};

}  // namespace loopus
