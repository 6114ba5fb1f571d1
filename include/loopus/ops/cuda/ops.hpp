// Ops<Cuda>: the OpsBackend operations on an NVIDIA GPU (kernels in src/cuda/, GEMMs through cuBLAS),
// same contract as Ops<Reference>. Link loopus::cuda.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "loopus/core/backend.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/ops/cuda/kernels.hpp"
#include "loopus/ops/cuda/runtime.hpp"
#include "loopus/ops/cuda/tensor.hpp"
#include "loopus/ops/cuda/weights.hpp"

namespace loopus {

/// The CUDA backend. Activations (Span<Cuda>, Tensor<Cuda>) and KV caches live in device memory;
/// weights are uploaded on first use and stay resident (cuda::WeightRegistry); ids, RoPE factors and
/// returned scalars cross to the host as the concept says. Every launch goes to the calling thread's
/// stream (cudaStreamPerThread), so sessions on different threads run independently; a value returned
/// to the host (download, argmax, the gate's mean, the halting distances) waits for that stream.
///
/// matmul: up to cuda::kGemvMaxT tokens a GEMV kernel streams each weight row once (decode); more go
/// to cuBLAS (f32 SGEMM; f16/bf16 GemmEx with the activations rounded to the weight's type and f32
/// accumulation). Block-quantized weights are widened to f16 on upload (weights.hpp).
template <>
struct Ops<Cuda> {
  using S = Span<Cuda>;
  using CS = CSpan<Cuda>;

  static void upload(const float* src, S dst) { cuda::copy_to_device(dst.p_, src, size_t(dst.size()) * sizeof(float)); }
  static void download(CS src, float* dst) { cuda::copy_to_host(dst, src.p_, size_t(src.size()) * sizeof(float)); }
  static void copy(S dst, CS src) {
    LOOPUS_ASSERT(dst.size() == src.size());
    cuda::copy_on_device(dst.p_, src.p_, size_t(src.size()) * sizeof(float));
  }
  static void fill(S x, float v) { cuda::launch_fill(x.p_, v, x.size()); }

  static void embed(const Weight& E, const int32_t* ids, int64_t T, S out) {
    LOOPUS_ASSERT(out.size() >= T * E.cols);
    if (T <= 0) return;
    for (int64_t t = 0; t < T; ++t)
      if (ids[t] < 0 || ids[t] >= E.rows)
        throw UsageError("token id " + std::to_string(ids[t]) + " is outside the vocabulary (0.." +
                         std::to_string(E.rows - 1) + ")");
    const cuda::DeviceWeight d = cuda::WeightRegistry::instance().get(E, cuda::Form::kMatrix);
    auto* dev_ids = static_cast<int32_t*>(cuda::scratch(cuda::kScratchIds, size_t(T) * sizeof(int32_t)));
    cuda::copy_to_device(dev_ids, ids, size_t(T) * sizeof(int32_t));
    cuda::launch_embed(d.data, d.dtype, d.cols, dev_ids, T, out.p_);
  }

  static void matmul(const Weight& W, CS x, int64_t T, S y) {
    LOOPUS_ASSERT(x.size() >= T * W.cols && y.size() >= T * W.rows);
    if (T <= 0) return;
    const cuda::DeviceWeight d = cuda::WeightRegistry::instance().get(W, cuda::Form::kMatrix);
    if (T <= cuda::kGemvMaxT) {
      cuda::launch_gemv(d.data, d.dtype, d.rows, d.cols, x.p_, T, y.p_);
      return;
    }
    void* conv = d.dtype == cuda::DevType::kF32 ? nullptr : cuda::scratch(cuda::kScratchConv, size_t(T * W.cols) * 2);
    cuda::gemm_cublas(d.data, d.dtype, d.rows, d.cols, x.p_, T, y.p_, conv);
  }

