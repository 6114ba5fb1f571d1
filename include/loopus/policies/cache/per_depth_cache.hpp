// PerDepthCache: one KV cache per loop depth for the reasoning block (the official layout).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string_view>

#include "loopus/core/kv_cache.hpp"

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

  /// Tokens [pos0, pos0 + T) stopped after `loops` of `n_loop` iterations: the
  /// depths they did not reach are dropped (begin moves past them) or filled
  /// from the deepest depth they reached.
  template <class Backend>
  void after_exit(KvCache<Backend>& kv, int loops, int n_loop, int n_reason, int64_t pos0, int64_t T) const {
    if (loops >= n_loop) return;
    const int64_t row = kv.kv_dim();
    for (int r = loops; r < n_loop; ++r)
      for (int j = 0; j < n_reason; ++j) {
        const int dst = slot(j, r, n_reason);
        if (exit_fill == ExitFill::kDrop) {
          kv.set_begin(dst, pos0 + T);  // official: deeper caches thrown away
        } else {
          const LayerKv<Backend> src = kv.slot(slot(j, loops - 1, n_reason)), out = kv.slot(dst);
          Ops<Backend>::copy(out.k.rows(pos0, T, row), src.k.rows(pos0, T, row));
          Ops<Backend>::copy(out.v.rows(pos0, T, row), src.v.rows(pos0, T, row));
        }
      }
  }
};

}  // namespace loopus
