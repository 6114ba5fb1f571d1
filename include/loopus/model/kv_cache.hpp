// KvCache: per-layer key/value rows for one sequence, f32, layout [n_ctx, n_kv, head_dim].
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <vector>

#include "loopus/core/buffer.hpp"
#include "loopus/core/error.hpp"

namespace loopus {

/// View of one layer's cache. Rows [begin, end) are valid; attention reads
/// rows begin..pos, so `begin` lets a loop-depth cache expose only the tokens
/// that reached it (see policies/cache/).
struct LayerKv {
  float* k = nullptr;  ///< [n_ctx, kv_dim]
  float* v = nullptr;  ///< [n_ctx, kv_dim]
  int64_t begin = 0;
};

/// `n_slot` independent layer caches of `n_ctx` rows each, allocated once.
class KvCache {
 public:
  KvCache() = default;
  KvCache(int n_slot, int64_t n_ctx, int64_t kv_dim) { allocate(n_slot, n_ctx, kv_dim); }
  void allocate(int n_slot, int64_t n_ctx, int64_t kv_dim) {
    n_slot_ = n_slot;
    n_ctx_ = n_ctx;
    kv_dim_ = kv_dim;
    buf_.resize(size_t(n_slot) * size_t(n_ctx) * size_t(kv_dim) * 2 * sizeof(float));
    begin_.assign(size_t(n_slot), 0);
  }
  LayerKv slot(int i) {
    LOOPUS_ASSERT(i >= 0 && i < n_slot_);
    float* base = buf_.as<float>() + size_t(i) * size_t(n_ctx_) * size_t(kv_dim_) * 2;
    return {base, base + size_t(n_ctx_) * size_t(kv_dim_), begin_[size_t(i)]};
  }
  void set_begin(int i, int64_t b) { begin_[size_t(i)] = b; }
  int64_t begin(int i) const { return begin_[size_t(i)]; }
  int n_slot() const { return n_slot_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  /// Bytes allocated (all slots, K and V).
  size_t bytes() const { return buf_.size(); }
  /// Bytes one token occupies across all slots.
  size_t bytes_per_token() const { return size_t(n_slot_) * size_t(kv_dim_) * 2 * sizeof(float); }

 private:
  AlignedBuffer buf_;
  std::vector<int64_t> begin_;
  int n_slot_ = 0;
  int64_t n_ctx_ = 0;
  int64_t kv_dim_ = 0;
};

}  // namespace loopus