  /// Several products of one x (a layer's q, k, v; its gate and up): in decode one GEMV launch for
  /// all of them when their device copies share a type; otherwise one matmul each.
  static void matmul_shared(CS x, int64_t T, std::span<const SharedProduct<Cuda>> ps) {
    if (T >= 1 && T <= cuda::kGemvMaxT && ps.size() >= 2 && ps.size() <= size_t(cuda::kMaxGemvProducts)) {
      auto& reg = cuda::WeightRegistry::instance();
      cuda::GemvProducts g;
      cuda::DevType dt = cuda::DevType::kF32;
      bool same = true;
      for (const SharedProduct<Cuda>& p : ps) {
        LOOPUS_ASSERT(x.size() >= T * p.W->cols && p.y.size() >= T * p.W->rows && p.W->cols == ps[0].W->cols);
        const cuda::DeviceWeight d = reg.get(*p.W, cuda::Form::kMatrix);
        if (g.n == 0) dt = d.dtype;
        same = same && d.dtype == dt;
        g.w[g.n] = d.data;
        g.y[g.n] = p.y.p_;
        g.rows[g.n] = d.rows;
        g.first_row[g.n + 1] = g.first_row[g.n] + d.rows;
        ++g.n;
      }
      if (same && cuda::launch_gemv_multi(g, dt, ps[0].W->cols, x.p_, T)) return;
    }
    for (const SharedProduct<Cuda>& p : ps) matmul(*p.W, x, T, p.y);
  }

  static void rmsnorm(CS x, const Weight& g, int64_t T, int64_t d, float eps, S y) {
    LOOPUS_ASSERT(x.size() >= T * d && y.size() >= T * d && g.numel() >= d);
    const cuda::DeviceWeight gd = cuda::WeightRegistry::instance().get(g, cuda::Form::kF32);
    cuda::launch_rmsnorm(x.p_, static_cast<const float*>(gd.data), T, d, eps, y.p_);
  }

  static void rope(S x, int64_t T, int n_head, int head_dim, int n_rot, int64_t pos0, float theta, RopeStyle style,
                   const float* freq_factors = nullptr, float mscale = 1.f) {
    LOOPUS_ASSERT(x.size() >= T * n_head * head_dim && n_rot <= head_dim);
    cuda::launch_rope(x.p_, T, n_head, head_dim, n_rot, pos0, rope_freqs(n_rot, theta, freq_factors),
                      style == RopeStyle::kInterleaved, mscale);
  }

  static void attention(CS q, CS k, CS v, int64_t T, int64_t pos0, int64_t kv_begin, int n_head, int n_kv, int hd,
                        S out) {
    LOOPUS_ASSERT(k.size() >= (pos0 + T) * n_kv * hd && out.size() >= T * n_head * hd);
    LOOPUS_ASSERT(n_kv > 0 && n_head % n_kv == 0 && kv_begin <= pos0);
    if (hd > 256) throw UnsupportedError("CUDA attention: head_dim " + std::to_string(hd) + " > 256");
    if (T > 65535) throw LimitError("CUDA attention: more than 65535 tokens in one call");
    const int64_t nf = cuda::attention_scratch_floats(T, pos0 + T - kv_begin, n_head, hd);
    auto* partial = static_cast<float*>(cuda::scratch(cuda::kScratchAttn, size_t(nf) * sizeof(float)));
    cuda::launch_attention(q.p_, k.p_, v.p_, T, pos0, kv_begin, n_head, n_kv, hd, out.p_, partial);
  }

