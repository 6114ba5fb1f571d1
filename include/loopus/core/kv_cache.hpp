// KvCache<Backend>: per-layer key/value rows for one sequence, f32 in the backend's memory, layout [n_ctx, n_kv, head_dim].
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// View of one layer's cache. Rows [begin, end) are valid; attention reads
/// rows begin..pos, so `begin` lets a loop-depth cache expose only the tokens
/// that reached it (see policies/cache/).
template <class Backend>
struct LayerKv {
  Span<Backend> k;  ///< [n_ctx, kv_dim]
  Span<Backend> v;  ///< [n_ctx, kv_dim]
  int64_t begin = 0;
};

/// `n_slot` independent layer caches of `n_ctx` rows each, allocated once.
template <class Backend>
class KvCache {
 public:
  KvCache() = default;
  KvCache(int n_slot, int64_t n_ctx, int64_t kv_dim) { allocate(n_slot, n_ctx, kv_dim); }
  void allocate(int n_slot, int64_t n_ctx, int64_t kv_dim) {
    n_slot_ = n_slot;
    n_ctx_ = n_ctx;
    kv_dim_ = kv_dim;
    buf_.reshape({int64_t(n_slot) * 2, n_ctx * kv_dim});
    begin_.assign(size_t(n_slot), 0);
  }
  LayerKv<Backend> slot(int i) {
    LOOPUS_ASSERT(i >= 0 && i < n_slot_);
    return {buf_.rows(2 * int64_t(i), 1), buf_.rows(2 * int64_t(i) + 1, 1), begin_[size_t(i)]};
  }
  void set_begin(int i, int64_t b) { begin_[size_t(i)] = b; }
  int64_t begin(int i) const { return begin_[size_t(i)]; }
  int n_slot() const { return n_slot_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  /// Bytes allocated (all slots, K and V).
  size_t bytes() const { return size_t(n_slot_) * size_t(n_ctx_) * size_t(kv_dim_) * 2 * sizeof(float); }
  /// Bytes one token occupies across all slots.
  size_t bytes_per_token() const { return size_t(n_slot_) * size_t(kv_dim_) * 2 * sizeof(float); }

 private:
  Tensor<Backend> buf_;
  std::vector<int64_t> begin_;
  int n_slot_ = 0;
  int64_t n_ctx_ = 0;
  int64_t kv_dim_ = 0;
};

}  // namespace loopus
