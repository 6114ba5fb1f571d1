// loopus::cuda element-wise, normalisation, RoPE and reduction kernels (include/loopus/ops/cuda/kernels.hpp).
// SPDX-License-Identifier: MIT
#include <cmath>

#include "common.cuh"

namespace loopus::cuda {
namespace {

using dev::block_max;
using dev::block_sum;
using dev::grid_for;
using dev::kThreads;
using dev::to_f;

template <class E>
__global__ void k_embed(const E* __restrict__ tab, int64_t cols, const int32_t* __restrict__ ids, int64_t T,
                        float* __restrict__ out) {
  const int64_t n = T * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / cols, c = i - t * cols;
    out[i] = to_f(tab[int64_t(ids[t]) * cols + c]);
  }
}

template <class E>
__global__ void k_from_f32(const float* __restrict__ src, int64_t n, E* __restrict__ dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = dev::from_f<E>(src[i]);
}

// One block per row; y may alias x (each thread rewrites only what it read).
__global__ void k_rmsnorm(const float* x, const float* __restrict__ g, int64_t d, float eps, float* y) {
  const float* xr = x + int64_t(blockIdx.x) * d;
  float* yr = y + int64_t(blockIdx.x) * d;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  const float inv = float(1.0 / sqrt(double(ss) / double(d) + double(eps)));
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = xr[i] * inv * g[i];
}

// One thread per rotated pair; angles in double, as the reference (positions reach 10^5).
__global__ void k_rope(float* x, int64_t T, int n_head, int hd, int half, int64_t pos0, const double* __restrict__ freq,
                       bool interleaved, float mscale) {
  const int64_t n = T * n_head * half;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int p = int(i % half);
    const int64_t th = i / half;  // t * n_head + h
    const int64_t t = th / n_head;
    float* v = x + th * hd;
    double s, c;
    sincos(double(pos0 + t) * freq[p], &s, &c);
    c *= mscale;
    s *= mscale;
    const int a = interleaved ? 2 * p : p;
    const int b = interleaved ? 2 * p + 1 : p + half;
    const double x0 = v[a], x1 = v[b];
    v[a] = float(x0 * c - x1 * s);
    v[b] = float(x0 * s + x1 * c);
  }
}

__global__ void k_swiglu(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gv = g[i];
    out[i] = gv / (1.f + expf(-gv)) * u[i];
  }
}
__global__ void k_add(float* y, const float* x, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}
__global__ void k_sub(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] - b[i];
}
__global__ void k_mix(float* h, const float* p, float alpha, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    h[i] = alpha * p[i] + (1.f - alpha) * h[i];
}
template <class T>
__global__ void k_fill(T* x, T v, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = v;
}

// One block of 1024 threads over the whole vector (a vocabulary of logits: a few microseconds).
__global__ void k_softmax(float* x, int64_t n, bool log) {
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max(m);
  double z = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) z += exp(double(x[i]) - double(m));
  z = block_sum(z);
  if (log) {
    const double lz = double(m) + ::log(z);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = float(double(x[i]) - lz);
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = float(exp(double(x[i]) - double(m)) / z);
  }
}

__global__ void k_selective_mix(const float* z, const float* __restrict__ bias, const float* __restrict__ A,
                                const float* p, float* h, int64_t n, int64_t d, double* asum) {
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % d;
    const double zz = double(z[i]) + double(bias[c]);
    const double delta = zz > 20.0 ? zz : log1p(exp(zz));
    const double a = exp(-delta * double(A[c]));
    h[i] = float(a * double(p[i]) + (1.0 - a) * double(h[i]));
    s += a;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(asum, s);
}

// One block: torch LayerNorm (biased variance) of x[d], then w · y + bias.
__global__ void k_layernorm_dot(const float* x, const float* __restrict__ lw, const float* __restrict__ lb,
                                const float* __restrict__ w, float bias, float eps, int64_t d, double* out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += x[i];
  const double mean = block_sum(s) / double(d);
  double v = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) v += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / sqrt(block_sum(v) / double(d) + double(eps));
  double dot = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    dot += double(w[i]) * ((x[i] - mean) * inv * double(lw[i]) + double(lb[i]));
  dot = block_sum(dot);
  if (threadIdx.x == 0) out[0] = dot + double(bias);
}

__global__ void k_sq_dist(const float* a, const float* b, int64_t n, double* acc) {
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double e = double(a[i]) - double(b[i]);
    s += e * e;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(acc, s);
}

__global__ void k_kl(const float* lp, const float* lq, int64_t n, double* acc) {
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += exp(double(lp[i])) * (double(lp[i]) - double(lq[i]));
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(acc, s);
}

// One block: the first index of the largest value, as a `>` scan from index 0 finds it (NaNs are never
// chosen, except x[0], which such a scan never leaves).
__global__ void k_argmax(const float* x, int64_t n, int64_t* out) {
  __shared__ float sv[1024];
  __shared__ int64_t si[1024];
  float bv = -INFINITY;
  int64_t bi = -1;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = x[i];
    if (v == v && (bi < 0 || v > bv)) {
      bv = v;
      bi = i;
    }
  }
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = sv[threadIdx.x + s], mv = sv[threadIdx.x];
      const int64_t oi = si[threadIdx.x + s], mi = si[threadIdx.x];
      if (oi >= 0 && (mi < 0 || ov > mv || (ov == mv && oi < mi))) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = (x[0] != x[0] || si[0] < 0) ? 0 : si[0];
}

double fetch_double(const double* p) {
  double v = 0;
  copy_to_host(&v, p, sizeof v);
  return v;
}

}  // namespace