  static void swiglu(CS gate, CS up, S out) {
    LOOPUS_ASSERT(gate.size() == out.size() && up.size() == out.size());
    cuda::launch_swiglu(gate.p_, up.p_, out.size(), out.p_);
  }
  static void add(S y, CS x) {
    LOOPUS_ASSERT(y.size() == x.size());
    cuda::launch_add(y.p_, x.p_, y.size());
  }
  static void softmax(S x) { cuda::launch_softmax(x.p_, x.size(), false); }
  static void log_softmax(S x) { cuda::launch_softmax(x.p_, x.size(), true); }
  static void sub(CS a, CS b, S out) {
    LOOPUS_ASSERT(a.size() == out.size() && b.size() == out.size());
    cuda::launch_sub(a.p_, b.p_, out.size(), out.p_);
  }
  static void mix(S h, CS p, float alpha) {
    LOOPUS_ASSERT(h.size() == p.size());
    cuda::launch_mix(h.p_, p.p_, alpha, h.size());
  }
  static float selective_mix(CS z, const Weight& bias, const Weight& A, CS p, S h, int64_t T, int64_t d) {
    LOOPUS_ASSERT(z.size() >= T * d && p.size() >= T * d && h.size() >= T * d);
    auto& reg = cuda::WeightRegistry::instance();
    const cuda::DeviceWeight b = reg.get(bias, cuda::Form::kF32), a = reg.get(A, cuda::Form::kF32);
    return cuda::selective_mix(z.p_, static_cast<const float*>(b.data), static_cast<const float*>(a.data), p.p_, h.p_,
                               T, d, reduce_scratch());
  }
  static float layernorm_dot(CS x, const Weight& ln_w, const Weight& ln_b, const Weight& w, float bias, float eps) {
    auto& reg = cuda::WeightRegistry::instance();
    const cuda::DeviceWeight lw = reg.get(ln_w, cuda::Form::kF32), lb = reg.get(ln_b, cuda::Form::kF32),
                             ww = reg.get(w, cuda::Form::kF32);
    return cuda::layernorm_dot(x.p_, static_cast<const float*>(lw.data), static_cast<const float*>(lb.data),
                               static_cast<const float*>(ww.data), bias, eps, x.size(), reduce_scratch());
  }
  static double distance(CS a, CS b) {
    LOOPUS_ASSERT(a.size() == b.size());
    return cuda::distance(a.p_, b.p_, a.size(), reduce_scratch());
  }
  static double kl_div(CS logp, CS logq) {
    LOOPUS_ASSERT(logp.size() == logq.size());
    return cuda::kl_div(logp.p_, logq.p_, logp.size(), reduce_scratch());
  }
  static int64_t argmax(CS x) { return cuda::argmax(x.p_, x.size(), reduce_scratch()); }

 private:
  static double* reduce_scratch() { return static_cast<double*>(cuda::scratch(cuda::kScratchReduce, 64)); }

  /// The device table of pair frequencies theta^(-2i/n_rot) / factor_i (double, as the reference
  /// computes them), one per (theta, n_rot, factor values) this thread has used: built and uploaded once.
  static const double* rope_freqs(int n_rot, float theta, const float* factors) {
    using Key = std::tuple<float, int, uint64_t>;  // theta, n_rot, a hash of the factors' bytes (0: none)
    struct Table {
      std::map<Key, double*> t;
      ~Table() {
        for (auto& [k, p] : t) cuda::device_free(p);
      }
    };
    thread_local Table cache;
    const int half = n_rot / 2;
    const uint64_t fh = factors != nullptr ? cuda::fnv1a(factors, size_t(half) * sizeof(float)) : 0;
    const Key key{theta, n_rot, fh};
    if (auto it = cache.t.find(key); it != cache.t.end()) return it->second;
    std::vector<double> f(size_t(std::max(half, 1)));
    for (int i = 0; i < half; ++i) {
      f[size_t(i)] = std::pow(double(theta), -2.0 * i / n_rot);
      if (factors != nullptr) f[size_t(i)] /= double(factors[i]);
    }
    auto* d = static_cast<double*>(cuda::device_alloc(f.size() * sizeof(double)));
    cuda::copy_to_device(d, f.data(), f.size() * sizeof(double));
    cuda::synchronize();
    cache.t.emplace(key, d);
    return d;
  }
};

static_assert(OpsBackend<Cuda>, "Ops<Cuda> must provide every operation of ops/concept.hpp");

namespace cuda {
/// Frees every resident weight copy (call after the models that used them are gone).
inline void release_weights() { WeightRegistry::instance().release(); }
/// Device bytes the resident weights hold.
inline size_t resident_weight_bytes() { return WeightRegistry::instance().bytes(); }
}  // namespace cuda

}  // namespace loopus
