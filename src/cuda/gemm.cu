// loopus::cuda matrix products: the decode GEMV (one warp per weight row) and cuBLAS for longer inputs.
// SPDX-License-Identifier: MIT
#include <cublas_v2.h>

#include <string>

#include "common.cuh"
#include "loopus/core/error.hpp"

namespace loopus::cuda {
namespace {

using dev::kThreads;
using dev::to_f;
using dev::warp_sum;

constexpr int kWarpsPerBlock = kThreads / 32;

/// The 16-byte word `w` as VEC floats.
template <class E>
__device__ __forceinline__ void unpack(const uint4& w, float* f);
template <>
__device__ __forceinline__ void unpack<float>(const uint4& w, float* f) {
  f[0] = __uint_as_float(w.x);
  f[1] = __uint_as_float(w.y);
  f[2] = __uint_as_float(w.z);
  f[3] = __uint_as_float(w.w);
}
template <>
__device__ __forceinline__ void unpack<__nv_bfloat16>(const uint4& w, float* f) {
  const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}
template <>
__device__ __forceinline__ void unpack<__half>(const uint4& w, float* f) {
  const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &u[i], sizeof h);
    const float2 v = __half22float2(h);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// y[t, r] = Σ_c W[r, c]·x[t, c] for TT tokens and one row r, by one warp (lane 0 writes): 16-byte
// weight loads that bypass L1 (each weight byte is read once), x in float4s (rows of x 16-byte
// aligned: checked by the caller).
template <class E, int TT>
__device__ __forceinline__ void gemv_row(const E* __restrict__ W, int64_t rows, int64_t cols,
                                         const float* __restrict__ x, float* __restrict__ y, int64_t r, int lane) {
  constexpr int VEC = 16 / int(sizeof(E));
  const uint4* wr = reinterpret_cast<const uint4*>(W + r * cols);
  const int64_t nv = cols / VEC;
  float acc[TT];
#pragma unroll
  for (int t = 0; t < TT; ++t) acc[t] = 0.f;
#pragma unroll 4
  for (int64_t i = lane; i < nv; i += 32) {
    float w[VEC];
    unpack<E>(__ldcs(wr + i), w);
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const float4* xv = reinterpret_cast<const float4*>(x + t * cols + i * VEC);
#pragma unroll
      for (int j = 0; j < VEC / 4; ++j) {
        const float4 a = __ldg(xv + j);
        acc[t] += w[4 * j] * a.x + w[4 * j + 1] * a.y + w[4 * j + 2] * a.z + w[4 * j + 3] * a.w;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < TT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * rows + r] = s;
  }
}

// One weight matrix: one warp per row.
template <class E, int TT>
__global__ void __launch_bounds__(kThreads) k_gemv_vec(const E* __restrict__ W, int64_t rows, int64_t cols,
                                                       const float* __restrict__ x, float* __restrict__ y) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // the whole warp leaves together
  gemv_row<E, TT>(W, rows, cols, x, y, r, threadIdx.x & 31);
}

// Several matrices of one x in one launch (a layer's q, k and v; its gate and up): the warps take
// the rows of all of them in order.
template <class E, int TT>
__global__ void __launch_bounds__(kThreads) k_gemv_multi(GemvProducts p, int64_t cols, const float* __restrict__ x) {
  const int64_t g = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= p.first_row[p.n]) return;
  int i = 0;
  while (g >= p.first_row[i + 1]) ++i;
  gemv_row<E, TT>(static_cast<const E*>(p.w[i]), p.rows[i], cols, x, p.y[i], g - p.first_row[i], threadIdx.x & 31);
}

// Any shape and alignment, T ≤ kGemvMaxT: element loads.
template <class E>
__global__ void __launch_bounds__(kThreads) k_gemv_any(const E* __restrict__ W, int64_t rows, int64_t cols,
                                                       const float* __restrict__ x, int T, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;
  const E* wr = W + r * cols;
  float acc[kGemvMaxT] = {};
  for (int64_t c = lane; c < cols; c += 32) {
    const float w = to_f(wr[c]);
    for (int t = 0; t < T; ++t) acc[t] += w * x[t * cols + c];
  }
  for (int t = 0; t < T; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * rows + r] = s;
  }
}

template <class E, int TT>
void gemv_vec(const void* W, int64_t rows, int64_t cols, const float* x, float* y) {
  const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  k_gemv_vec<E, TT><<<blocks, kThreads, 0, cudaStreamPerThread>>>(static_cast<const E*>(W), rows, cols, x, y);
}

template <class E, int TT>
void gemv_multi_t(const GemvProducts& p, int64_t cols, const float* x) {
  const unsigned blocks = unsigned((p.first_row[p.n] + kWarpsPerBlock - 1) / kWarpsPerBlock);
  k_gemv_multi<E, TT><<<blocks, kThreads, 0, cudaStreamPerThread>>>(p, cols, x);
}