void launch_embed(const void* E, DevType dt, int64_t cols, const int32_t* ids, int64_t T, float* out) {
  const unsigned g = grid_for(T * cols);
  switch (dt) {
    case DevType::kF32:
      k_embed<<<g, kThreads, 0, cudaStreamPerThread>>>(static_cast<const float*>(E), cols, ids, T, out);
      break;
    case DevType::kF16:
      k_embed<<<g, kThreads, 0, cudaStreamPerThread>>>(static_cast<const __half*>(E), cols, ids, T, out);
      break;
    case DevType::kBF16:
      k_embed<<<g, kThreads, 0, cudaStreamPerThread>>>(static_cast<const __nv_bfloat16*>(E), cols, ids, T, out);
      break;
  }
  check_launch("embed");
}

void launch_from_f32(const float* src, int64_t n, DevType dt, void* dst) {
  const unsigned g = grid_for(n);
  switch (dt) {
    case DevType::kF32: copy_on_device(dst, src, size_t(n) * sizeof(float)); return;
    case DevType::kF16: k_from_f32<<<g, kThreads, 0, cudaStreamPerThread>>>(src, n, static_cast<__half*>(dst)); break;
    case DevType::kBF16:
      k_from_f32<<<g, kThreads, 0, cudaStreamPerThread>>>(src, n, static_cast<__nv_bfloat16*>(dst));
      break;
  }
  check_launch("from_f32");
}

void launch_rmsnorm(const float* x, const float* g, int64_t T, int64_t d, float eps, float* y) {
  if (T <= 0) return;
  k_rmsnorm<<<unsigned(T), d >= 1024 ? 512 : 256, 0, cudaStreamPerThread>>>(x, g, d, eps, y);
  check_launch("rmsnorm");
}

void launch_rope(float* x, int64_t T, int n_head, int hd, int n_rot, int64_t pos0, const double* freq, bool interleaved,
                 float mscale) {
  const int half = n_rot / 2;
  const int64_t n = T * n_head * half;
  if (n <= 0) return;
  k_rope<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(x, T, n_head, hd, half, pos0, freq, interleaved, mscale);
  check_launch("rope");
}

void launch_swiglu(const float* g, const float* u, int64_t n, float* out) {
  if (n <= 0) return;
  k_swiglu<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(g, u, n, out);
  check_launch("swiglu");
}
void launch_add(float* y, const float* x, int64_t n) {
  if (n <= 0) return;
  k_add<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(y, x, n);
  check_launch("add");
}
void launch_sub(const float* a, const float* b, int64_t n, float* out) {
  if (n <= 0) return;
  k_sub<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(a, b, n, out);
  check_launch("sub");
}
void launch_mix(float* h, const float* p, float alpha, int64_t n) {
  if (n <= 0) return;
  k_mix<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(h, p, alpha, n);
  check_launch("mix");
}
void launch_fill(float* x, float v, int64_t n) {
  if (n <= 0) return;
  k_fill<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(x, v, n);
  check_launch("fill");
}
void launch_fill_f64(double* x, double v, int64_t n) {
  if (n <= 0) return;
  k_fill<<<grid_for(n), kThreads, 0, cudaStreamPerThread>>>(x, v, n);
  check_launch("fill");
}

void launch_softmax(float* x, int64_t n, bool log) {
  if (n <= 0) return;
  k_softmax<<<1, 1024, 0, cudaStreamPerThread>>>(x, n, log);
  check_launch("softmax");
}

float selective_mix(const float* z, const float* bias, const float* A, const float* p, float* h, int64_t T, int64_t d,
                    double* scratch) {
  const int64_t n = T * d;
  if (n <= 0) return 0.f;
  launch_fill_f64(scratch, 0.0, 1);
  k_selective_mix<<<grid_for(n, kThreads, 1024), kThreads, 0, cudaStreamPerThread>>>(z, bias, A, p, h, n, d, scratch);
  check_launch("selective_mix");
  return float(fetch_double(scratch) / double(n));
}

float layernorm_dot(const float* x, const float* ln_w, const float* ln_b, const float* w, float bias, float eps,
                    int64_t d, double* scratch) {
  k_layernorm_dot<<<1, 1024, 0, cudaStreamPerThread>>>(x, ln_w, ln_b, w, bias, eps, d, scratch);
  check_launch("layernorm_dot");
  return float(fetch_double(scratch));
}

double distance(const float* a, const float* b, int64_t n, double* scratch) {
  if (n <= 0) return 0.0;
  launch_fill_f64(scratch, 0.0, 1);
  k_sq_dist<<<grid_for(n, kThreads, 1024), kThreads, 0, cudaStreamPerThread>>>(a, b, n, scratch);
  check_launch("distance");
  return std::sqrt(fetch_double(scratch));
}

double kl_div(const float* logp, const float* logq, int64_t n, double* scratch) {
  if (n <= 0) return 0.0;
  launch_fill_f64(scratch, 0.0, 1);
  k_kl<<<grid_for(n, kThreads, 1024), kThreads, 0, cudaStreamPerThread>>>(logp, logq, n, scratch);
  check_launch("kl_div");
  return fetch_double(scratch);
}

int64_t argmax(const float* x, int64_t n, void* scratch) {
  if (n <= 0) return -1;
  auto* out = static_cast<int64_t*>(scratch);
  k_argmax<<<1, 1024, 0, cudaStreamPerThread>>>(x, n, out);
  check_launch("argmax");
  int64_t v = -1;
  copy_to_host(&v, out, sizeof v);
  return v;
}

}  // namespace loopus::cuda
