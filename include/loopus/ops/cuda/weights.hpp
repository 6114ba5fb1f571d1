// The Cuda backend's resident weights: each host Weight uploaded once, on first use, and found again by
// its address, shape, type and a fingerprint of its bytes.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/cuda/kernels.hpp"
#include "loopus/ops/cuda/runtime.hpp"

namespace loopus::cuda {

/// FNV-1a of n bytes, continuing from h (the offset basis by default).
inline uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/// A weight's device copy.
struct DeviceWeight {
  const void* data = nullptr;
  DevType dtype = DevType::kF32;
  int64_t rows = 0, cols = 0;
};

/// How a weight is wanted on the device: as a matrix in its own type (f32, f16, bf16; block-quantized
/// types widened to f16, whose 11-bit mantissa holds a q4/q5 value times its f16 scale within one
/// rounding), or widened to f32 (norm gains, gate and head vectors).
enum class Form : int { kMatrix, kF32 };

/// Every weight the backend has uploaded. Weights are host memory owned by the model (ModelWeights,
/// LoopedWeights): the registry keys each copy by the host address, dtype, shape and form, and keeps a
/// fingerprint (16 words sampled across the bytes) so that a model freed and another loaded at the
/// same address is uploaded again instead of reusing stale values. release() frees all copies.
class WeightRegistry {
 public:
  static WeightRegistry& instance() {
    static WeightRegistry r;
    return r;
  }

  DeviceWeight get(const Weight& W, Form form) {
    if (W.data == nullptr) throw Error(ErrorKind::internal, "CUDA backend: an empty weight was used");
    const Key key{W.data, int(W.dtype), W.rows, W.cols, int(form)};
    const uint64_t fp = fingerprint(W);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      if (it->second.fingerprint == fp) return it->second.dev;
      device_free(const_cast<void*>(it->second.dev.data));
      bytes_ -= it->second.bytes;
      map_.erase(it);
    }
    Entry e;
    e.fingerprint = fp;
    e.dev = upload(W, form, e.bytes);
    bytes_ += e.bytes;
    return map_.emplace(key, e).first->second.dev;
  }

  /// Bytes of device memory the resident weights hold.
  size_t bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
  }

  /// Frees every device copy (after a model is gone; the next use uploads again).
  void release() {
    synchronize();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [k, e] : map_) device_free(const_cast<void*>(e.dev.data));
    map_.clear();
    bytes_ = 0;
  }

 private:
  using Key = std::tuple<const void*, int, int64_t, int64_t, int>;
  struct Entry {
    DeviceWeight dev;
    uint64_t fingerprint = 0;
    size_t bytes = 0;
  };

  static uint64_t fingerprint(const Weight& W) {
    const auto* p = static_cast<const unsigned char*>(W.data);
    const size_t n = W.nbytes();
    uint64_t h = fnv1a(&n, sizeof n);
    constexpr size_t kSamples = 16;  // cheap enough for every matmul of a decode step
    for (size_t i = 0; i < kSamples && n >= sizeof(uint64_t); ++i)
      h = fnv1a(p + (n - sizeof(uint64_t)) * i / (kSamples - 1), sizeof(uint64_t), h);
    return fnv1a(p, std::min(n, sizeof(uint64_t)), h);
  }

  /// Converts on the host in slabs of rows (bounded staging memory), uploads each slab.
  static DeviceWeight upload(const Weight& W, Form form, size_t& bytes) {
    DeviceWeight d;
    d.rows = W.rows;
    d.cols = W.cols;
    if (form == Form::kF32 || W.dtype == DType::kF32) d.dtype = DevType::kF32;
    else if (W.dtype == DType::kBF16) d.dtype = DevType::kBF16;
    else d.dtype = DevType::kF16;  // f16, and the block-quantized types widened
    const size_t es = d.dtype == DevType::kF32 ? 4 : 2;
    bytes = size_t(W.rows) * size_t(W.cols) * es;
    void* dst = device_alloc(bytes);
    d.data = dst;
    const bool same = (d.dtype == DevType::kF32 && W.dtype == DType::kF32) ||
                      (d.dtype == DevType::kF16 && W.dtype == DType::kF16) ||
                      (d.dtype == DevType::kBF16 && W.dtype == DType::kBF16);
    try {
      if (same) {
        copy_to_device(dst, W.data, bytes);
        synchronize();
        return d;
      }
      const int64_t slab = std::max<int64_t>(1, (int64_t(16) << 20) / std::max<int64_t>(1, W.cols * 4));
      std::vector<float> f(size_t(std::min(slab, W.rows) * W.cols));
      std::vector<uint16_t> h(d.dtype == DevType::kF32 ? 0 : f.size());
      for (int64_t r0 = 0; r0 < W.rows; r0 += slab) {
        const int64_t nr = std::min(slab, W.rows - r0);
        const size_t n = size_t(nr * W.cols);
        dequantize_rows(W, r0, nr, f.data());
        auto* out = static_cast<unsigned char*>(dst) + size_t(r0 * W.cols) * es;
        if (d.dtype == DevType::kF32) {
          copy_to_device(out, f.data(), n * 4);
        } else {
          for (size_t i = 0; i < n; ++i) h[i] = f32_to_f16(f[i]);
          copy_to_device(out, h.data(), n * 2);
        }
        synchronize();  // the staging vectors are reused
      }
    } catch (...) {
      device_free(dst);
      throw;
    }
    return d;
  }

  mutable std::mutex mu_;
  std::map<Key, Entry> map_;
  size_t bytes_ = 0;
};

}  // namespace loopus::cuda
