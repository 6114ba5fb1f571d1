// The loopus::cuda runtime (include/loopus/ops/cuda/runtime.hpp) on host memory, for the emulated device:
// one device, copies are memmove, scratch is per-thread host memory.
// SPDX-License-Identifier: MIT
#include <cstdlib>
#include <cstring>
#include <string>
#include "loopus/core/error.hpp"
#include "loopus/ops/cuda/runtime.hpp"
namespace loopus::cuda {
int device_count() { return 1; }
std::string no_device_reason() { return ""; }
void select_device(int n) {
  if (n != 0) throw UsageError("--device " + std::to_string(n) + ": this machine has 1 CUDA device(s), 0..0");
}
DeviceInfo current_device() { return {0, "emulated", 8, 9, 0, size_t(1) << 34}; }
void* device_alloc(size_t bytes) { return bytes ? std::aligned_alloc(256, (bytes + 255) / 256 * 256) : nullptr; }
void device_free(void* p) noexcept { std::free(p); }
void copy_to_device(void* d, const void* s, size_t n) {
  if (n) std::memmove(d, s, n);
}
void copy_to_host(void* d, const void* s, size_t n) {
  if (n) std::memmove(d, s, n);
}
void copy_on_device(void* d, const void* s, size_t n) {
  if (n && d != s) std::memmove(d, s, n);
}
void synchronize() {}
void* scratch(int slot, size_t bytes) {
  thread_local void* p[kScratchSlots] = {};
  thread_local size_t n[kScratchSlots] = {};
  if (n[slot] < bytes) {
    std::free(p[slot]);
    p[slot] = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    n[slot] = (bytes + 255) / 256 * 256;
  }
  return p[slot];
}
void check_launch(const char*) {}
}  // namespace loopus::cuda