template <class E>
bool gemv_multi_typed(const GemvProducts& p, int64_t cols, const float* x, int64_t T) {
  constexpr int VEC = 16 / int(sizeof(E));
  if (cols % VEC != 0 || cols % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  switch (T) {
    case 1: gemv_multi_t<E, 1>(p, cols, x); break;
    case 2: gemv_multi_t<E, 2>(p, cols, x); break;
    case 3: gemv_multi_t<E, 3>(p, cols, x); break;
    case 4: gemv_multi_t<E, 4>(p, cols, x); break;
    case 5: gemv_multi_t<E, 5>(p, cols, x); break;
    case 6: gemv_multi_t<E, 6>(p, cols, x); break;
    case 7: gemv_multi_t<E, 7>(p, cols, x); break;
    default: gemv_multi_t<E, 8>(p, cols, x); break;
  }
  return true;
}

template <class E>
void gemv_typed(const void* W, int64_t rows, int64_t cols, const float* x, int64_t T, float* y) {
  constexpr int VEC = 16 / int(sizeof(E));
  const bool vec = cols % VEC == 0 && cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(W) % 16 == 0;
  if (!vec) {
    const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    k_gemv_any<E><<<blocks, kThreads, 0, cudaStreamPerThread>>>(static_cast<const E*>(W), rows, cols, x, int(T), y);
    return;
  }
  switch (T) {
    case 1: gemv_vec<E, 1>(W, rows, cols, x, y); break;
    case 2: gemv_vec<E, 2>(W, rows, cols, x, y); break;
    case 3: gemv_vec<E, 3>(W, rows, cols, x, y); break;
    case 4: gemv_vec<E, 4>(W, rows, cols, x, y); break;
    case 5: gemv_vec<E, 5>(W, rows, cols, x, y); break;
    case 6: gemv_vec<E, 6>(W, rows, cols, x, y); break;
    case 7: gemv_vec<E, 7>(W, rows, cols, x, y); break;
    default: gemv_vec<E, 8>(W, rows, cols, x, y); break;
  }
}

const char* cublas_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorKind::internal, std::string("cuBLAS: ") + what + ": " + cublas_name(s));
}

/// The calling thread's cuBLAS handle, on its stream; default math: f32 products stay f32 (no TF32),
/// f16/bf16 ones use tensor cores with f32 accumulation.
cublasHandle_t handle() {
  struct Handle {
    cublasHandle_t h = nullptr;
    ~Handle() {
      if (h != nullptr) (void)cublasDestroy(h);
    }
  };
  thread_local Handle th;
  if (th.h == nullptr) {
    (void)device_alloc(0);  // binds the thread to the selected device
    check_cublas(cublasCreate(&th.h), "cublasCreate");
    check_cublas(cublasSetStream(th.h, cudaStreamPerThread), "cublasSetStream");
    check_cublas(cublasSetMathMode(th.h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  return th.h;
}

}  // namespace

void launch_gemv(const void* W, DevType dt, int64_t rows, int64_t cols, const float* x, int64_t T, float* y) {
  if (rows <= 0 || T <= 0) return;
  switch (dt) {
    case DevType::kF32: gemv_typed<float>(W, rows, cols, x, T, y); break;
    case DevType::kF16: gemv_typed<__half>(W, rows, cols, x, T, y); break;
    case DevType::kBF16: gemv_typed<__nv_bfloat16>(W, rows, cols, x, T, y); break;
  }
  check_launch("gemv");
}

bool launch_gemv_multi(const GemvProducts& p, DevType dt, int64_t cols, const float* x, int64_t T) {
  if (p.n < 1 || p.n > kMaxGemvProducts || T < 1 || T > kGemvMaxT) return false;
  for (int i = 0; i < p.n; ++i)
    if (reinterpret_cast<uintptr_t>(p.w[i]) % 16 != 0) return false;
  bool ok = false;
  switch (dt) {
    case DevType::kF32: ok = gemv_multi_typed<float>(p, cols, x, T); break;
    case DevType::kF16: ok = gemv_multi_typed<__half>(p, cols, x, T); break;
    case DevType::kBF16: ok = gemv_multi_typed<__nv_bfloat16>(p, cols, x, T); break;
  }
  if (ok) check_launch("gemv (several matrices)");
  return ok;
}

void gemm_cublas(const void* W, DevType dt, int64_t rows, int64_t cols, const float* x, int64_t T, float* y,
                 void* xconv) {
  if (rows <= 0 || T <= 0) return;
  constexpr int64_t kMax = 0x7fffffff;
  if (rows > kMax || cols > kMax || T > kMax)
    throw LimitError("CUDA matmul: " + std::to_string(rows) + "x" + std::to_string(cols) + " by " + std::to_string(T) +
                     " tokens exceeds cuBLAS's 32-bit dimensions");
  const float one = 1.f, zero = 0.f;
  // Row-major y[T, rows] = x[T, cols]·Wᵀ is column-major Y (rows x T) = Wᵀ(rows x cols)·X (cols x T), with
  // W read as the column-major cols x rows matrix it is.
  if (dt == DevType::kF32) {
    check_cublas(cublasSgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(cols), &one,
                             static_cast<const float*>(W), int(cols), x, int(cols), &zero, y, int(rows)),
                 "cublasSgemm");
    return;
  }
  launch_from_f32(x, T * cols, dt, xconv);
  const cudaDataType_t ty = dt == DevType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
  check_cublas(cublasGemmEx(handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(cols), &one, W, ty, int(cols),
                            xconv, ty, int(cols), &zero, y, CUDA_R_32F, int(rows), CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

}  // namespace loopus::cuda
