// A CUDA device emulated on CPU threads, so that the kernels of src/cuda/ run (as C++) where there is
// no GPU: scripts/cuda_emulate.sh rewrites each launch `k<<<grid, block, smem, stream>>>(args)` into
// `emu::launch(grid, block, smem, stream)([&] { k(args); })` and compiles the files against these
// headers. One std::thread per CUDA thread, the blocks of a launch one after the other on the same
// threads; __syncthreads is a std::barrier of the block, a warp shuffle an exchange through a per-warp
// buffer between two barriers of that warp; __shared__ arrays are statics (one block runs at a time).
// It checks the kernels' indexing, masking, reductions and launch arithmetic, not timing, memory
// ordering without barriers, or anything of the real hardware (docs/cuda.md).
// Limits: 1-D blocks (loopus's kernels use only those); a thread that returns early must not meet a
// __syncthreads its block still runs (none of loopus's kernels does that).
// SPDX-License-Identifier: MIT
#pragma once
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include "loopus/core/dtype.hpp"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 {
  float x, y;
};
struct float4 {
  float x, y, z, w;
};
struct uint4 {
  unsigned x, y, z, w;
};

namespace emu {
inline thread_local dim3 tIdx, bIdx;
inline dim3 bDim, gDim;
inline std::barrier<>* block_bar = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
inline std::vector<double> warp_buf;    // [warps * 32]
inline std::vector<unsigned char> dyn;  // dynamic shared memory
inline std::mutex atomic_mu;

template <class F>
void run_grid(dim3 grid, dim3 block, size_t smem, F&& body) {
  gDim = grid;
  bDim = block;
  const unsigned nt = block.x * block.y * block.z;
  const unsigned nw = (nt + 31) / 32;
  std::barrier<> bar(nt);
  block_bar = &bar;
  warp_bars.clear();
  for (unsigned w = 0; w < nw; ++w) warp_bars.push_back(std::make_unique<std::barrier<>>(std::min(32u, nt - 32 * w)));
  warp_buf.assign(size_t(nw) * 32, 0.0);
  dyn.assign(smem + 16, 0);
  const unsigned nb = grid.x * grid.y * grid.z;
  std::vector<std::thread> th;
  th.reserve(nt);
  for (unsigned t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      tIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      for (unsigned b = 0; b < nb; ++b) {
        bIdx = dim3(b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y));
        body();
        bar.arrive_and_wait();  // the block is done (threads that returned early arrive here too)
      }
    });
  for (auto& x : th) x.join();
}

struct Launch {
  dim3 g, b;
  size_t smem;
  template <class F>
  void operator()(F&& f) const {
    run_grid(g, b, smem, f);
  }
};
inline Launch launch(dim3 g, dim3 b, size_t smem = 0, const void* = nullptr) { return {g, b, smem}; }

template <class T>
T* dyn_smem() {
  return reinterpret_cast<T*>(dyn.data());
}
}  // namespace emu

#define threadIdx (emu::tIdx)
#define blockIdx (emu::bIdx)
#define blockDim (emu::bDim)
#define gridDim (emu::gDim)

inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int o) {
  const unsigned t = threadIdx.x;  // blocks are 1-D here
  const unsigned w = t / 32, lane = t % 32;
  auto& bar = *emu::warp_bars[w];
  emu::warp_buf[w * 32 + lane] = double(v);
  bar.arrive_and_wait();
  const T r = T(emu::warp_buf[w * 32 + (lane ^ unsigned(o))]);
  bar.arrive_and_wait();
  return r;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline double atomicAdd(double* p, double v) {
  std::lock_guard<std::mutex> l(emu::atomic_mu);
  const double o = *p;
  *p = o + v;
  return o;
}

struct __half {
  uint16_t b;
};
struct __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t b;
};
inline float __half2float(__half h) { return loopus::f16_to_f32(h.b); }
inline __half __float2half_rn(float f) { return {loopus::f32_to_f16(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return loopus::bf16_to_f32(h.b); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {loopus::f32_to_bf16(f)}; }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }

// runtime bits the .cu files use
using cudaStream_t = const void*;
#define cudaStreamPerThread (static_cast<cudaStream_t>(nullptr))
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 8;
  return cudaSuccess;
}
