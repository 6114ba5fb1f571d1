// Weight (a stored matrix/vector of any dtype) and Tensor (owning f32 activations).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"

namespace loopus {

/// A read-only weight matrix [rows, cols], row-major: row r holds the `cols`
/// input weights of output r (this is both HF's [out, in] and GGUF's ne0=in).
/// A vector (norm gain, bias) has rows == 1. dtype is f32, f16 or bf16 here;
/// quantized files are dequantized before a Weight is made.
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  bool empty() const { return data == nullptr; }
  int64_t numel() const { return rows * cols; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  const float* f32() const { return static_cast<const float*>(data); }
  /// Element (r, c) widened to f32 (slow; for reference code and tests).
  float at(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    switch (dtype) {
      case DType::kF32: return static_cast<const float*>(data)[i];
      case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
      case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
      default: return 0.f;
    }
  }
};

/// Owning f32 tensor with up to 4 dims (outermost first), 64-byte aligned.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) { reshape(std::move(shape)); }
  void reshape(std::vector<int64_t> shape) {
    shape_ = std::move(shape);
    int64_t n = 1;
    for (auto s : shape_) n *= s;
    if (size_t(n) * 4 > buf_.size()) buf_.resize(size_t(n) * 4);
    numel_ = n;
  }
  float* data() { return buf_.as<float>(); }
  const float* data() const { return buf_.as<float>(); }
  int64_t numel() const { return numel_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  void zero() {
    for (int64_t i = 0; i < numel_; ++i) data()[i] = 0.f;
  }
  float& operator[](int64_t i) { return data()[i]; }
  float operator[](int64_t i) const { return data()[i]; }

 private:
  AlignedBuffer buf_;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
};

}  // namespace loopus
