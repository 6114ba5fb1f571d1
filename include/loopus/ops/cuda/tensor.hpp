// Tensor<Cuda, T>: activations in device memory (the Cuda backend's storage for spans and KV caches).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "loopus/core/backend.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/cuda/runtime.hpp"

namespace loopus {

/// The same interface as the host Tensor (core/tensor.hpp) over cudaMalloc'd memory: contents are
/// read and written only through Ops<Cuda> (upload / download / fill for host data). Move-only;
/// reshape() reallocates only to grow (contents are then undefined, as on the host).
template <class T>
class Tensor<Cuda, T> {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) { reshape(std::move(shape)); }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor(Tensor&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), cap_(std::exchange(o.cap_, 0)), shape_(std::move(o.shape_)),
        numel_(std::exchange(o.numel_, 0)) {}
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      cuda::device_free(p_);
      p_ = std::exchange(o.p_, nullptr);
      cap_ = std::exchange(o.cap_, 0);
      shape_ = std::move(o.shape_);
      numel_ = std::exchange(o.numel_, 0);
    }
    return *this;
  }
  ~Tensor() { cuda::device_free(p_); }

  void reshape(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    if (n > cap_) {
      T* p = static_cast<T*>(cuda::device_alloc(size_t(n) * sizeof(T)));  // throws before anything changes
      cuda::device_free(p_);
      p_ = p;
      cap_ = n;
    }
    shape_ = std::move(shape);
    numel_ = n;
  }
  int64_t numel() const { return numel_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int64_t row_size() const { return shape_.empty() || shape_[0] == 0 ? 0 : numel_ / shape_[0]; }

  Span<Cuda, T> span() { return {p_, numel_}; }
  CSpan<Cuda, T> span() const { return CSpan<Cuda, T>(Span<Cuda, T>(p_, numel_)); }
  Span<Cuda, T> rows(int64_t r0, int64_t nr) { return span().rows(r0, nr, row_size()); }
  CSpan<Cuda, T> rows(int64_t r0, int64_t nr) const { return span().rows(r0, nr, row_size()); }

 private:
  T* p_ = nullptr;
  int64_t cap_ = 0;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
};

}  // namespace loopus
