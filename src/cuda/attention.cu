// loopus::cuda attention: causal grouped-query attention over the KV cache. Few queries (decode):
// flash-decoding (keys split across blocks, each an online softmax, then merged). Many (prefill):
// tiles of 32 queries meet tiles of 32 keys staged in shared memory, online softmax per query.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cmath>

#include "common.cuh"

namespace loopus::cuda {
namespace {

constexpr int kWarps = 4;       // warps per block, each taking every kWarps-th key of the block's range
constexpr int kMaxPerLane = 8;  // head_dim ≤ 32·8 = 256
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
__global__ void __launch_bounds__(kWarps * 32)
    k_attn_split(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, int64_t pos0,
                 int64_t kv_begin, int n_head, int n_kv, int hd, int nsplit, float scale, float* __restrict__ partial) {
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

// ---- prefill: tiles of queries against tiles of keys in shared memory ----------------------------

constexpr int kQT = 32;        // queries per block
constexpr int kKT = 32;        // keys per tile (one per lane)
constexpr int kTileWarps = 8;  // kQT / kTileWarps = 4 queries per warp
constexpr int kQPW = kQT / kTileWarps;
constexpr int kTileMaxHd = 128;  // 4 dims per lane in the value phase

size_t tile_smem_bytes(int hd) { return sizeof(float) * size_t(kQT * hd + kKT * (hd + 1) + kQT * (kKT + 1)); }

// Block (h, query tile): the tile's queries (scaled, in shared memory) meet each tile of keys once:
// lane j scores key j against the warp's 4 queries (keys padded to hd + 1 floats: no bank conflicts),
// an online softmax per query, then the same buffer holds the values and each lane accumulates its
// dims. Keys [kv_begin, pos0 + t] per query t (causal).
__global__ void __launch_bounds__(kTileWarps * 32)
    k_attn_tile(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, int64_t T,
                int64_t pos0, int64_t kv_begin, int n_head, int n_kv, int hd, float scale, float* __restrict__ out) {
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [kQT][hd]
  float* KV = Qs + kQT * hd;                    // [kKT][hd + 1]: keys, then values
  float* S = KV + kKT * (hd + 1);               // [kQT][kKT + 1]: probabilities
  const int h = blockIdx.x;
  const int64_t t0 = int64_t(blockIdx.y) * kQT;
  const int nq = int(T - t0 < kQT ? T - t0 : kQT);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int kh = h / (n_head / n_kv);
  const int64_t row = int64_t(n_kv) * hd;
  for (int i = threadIdx.x; i < kQT * hd; i += blockDim.x) {
    const int qi = i / hd, d = i - qi * hd;
    Qs[i] = qi < nq ? q[((t0 + qi) * n_head + h) * hd + d] * scale : 0.f;
  }
  float m[kQPW], l[kQPW], acc[kQPW][kTileMaxHd / 32];
#pragma unroll
  for (int i = 0; i < kQPW; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int u = 0; u < kTileMaxHd / 32; ++u) acc[i][u] = 0.f;
  }
  const int64_t kend = pos0 + t0 + nq;  // one past the last key any query of the tile sees
  for (int64_t j0 = kv_begin; j0 < kend; j0 += kKT) {
    __syncthreads();  // the previous tile's values are used up (and the queries are in)
    for (int i = threadIdx.x; i < kKT * hd; i += blockDim.x) {
      const int kj = i / hd, d = i - kj * hd;
      const int64_t j = j0 + kj;
      KV[kj * (hd + 1) + d] = j < kend ? k[j * row + int64_t(kh) * hd + d] : 0.f;
    }
    __syncthreads();
    float s[kQPW];
#pragma unroll
    for (int i = 0; i < kQPW; ++i) s[i] = 0.f;
    const float* kr = KV + lane * (hd + 1);
    for (int d = 0; d < hd; d += 4) {
      const float k0 = kr[d], k1 = kr[d + 1], k2 = kr[d + 2], k3 = kr[d + 3];
#pragma unroll
      for (int i = 0; i < kQPW; ++i) {
        const float4 qv = *reinterpret_cast<const float4*>(Qs + (w * kQPW + i) * hd + d);
        s[i] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
      }
    }
    const int64_t j = j0 + lane;
#pragma unroll
    for (int i = 0; i < kQPW; ++i) {
      const int qi = w * kQPW + i;
      const bool valid = qi < nq && j <= pos0 + t0 + qi;
      const float sc = valid ? s[i] : -INFINITY;
      const float mn = fmaxf(m[i], dev::warp_max(sc));
      float p = 0.f, corr = 1.f;
      if (mn != -INFINITY) {
        p = valid ? expf(sc - mn) : 0.f;
        corr = expf(m[i] - mn);  // 0 while nothing was seen (m = -inf)
      }
      l[i] = l[i] * corr + dev::warp_sum(p);
#pragma unroll
      for (int u = 0; u < kTileMaxHd / 32; ++u) acc[i][u] *= corr;
      m[i] = mn;
      S[qi * (kKT + 1) + lane] = p;
    }
    __syncthreads();  // every warp is done with the keys
    for (int i = threadIdx.x; i < kKT * hd; i += blockDim.x) {
      const int kj = i / hd, d = i - kj * hd;
      const int64_t jj = j0 + kj;
      KV[kj * (hd + 1) + d] = jj < kend ? v[jj * row + int64_t(kh) * hd + d] : 0.f;
    }
    __syncthreads();
    for (int kj = 0; kj < kKT; ++kj) {
      float p[kQPW];
#pragma unroll
      for (int i = 0; i < kQPW; ++i) p[i] = S[(w * kQPW + i) * (kKT + 1) + kj];
#pragma unroll
      for (int u = 0; u < kTileMaxHd / 32; ++u) {
        const int d = lane + 32 * u;
        if (d < hd) {
          const float vd = KV[kj * (hd + 1) + d];
#pragma unroll
          for (int i = 0; i < kQPW; ++i) acc[i][u] += p[i] * vd;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kQPW; ++i) {
    const int qi = w * kQPW + i;
    if (qi >= nq) continue;
#pragma unroll
    for (int u = 0; u < kTileMaxHd / 32; ++u) {
      const int d = lane + 32 * u;
      if (d < hd) out[((t0 + qi) * n_head + h) * hd + d] = acc[i][u] / l[i];
    }
  }
}

/// Whether a call runs as query tiles (prefill and long chunks) rather than split keys (decode).
bool use_tiles(int64_t T, int hd) { return T >= 16 && hd <= kTileMaxHd && hd % 4 == 0; }

}  // namespace

int64_t attention_scratch_floats(int64_t T, int64_t n_keys_max, int n_head, int hd) {
  if (use_tiles(T, hd)) return 1;
  return T * n_head * int64_t(splits(T, n_keys_max, n_head)) * (hd + 2);
}

void launch_attention(const float* q, const float* k, const float* v, int64_t T, int64_t pos0, int64_t kv_begin,
                      int n_head, int n_kv, int hd, float* out, float* partial) {
  if (T <= 0) return;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  if (use_tiles(T, hd)) {
    const dim3 grid{unsigned(n_head), unsigned((T + kQT - 1) / kQT)};
    k_attn_tile<<<grid, kTileWarps * 32, tile_smem_bytes(hd), cudaStreamPerThread>>>(q, k, v, T, pos0, kv_begin, n_head,
                                                                                     n_kv, hd, scale, out);
    check_launch("attention (query tiles)");
    return;
  }
  const int nsplit = splits(T, pos0 + T - kv_begin, n_head);
  const dim3 grid{unsigned(n_head), unsigned(T), unsigned(nsplit)};
  k_attn_split<<<grid, kWarps * 32, 0, cudaStreamPerThread>>>(q, k, v, pos0, kv_begin, n_head, n_kv, hd, nsplit, scale,
                                                              partial);
  check_launch("attention");
  const int threads = std::min(256, (hd + 31) / 32 * 32);
  k_attn_merge<<<dim3(unsigned(n_head), unsigned(T)), threads, 0, cudaStreamPerThread>>>(partial, n_head, hd, nsplit,
                                                                                         out);
  check_launch("attention merge");
}

}  // namespace loopus::cuda
