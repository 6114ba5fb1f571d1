// loopus::cuda attention: causal grouped-query attention over the KV cache, flash-decoding style
// (keys split across blocks with an online softmax, then merged), for one token or many.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cmath>

#include "common.cuh"

namespace loopus::cuda {
namespace {

constexpr int kWarps = 4;        // warps per block, each taking every kWarps-th key of the block's range
constexpr int kMaxPerLane = 8;   // head_dim ≤ 32·8 = 256
constexpr int kMinKeysPerSplit = 64;

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    (void)cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) v = 1;
    return std::max(v, 1);
  }();
  return n;
}

/// How many blocks share one (token, head): enough blocks for every SM when there are few queries
/// (decode), one when there are many (prefill).
int splits(int64_t T, int64_t n_keys_max, int n_head) {
  const int64_t rows = std::max<int64_t>(1, T * n_head);
  const int64_t want = (4 * int64_t(sm_count()) + rows - 1) / rows;
  const int64_t cap = std::max<int64_t>(1, n_keys_max / kMinKeysPerSplit);
  return int(std::clamp<int64_t>(std::min(want, cap), 1, 64));
}

// Block (h, t, s): keys [j0, j1) of query t, head h, split s. Each warp runs an online softmax over
// its keys (lane l holds dims l, l + 32, ...); the warps merge through shared memory and the block
// writes (m, l, acc[hd]) of its split to `partial`.
__global__ void __launch_bounds__(kWarps * 32) k_attn_split(const float* __restrict__ q, const float* __restrict__ k,
                                                           const float* __restrict__ v, int64_t pos0,
                                                           int64_t kv_begin, int n_head, int n_kv, int hd,
                                                           int nsplit, float scale, float* __restrict__ partial) {
  const int h = blockIdx.x, s = blockIdx.z;
  const int64_t t = blockIdx.y;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int kh = h / (n_head / n_kv);
  const int64_t row = int64_t(n_kv) * hd;
  const int64_t end = pos0 + t + 1, n = end - kv_begin;
  const int64_t chunk = (n + nsplit - 1) / nsplit;
  const int64_t j0 = kv_begin + int64_t(s) * chunk, j1 = end < j0 + chunk ? end : j0 + chunk;

  float qr[kMaxPerLane], acc[kMaxPerLane];
  const float* qv = q + (t * n_head + h) * hd;
#pragma unroll
  for (int u = 0; u < kMaxPerLane; ++u) {
    const int d = lane + 32 * u;
    qr[u] = d < hd ? qv[d] * scale : 0.f;
    acc[u] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = j0 + w; j < j1; j += kWarps) {
    const float* kr = k + j * row + int64_t(kh) * hd;
    const float* vr = v + j * row + int64_t(kh) * hd;
    float dot = 0.f;
#pragma unroll
    for (int u = 0; u < kMaxPerLane; ++u) {
      const int d = lane + 32 * u;
      if (d < hd) dot += qr[u] * kr[d];
    }
    dot = dev::warp_sum(dot);
    const float mn = fmaxf(m, dot);
    const float corr = expf(m - mn);  // 0 for the first key (m = -inf)
    const float p = expf(dot - mn);
    l = l * corr + p;
#pragma unroll
    for (int u = 0; u < kMaxPerLane; ++u) {
      const int d = lane + 32 * u;
      if (d < hd) acc[u] = acc[u] * corr + p * vr[d];
    }
    m = mn;
  }

  __shared__ float sm[kWarps], sl[kWarps], sacc[kWarps][32 * kMaxPerLane];
  if (lane == 0) {
    sm[w] = m;
    sl[w] = l;
  }
#pragma unroll
  for (int u = 0; u < kMaxPerLane; ++u) {
    const int d = lane + 32 * u;
    if (d < hd) sacc[w][d] = acc[u];
  }
  __syncthreads();
  float M = -INFINITY;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) M = fmaxf(M, sm[i]);
  float* out = partial + ((t * n_head + h) * nsplit + s) * int64_t(hd + 2);
  if (threadIdx.x == 0) {
    float L = 0.f;
    for (int i = 0; i < kWarps; ++i)
      if (sm[i] != -INFINITY) L += sl[i] * expf(sm[i] - M);
    out[0] = M;
    out[1] = L;
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.f;
    for (int i = 0; i < kWarps; ++i)
      if (sm[i] != -INFINITY) a += sacc[i][d] * expf(sm[i] - M);
    out[2 + d] = a;
  }
}

// Block (h, t): merges the nsplit partial results of one query and head into out.
__global__ void k_attn_merge(const float* __restrict__ partial, int n_head, int hd, int nsplit, float* __restrict__ o) {
  const int h = blockIdx.x;
  const int64_t t = blockIdx.y;
  const float* p = partial + (t * n_head + h) * nsplit * int64_t(hd + 2);
  float M = -INFINITY;
  for (int s = 0; s < nsplit; ++s) M = fmaxf(M, p[s * (hd + 2)]);
  float L = 0.f;
  for (int s = 0; s < nsplit; ++s) {
    const float ms = p[s * (hd + 2)];
    if (ms != -INFINITY) L += p[s * (hd + 2) + 1] * expf(ms - M);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.f;
    for (int s = 0; s < nsplit; ++s) {
      const float ms = p[s * (hd + 2)];
      if (ms != -INFINITY) a += p[s * (hd + 2) + 2 + d] * expf(ms - M);
    }
    o[(t * n_head + h) * hd + d] = a / L;
  }
}

}  // namespace

int64_t attention_scratch_floats(int64_t T, int64_t n_keys_max, int n_head, int hd) {
  return T * n_head * int64_t(splits(T, n_keys_max, n_head)) * (hd + 2);
}

void launch_attention(const float* q, const float* k, const float* v, int64_t T, int64_t pos0, int64_t kv_begin,
                      int n_head, int n_kv, int hd, float* out, float* partial) {
  if (T <= 0) return;
  const int nsplit = splits(T, pos0 + T - kv_begin, n_head);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const dim3 grid{unsigned(n_head), unsigned(T), unsigned(nsplit)};
  k_attn_split<<<grid, kWarps * 32, 0, cudaStreamPerThread>>>(q, k, v, pos0, kv_begin, n_head, n_kv, hd, nsplit,
                                                             scale, partial);
  check_launch("attention");
  const int threads = std::min(256, (hd + 31) / 32 * 32);
  k_attn_merge<<<dim3(unsigned(n_head), unsigned(T)), threads, 0, cudaStreamPerThread>>>(partial, n_head, hd, nsplit,
                                                                                        out);
  check_launch("attention merge");
}

}  // namespace loopus::cuda
