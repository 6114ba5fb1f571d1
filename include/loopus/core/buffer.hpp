// AlignedBuffer: owning, 64-byte aligned host memory (no per-element init).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

#include "loopus/config.hpp"

namespace loopus {

/// Owning byte buffer aligned to 64 bytes (one cache line, one AVX-512 vector).
/// Move-only. Memory is left uninitialised unless zero() is called.
class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { resize(bytes); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { release(); }

  /// Reallocates (contents are not kept) when the size changes.
  void resize(size_t bytes) {
    if (bytes == n_) return;
    release();
    if (bytes == 0) return;
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    p_ = static_cast<std::byte*>(::operator new(rounded, std::align_val_t(kAlign)));
    n_ = bytes;
  }
  void zero() {
    for (size_t i = 0; i < n_; ++i) p_[i] = std::byte{0};
  }
  std::byte* data() { return p_; }
  const std::byte* data() const { return p_; }
  template <class T> T* as() { return reinterpret_cast<T*>(p_); }
  template <class T> const T* as() const { return reinterpret_cast<const T*>(p_); }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  void release() {
    if (p_) ::operator delete(p_, std::align_val_t(kAlign));
    p_ = nullptr;
    n_ = 0;
  }
  std::byte* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace loopus
