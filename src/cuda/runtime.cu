// loopus::cuda runtime: devices, memory, copies and per-thread scratch (include/loopus/ops/cuda/runtime.hpp).
// SPDX-License-Identifier: MIT
#include <cuda_runtime.h>

#include <string>

#include "loopus/core/error.hpp"
#include "loopus/ops/cuda/runtime.hpp"

namespace loopus::cuda {
namespace {

std::string err_text(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

void check(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  if (e == cudaErrorMemoryAllocation) throw LimitError("CUDA: out of device memory: " + what);
  throw Error(ErrorKind::internal, "CUDA: " + what + " failed (" + err_text(e) + ")");
}

// The device every thread uses (select_device); cudaSetDevice is per thread, so each call
// re-applies it when a thread first runs.
int g_device = 0;
thread_local int t_device = -1;

void bind_thread() {
  if (t_device == g_device) return;
  check(cudaSetDevice(g_device), "cudaSetDevice(" + std::to_string(g_device) + ")");
  t_device = g_device;
}

struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  ~Scratch() {
    if (p != nullptr) (void)cudaFree(p);
  }
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return "no usable CUDA device (" + err_text(e) + ")";
  }
  return n == 0 ? "no CUDA device" : "";
}

void select_device(int n) {
  const int count = device_count();
  if (count == 0) throw UsageError("--backend cuda: " + no_device_reason() + " on this machine");
  if (n < 0 || n >= count)
    throw UsageError("--device " + std::to_string(n) + ": this machine has " + std::to_string(count) +
                     " CUDA device(s), 0.." + std::to_string(count - 1));
  g_device = n;
  bind_thread();
}

DeviceInfo current_device() {
  bind_thread();
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, g_device), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.index = g_device;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.total_bytes = p.totalGlobalMem;
  return d;
}

void* device_alloc(size_t bytes) {
  bind_thread();
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  check(cudaMalloc(&p, bytes), "allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void device_free(void* p) noexcept {
  if (p != nullptr) (void)cudaFree(p);
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  bind_thread();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread), "host-to-device copy");
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  bind_thread();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cudaStreamPerThread), "device-to-host copy");
  check(cudaStreamSynchronize(cudaStreamPerThread), "device-to-host copy");
}

void copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  bind_thread();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread), "device copy");
}

void synchronize() {
  bind_thread();
  check(cudaStreamSynchronize(cudaStreamPerThread), "stream synchronize");
}

void* scratch(int slot, size_t bytes) {
  thread_local Scratch s[kScratchSlots];
  Scratch& b = s[slot];
  if (b.n < bytes) {
    bind_thread();
    check(cudaStreamSynchronize(cudaStreamPerThread), "stream synchronize");
    if (b.p != nullptr) check(cudaFree(b.p), "freeing scratch");
    b.p = nullptr;
    b.n = 0;
    const size_t n = bytes + bytes / 2;
    check(cudaMalloc(&b.p, n), "allocating " + std::to_string(n) + " bytes of scratch");
    b.n = n;
  }
  return b.p;
}

void check_launch(const char* what) { check(cudaGetLastError(), std::string("launching ") + what); }

}  // namespace loopus::cuda
