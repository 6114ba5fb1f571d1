// AlignedBuffer: owning, 64-byte aligned host memory (no per-element init); large buffers on
// transparent huge pages.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "loopus/config.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace loopus {

/// Whether large AlignedBuffers ask the kernel for transparent huge pages: yes unless the
/// environment sets LOOPUS_HUGEPAGES=0 (read once).
inline bool huge_pages_wanted() {
  static const bool on = [] {
    const char* e = std::getenv("LOOPUS_HUGEPAGES");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }();
  return on;
}

/// Owning byte buffer aligned to 64 bytes (one cache line, one AVX-512 vector).
/// Move-only. Memory is left uninitialised unless zero() is called.
///
/// Buffers of kHugeMin bytes or more (model weights read from a file, large caches) are aligned
/// to 2 MiB and, on Linux, advised MADV_HUGEPAGE before they are first touched, so that where
/// transparent huge pages are set to `madvise` (Debian's default) the kernel backs them with
/// 2 MiB pages. Decode streams every weight byte once per token; with 4 KiB pages that is a TLB
/// miss every 4 KiB and hardware prefetchers that stop at each page boundary. Measured on a
/// Zen 4 EPYC, one thread, SmolLM2-135M's bf16 matrices in sequence: 23.5 GB/s on 4 KiB pages,
/// 27.9 GB/s on 2 MiB pages (docs/performance.md). The advice is best effort: where the kernel
/// declines, nothing else changes. LOOPUS_HUGEPAGES=0 turns it off.
class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;
  static constexpr size_t kHugePage = size_t(2) << 20;
  static constexpr size_t kHugeMin = 2 * kHugePage;
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { resize(bytes); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), align_(std::exchange(o.align_, kAlign)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      align_ = std::exchange(o.align_, kAlign);
    }
    return *this;
  }
  ~AlignedBuffer() { release(); }

  /// Reallocates (contents are not kept) when the size changes.
  void resize(size_t bytes) {
    if (bytes == n_) return;
    release();
    if (bytes == 0) return;
    const size_t align = bytes >= kHugeMin && huge_pages_wanted() ? kHugePage : kAlign;
    const size_t rounded = (bytes + align - 1) / align * align;
    p_ = static_cast<std::byte*>(::operator new(rounded, std::align_val_t(align)));
    n_ = bytes;
    align_ = align;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == kHugePage) (void)::madvise(p_, rounded, MADV_HUGEPAGE);  // best effort
#endif
  }
  /// Whether this buffer was allocated for huge pages (2 MiB aligned and advised; the kernel
  /// decides whether it actually backs it with them).
  bool huge_page_aligned() const { return align_ == kHugePage; }
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
    if (p_) ::operator delete(p_, std::align_val_t(align_));
    p_ = nullptr;
    n_ = 0;
    align_ = kAlign;
  }
  std::byte* p_ = nullptr;
  size_t n_ = 0;
  size_t align_ = kAlign;
};

}  // namespace loopus
