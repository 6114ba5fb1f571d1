// Weight (a stored matrix/vector of any dtype); Tensor<Backend> and Span<Backend> (activations in a backend's memory).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "loopus/config.hpp"
#include "loopus/core/backend.hpp"
#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"

namespace loopus {

/// A read-only weight matrix [rows, cols], row-major: row r holds the `cols`
/// input weights of output r (this is both HF's [out, in] and GGUF's ne0=in).
/// A vector (norm gain, bias) has rows == 1. dtype is f32, f16, bf16 or one of the block-quantized
/// types (a matrix whose rows are whole blocks: cols a multiple of dtype_block_size; io/quant.hpp
/// has the layouts, io::dequantize_rows widens them). The host backends
/// (Reference, Cpu) read weights where the loader left them; a device backend
/// keeps its resident copy keyed by `data`.
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  bool empty() const { return data == nullptr; }
  int64_t numel() const { return rows * cols; }
  /// Bytes of one row (whole blocks for quantized types).
  size_t row_bytes() const { return dtype_row_bytes(dtype, cols); }
  size_t nbytes() const { return size_t(rows) * row_bytes(); }
  bool quantized() const { return dtype_is_quantized(dtype); }
  const float* f32() const { return static_cast<const float*>(data); }
  /// Element (r, c) widened to f32 (slow; for reference code and tests). Plain types only: the
  /// reference kernels widen quantized rows with io::dequantize.
  float at(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    switch (dtype) {
      case DType::kF32: return static_cast<const float*>(data)[i];
      case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
      case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
      default: return 0.f;
    }
  }
  /// An f32 vector [1, n] or matrix [rows, cols] over host floats (gate and q-head parameters).
  static Weight f32(const float* p, int64_t rows, int64_t cols) { return {p, DType::kF32, rows, cols}; }
};

template <class Backend, class T = float>
class Tensor;

/// A range of f32 (or, for gradient checks, f64) activations in `Backend`'s memory: what every Ops<Backend>
/// kernel reads and writes. Code outside the backend cannot reach the address:
/// only Ops<Backend> (a friend) unpacks it, so model and policy code, which is
/// written once for all backends, can slice and pass spans but never
/// dereference them. Span<B> converts to CSpan<B> (read-only).
template <class Backend, class T = float>
class Span {
  static_assert(std::is_same_v<std::remove_const_t<T>, float> || std::is_same_v<std::remove_const_t<T>, double>,
                "activations are f32 (f64 only for the training path's gradient checks)");

 public:
  using element_type = T;
  Span() = default;
  /// A read-only span from a writable one.
  // (clang-format 14 cannot lay out a requires-clause)
  // clang-format off
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<const U, T>)
  Span(Span<Backend, U> s) : p_(s.p_), n_(s.n_) {}  // NOLINT(google-explicit-constructor)
  // clang-format on

  int64_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  /// Elements [off, off + n).
  Span sub(int64_t off, int64_t n) const {
    LOOPUS_ASSERT(off >= 0 && n >= 0 && off + n <= n_);
    return Span(p_ + off, n);
  }
  /// Rows [r0, r0 + nr) of a row-major [*, width] array.
  Span rows(int64_t r0, int64_t nr, int64_t width) const { return sub(r0 * width, nr * width); }

 private:
  template <class, class>
  friend class Span;
  friend class Tensor<Backend, std::remove_const_t<T>>;
  friend struct Ops<Backend>;
  friend struct TrainOps<Backend>;
  Span(T* p, int64_t n) : p_(p), n_(n) {}
  T* p_ = nullptr;
  int64_t n_ = 0;
};
template <class Backend, class T = float>
using CSpan = Span<Backend, const T>;

/// Owning tensor of T (f32; f64 for the training path's gradient checks) with
/// up to 4 dims (outermost first) in `Backend`'s memory. The host backends
/// (Reference, Cpu) keep it in 64-byte aligned host memory; a device backend
/// specialises Tensor for its allocator. Contents are read and written only
/// through spans and Ops<Backend> / TrainOps<Backend> (upload / download /
/// fill for host data). reshape() reallocates only to grow.
template <class Backend, class T>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) { reshape(std::move(shape)); }
  void reshape(std::vector<int64_t> shape) {
    shape_ = std::move(shape);
    int64_t n = 1;
    for (auto s : shape_) n *= s;
    if (size_t(n) * sizeof(T) > buf_.size()) buf_.resize(size_t(n) * sizeof(T));
    numel_ = n;
  }
  int64_t numel() const { return numel_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  /// Elements in one outermost row (numel / dim(0)).
  int64_t row_size() const { return shape_.empty() || shape_[0] == 0 ? 0 : numel_ / shape_[0]; }

  Span<Backend, T> span() { return {buf_.as<T>(), numel_}; }
  CSpan<Backend, T> span() const { return CSpan<Backend, T>(Span<Backend, T>(const_cast<T*>(buf_.as<T>()), numel_)); }
  /// Outermost rows [r0, r0 + nr).
  Span<Backend, T> rows(int64_t r0, int64_t nr) { return span().rows(r0, nr, row_size()); }
  CSpan<Backend, T> rows(int64_t r0, int64_t nr) const { return span().rows(r0, nr, row_size()); }

 private:
  AlignedBuffer buf_;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
};

}  // namespace loopus
