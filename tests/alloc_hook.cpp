// Replaces every form of the global operator new / delete for the test binary, to count allocations
// (the no-allocation-per-token test) and the bytes live and their peak (the bounded-allocation tests).
// Every replaceable form is replaced (array, nothrow and aligned ones too): a sanitizer runtime
// replaces all of them, and a form left to it would hand memory from its allocator to our free()
// (std::stable_sort's buffer comes from the nothrow form).
// SPDX-License-Identifier: MIT
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>

#include "alloc_hook.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_allocs{0};
std::atomic<std::size_t> g_live{0}, g_peak{0};

void* track(void* p) noexcept {
  if (!p) return p;
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  const std::size_t now = g_live.fetch_add(::malloc_usable_size(p), std::memory_order_relaxed) +
                          ::malloc_usable_size(p);
  std::size_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return p;
}
void* counted_alloc(std::size_t n) noexcept { return track(std::malloc(n ? n : 1)); }
void* counted_alloc(std::size_t n, std::align_val_t a) noexcept {
  const std::size_t al = std::max(std::size_t(a), sizeof(void*));
  return track(std::aligned_alloc(al, (std::max<std::size_t>(n, 1) + al - 1) / al * al));
}
void counted_free(void* p) noexcept {
  if (!p) return;
  g_live.fetch_sub(::malloc_usable_size(p), std::memory_order_relaxed);
  std::free(p);
}
void* or_throw(void* p) {
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

namespace loopus::test {
long alloc_count() { return g_allocs.load(); }
std::size_t alloc_live() { return g_live.load(); }
std::size_t alloc_peak_reset() {
  const std::size_t now = g_live.load();
  g_peak.store(now);
  return now;
}
std::size_t alloc_peak() { return g_peak.load(); }
}  // namespace loopus::test

void* operator new(std::size_t n) { return or_throw(counted_alloc(n)); }
void* operator new[](std::size_t n) { return or_throw(counted_alloc(n)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t a) { return or_throw(counted_alloc(n, a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return or_throw(counted_alloc(n, a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_alloc(n, a); }
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_alloc(n, a); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
