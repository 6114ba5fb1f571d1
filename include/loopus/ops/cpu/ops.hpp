// Ops<Cpu>: the optimised CPU kernels (SIMD + OpenMP, Eigen GEMM for prefill), same contract as Ops<Reference>.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "loopus/ops/cpu/eigen.hpp"
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "loopus/core/backend.hpp"
#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/ops/cpu/blas.hpp"
#include "loopus/ops/cpu/isa_kernels.hpp"
#include "loopus/ops/cpu/simd.hpp"

// LOOPUS_OMP(omp ...): an OpenMP pragma that vanishes (without unknown-pragma
// warnings) when the including target is built without OpenMP.
#if !defined(LOOPUS_OMP)
#if defined(_OPENMP)
#define LOOPUS_OMP(...) _Pragma(#__VA_ARGS__)
#else
#define LOOPUS_OMP(...)
#endif
#endif

namespace loopus::cpu {

/// Tuning constants of Ops<Cpu>, measured on a 2-vCPU AMD EPYC VM (family 25,
/// AVX2 exposed, no AVX-512) with bench/bench_ops.cpp.
struct Tuning {
  /// Below this many multiply-adds a kernel runs on the calling thread: waking
  /// the OpenMP team costs a few microseconds, more than such a kernel takes.
  static constexpr int64_t kParallelMinWork = 32 * 1024;
  /// matmul with T at most this uses the row-streaming GEMV kernel (weights
  /// read once, reused from cache across the T tokens); larger T goes to GEMM.
  static constexpr int64_t kGemvMaxT = 16;
  /// The same for quantized weights: up to this many tokens the integer-dot GEMV (activations
  /// rounded to 8-bit blocks), beyond it the GEMM on panels widened to f32.
  static constexpr int64_t kQuantGemvMaxT = 16;
  /// Rows per weight panel of the prefill GEMM (see matmul_gemm_panels).
  static constexpr int64_t kPanelRows = 256;
  /// With OpenBLAS in the build, GEMMs with at least this many rows (tokens)
  /// use it; 1.2-1.9x Eigen from T = 64 up (bench_ops, docs/performance.md),
  /// unclear below, so smaller ones stay on Eigen.
  static constexpr int64_t kBlasMinRows = 64;
  /// attention with at least this many new tokens runs as blocked GEMMs
  /// (attend_block), kAttnBlockT query tokens per block.
  static constexpr int64_t kAttnBlockMinT = 16;
  static constexpr int64_t kAttnBlockT = 32;
};

namespace detail {

/// Scratch slots; one growing buffer per thread and slot, so no kernel
/// allocates after warm-up and concurrent threads never share one.
enum ScratchSlot : int {
  kScratchPanel,
  kScratchScores,
  kScratchAcc,
  kScratchRope,
  kScratchGemmA,
  kScratchGemmB,
  kScratchBf16,
  kScratchQAct,
  kScratchQX,
  kScratchPanelBf16,
  kNumSlots
};

/// n floats of this thread's scratch slot (contents undefined). Grows only.
inline float* scratch(ScratchSlot slot, size_t n) {
  thread_local AlignedBuffer bufs[kNumSlots];
  AlignedBuffer& b = bufs[slot];
  const size_t bytes = std::max<size_t>(n, 16) * sizeof(float);
  if (b.size() < bytes) b.resize(std::max(bytes, b.size() + b.size() / 2));
  return b.as<float>();
}

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// One product of a decode step: y[T, rows] = x[T, cols] · Wᵀ by one GEMV kernel, either a float
/// one (f32/f16/bf16 W, reading x) or a quantized one (reading x rounded to 8-bit blocks, acts).
struct RowProduct {
  const void* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
  MatKernels::Gemv gemv = nullptr;
  MatKernels::QGemv qgemv = nullptr;
};

/// Runs the products ps[0, n) of one x[T, cols] (decode and short chunks), streaming each W once:
/// their rows, cut into blocks of 4 (the float kernels' tile; a range starts on a multiple of it),
/// are split into one contiguous range of blocks per thread across the products in order, so
/// every weight byte is read once, by one core, in order, and the products share one parallel
/// region (one fork and join instead of n: q, k and v, or gate and up, of one token). Memory-bound
/// for small T.
inline void run_row_products(const RowProduct* ps, int n, int64_t cols, const float* x, const quant::ActRow* acts,
                             int64_t T) {
  constexpr int64_t kRows = 4;
  constexpr int kMaxProducts = 4;
  LOOPUS_ASSERT(n >= 1 && n <= kMaxProducts);
  int64_t first_blk[kMaxProducts + 1] = {0};  // product i covers blocks [first_blk[i], first_blk[i + 1])
  int64_t rows = 0;
  for (int i = 0; i < n; ++i) {
    first_blk[i + 1] = first_blk[i] + (ps[i].rows + kRows - 1) / kRows;
    rows += ps[i].rows;
  }
  const int64_t nblk = first_blk[n];
  const auto run = [&](int64_t b0, int64_t b1) {  // blocks [b0, b1), across products
    for (int i = 0; i < n; ++i) {
      const RowProduct& p = ps[i];
      const int64_t r0 = std::min(p.rows, (std::max(b0, first_blk[i]) - first_blk[i]) * kRows);
      const int64_t r1 = std::min(p.rows, (std::min(b1, first_blk[i + 1]) - first_blk[i]) * kRows);
      if (r0 >= r1) continue;
      if (p.qgemv != nullptr) {
        p.qgemv(p.w, r0, r1, cols, acts, T, p.y, p.rows);
      } else {
        p.gemv(p.w, r0, r1, cols, x, T, p.y, p.rows);
      }
    }
  };
  const int nthr = rows * cols * T >= Tuning::kParallelMinWork ? int(std::min<int64_t>(max_threads(), nblk)) : 1;
  if (nthr <= 1) {
    run(0, nblk);
    return;
  }
  LOOPUS_OMP(omp parallel for schedule(static, 1) num_threads(nthr))
  for (int t = 0; t < nthr; ++t) run(nblk * t / nthr, nblk * (t + 1) / nthr);
}

/// y[T, rows] = x[T, cols] · Wᵀ streaming W once by a float GEMV kernel (run_row_products with one
/// product).
inline void matmul_rows(MatKernels::Gemv gemv, const void* w, int64_t rows, int64_t cols, const float* x, int64_t T,
                        float* y) {
  RowProduct p;
  p.w = w;
  p.rows = rows;
  p.y = y;
  p.gemv = gemv;
  run_row_products(&p, 1, cols, x, nullptr, T);
}

/// Whether quantized prefill may round the widened weights to bf16 (where the CPU has native bf16
/// products). Not for q6_K: its values (an 8-bit scale times a 6-bit quant times d) lose too much
/// in bf16's 8-bit mantissa. Measured on SmolLM2-135M with llama-perplexity's chunking (20 chunks):
/// -0.43 % against llama-perplexity through bf16, -0.17 % through f32; the other types stay
/// within 0.1 % through bf16 (docs/quantization.md).
constexpr bool quant_prefill_bf16(DType dt) { return dt != DType::kQ6_K; }

/// xr[T, cols] = x rounded to the 8-bit activation blocks a quantized weight of type dt multiplies
/// (quant::quantize_act) and widened back: d·q per value, with the d the block dot uses.
inline void round_acts(const MatKernels& kern, DType dt, const float* x, int64_t T, int64_t cols, float* xr) {
  const quant::ActKind kind = quant::act_kind(dt);
  const int64_t bs = kind == quant::ActKind::kQ8_K ? 256 : 32;
  auto* buf = reinterpret_cast<unsigned char*>(scratch(kScratchQAct, (quant::act_row_bytes(cols) + 3) / 4));
  const quant::ActRowMut a = quant::act_layout(buf, cols);
  for (int64_t t = 0; t < T; ++t) {
    kern.quantize_act(kind, x + t * cols, cols, a);
    float* o = xr + t * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = a.d[c / bs] * float(a.qs[c]);
  }
}

/// x[T, cols] rounded to 8-bit blocks of `kind` by the level's quantize_act (quant::quantize_act's
/// bytes: the rounding llama.cpp uses), once, on the calling thread, into per-thread scratch;
/// acts[t] describes row t (T ≤ 64).
inline void round_act_rows(const MatKernels& kern, quant::ActKind kind, const float* x, int64_t T, int64_t cols,
                           quant::ActRow* acts) {
  LOOPUS_ASSERT(T <= 64);
  const size_t rb = quant::act_row_bytes(cols);
  auto* buf = reinterpret_cast<unsigned char*>(scratch(kScratchQAct, (size_t(T) * rb + 3) / 4));
  for (int64_t t = 0; t < T; ++t) {
    const quant::ActRowMut a = quant::act_layout(buf + size_t(t) * rb, cols);
    kern.quantize_act(kind, x + t * cols, cols, a);
    acts[t] = a;
  }
}

/// y[T, rows] = x[T, cols] · Wᵀ for a quantized W, streaming W once (decode and short chunks): the
/// activations are rounded to 8-bit blocks once (round_act_rows), then the threads split the rows
/// as matmul_rows does and run the level's integer-dot GEMV on their ranges.
inline void matmul_rows_quant(const MatKernels& kern, DType dt, const void* w, int64_t rows, int64_t cols,
                              const float* x, int64_t T, float* y) {
  quant::ActRow acts[64];
  round_act_rows(kern, quant::act_kind(dt), x, T, cols, acts);
  RowProduct p;
  p.w = w;
  p.rows = rows;
  p.y = y;
  p.qgemv = kern.gemv_q[quant::quant_index(dt)];
  run_row_products(&p, 1, cols, x, acts, T);
}

using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// C[M×N] = A[M×K] · op(B), everything row-major with leading dimensions;
/// op(B) = Bᵀ for B stored [N×K] (kTransB), else B stored [K×N]. Single-threaded
/// (callers parallelise around it). With OpenBLAS in the build
/// (LOOPUS_HAS_CBLAS, blas_fast()) this is cblas_sgemm on one thread. Otherwise, with Eigen
/// 3.4, it drives Eigen's GEMM kernel directly, handing it packing buffers from
/// per-thread scratch: the public product expression would malloc them on
/// every call.
template <bool kTransB>
inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc) {
  if (M <= 0 || N <= 0) return;
#if defined(LOOPUS_HAS_CBLAS)
  if (M >= Tuning::kBlasMinRows && K > 0 && blas_fast()) {
    sgemm(false, kTransB, M, N, K, A, lda, B, ldb, 0.f, C, ldc);  // OpenBLAS: 1.2-1.9x Eigen's kernel here
    return;
  }
#endif
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
  for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);  // Eigen accumulates
  if (K <= 0) return;
  // Column-major view, as Eigen's kernel wants it: Cᵀ[N×M] += op(B)ᵀ[N×K] · Aᵀ[K×M].
  struct ScratchBlocking : Eigen::internal::level3_blocking<float, float> {
    ScratchBlocking(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth) {
      this->m_mc = rows;
      this->m_nc = cols;
      this->m_kc = depth;
      Eigen::internal::computeProductBlockingSizes<float, float, 1>(this->m_kc, this->m_mc, this->m_nc,
                                                                    Eigen::Index(1));
      this->m_blockA = scratch(kScratchGemmA, size_t(this->m_mc * this->m_kc));
      this->m_blockB = scratch(kScratchGemmB, size_t(this->m_kc * this->m_nc));
    }
  } blocking(N, M, K);
  Eigen::internal::general_matrix_matrix_product<Eigen::Index, float, kTransB ? Eigen::RowMajor : Eigen::ColMajor,
                                                 false, float, Eigen::ColMajor, false, Eigen::ColMajor,
                                                 1>::run(N, M, K, B, ldb, A, lda, C, 1, ldc, 1.f, blocking);
#else
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<const RowMatF, 0, Stride> Am(A, M, K, Stride(lda));
  Eigen::Map<RowMatF, 0, Stride> Cm(C, M, N, Stride(ldc));
  if constexpr (kTransB) {
    Cm.noalias() = Am * Eigen::Map<const RowMatF, 0, Stride>(B, N, K, Stride(ldb)).transpose();
  } else {
    Cm.noalias() = Am * Eigen::Map<const RowMatF, 0, Stride>(B, K, N, Stride(ldb));
  }
#endif
}

/// Prefill (T > kGemvMaxT): W is cut into panels of rows, one OpenMP task each, writing the
/// matching column block of y. A task multiplies its panel with every token:
///   - bf16 weights where the active level has native bf16 products (AVX512_BF16): the
///     activations are rounded to bf16 once, before the tasks, and each panel goes through the
///     level's bf16 GEMM (ops/cpu/isa/gemm_bf16_body.hpp);
///   - otherwise a single-threaded f32 GEMM (OpenBLAS or Eigen, see gemm above) on the panel, used
///     in place for f32 weights and widened into per-thread scratch for f16/bf16/quantized
///     (widening is O(rows·cols), small next to the O(T·rows·cols) GEMM). For quantized weights
///     x is first rounded to 8-bit blocks and widened back (round_acts), so the GEMM computes the
///     same block products as the GEMV: prefill and decode agree to f32 rounding. Where the level
///     has native bf16 products, quantized panels and those activations are rounded to bf16 and
///     take the bf16 GEMM (twice the f32 GEMM's rate; within bf16 rounding of the same products).
/// Panels of ~256 rows keep the GEMM's re-packing of x (once per panel) cheap; their count is a
/// multiple of the thread count so no thread idles on small matrices, and their size a multiple of
/// 8 rows (the bf16 kernel's tile).
inline void matmul_gemm_panels(const MatKernels& kern, DType dt, const void* w, int64_t rows, int64_t cols,
                               const float* x, int64_t T, float* y) {
  const int64_t nthr = rows * cols * T >= Tuning::kParallelMinWork ? max_threads() : 1;
  int64_t npan = (rows + Tuning::kPanelRows - 1) / Tuning::kPanelRows;
  npan = (npan + nthr - 1) / nthr * nthr;
  const int64_t nb = std::max<int64_t>(8, ((rows + npan - 1) / npan + 7) / 8 * 8);
  npan = (rows + nb - 1) / nb;
  const bool quant = dtype_is_quantized(dt);
  const bool native_bf16 = (dt == DType::kBF16 || (quant && quant_prefill_bf16(dt))) && kern.gemm_bf16 != nullptr;
  if (quant) {  // the activations rounded to 8-bit blocks and widened back, as matmul_rows_quant rounds them
    float* xr = scratch(kScratchQX, size_t(T * cols));
    round_acts(kern, dt, x, T, cols, xr);
    x = xr;
  }
  const int64_t ldx = (cols + 31) / 32 * 32;
  uint16_t* xb = nullptr;
  if (native_bf16) {
    xb = reinterpret_cast<uint16_t*>(scratch(kScratchBf16, size_t(T * ldx + 1) / 2));
    for (int64_t t = 0; t < T; ++t) kern.to_bf16(x + t * cols, cols, xb + t * ldx, ldx);
  }
  LOOPUS_OMP(omp parallel for schedule(static, 1) if (nthr > 1 && npan > 1))
  for (int64_t p = 0; p < npan; ++p) {
    const int64_t r0 = p * nb;
    const int64_t m = std::min(nb, rows - r0);
    float* widened = nullptr;  // a quantized panel widened to f32
    if (quant) {
      widened = scratch(kScratchPanel, size_t(m * cols));
      dequantize_rows(Weight{w, dt, rows, cols}, r0, m, widened);
    }
    if (native_bf16 && quant) {  // the widened panel rounded to bf16
      auto* wb = reinterpret_cast<uint16_t*>(scratch(kScratchPanelBf16, size_t(m * cols + 1) / 2));
      kern.to_bf16(widened, m * cols, wb, m * cols);
      kern.gemm_bf16(xb, ldx, T, wb, 0, m, cols, y + r0, rows);
      continue;
    }
    if (native_bf16) {
      kern.gemm_bf16(xb, ldx, T, w, r0, r0 + m, cols, y, rows);
      continue;
    }
    const float* panel;
    if (dt == DType::kF32) {
      panel = static_cast<const float*>(w) + r0 * cols;
    } else if (quant) {
      panel = widened;
    } else {
      float* buf = scratch(kScratchPanel, size_t(m * cols));
      const auto* src = static_cast<const uint16_t*>(w) + r0 * cols;
      (dt == DType::kF16 ? kern.widen_f16 : kern.widen_bf16)(src, m * cols, buf);
      panel = buf;
    }
    gemm<true>(T, m, cols, x, cols, panel, cols, y + r0, rows);
  }
}

/// Prefill with f32 weights as one Eigen GEMM, Eigen doing its own OpenMP
/// threading; not used by Ops<Cpu>, kept as the yardstick in bench/bench_ops.cpp.
inline void matmul_gemm_f32(const float* w, int64_t rows, int64_t cols, const float* x, int64_t T, float* y) {
  Eigen::Map<const RowMatF> X(x, T, cols), Wm(w, rows, cols);
  Eigen::Map<RowMatF> Y(y, T, rows);
  Y.noalias() = X * Wm.transpose();
}

/// y[i] = x[i] * s for n floats (vectorised, scalar tail).
inline void scale_to(const float* x, float s, int64_t n, float* y) {
  using simd::VecF;
  constexpr int64_t W = simd::kLanes;
  const VecF vs = VecF::set1(s);
  int64_t i = 0;
  for (; i + W <= n; i += W) (VecF::load(x + i) * vs).store(y + i);
  for (; i < n; ++i) y[i] = x[i] * s;
}

/// acc[i] += p · v[i] for n floats.
inline void axpy(float p, const float* v, int64_t n, float* acc) {
  using simd::VecF;
  constexpr int64_t W = simd::kLanes;
  const VecF vp = VecF::set1(p);
  int64_t i = 0;
  for (; i + W <= n; i += W) simd::fma(vp, VecF::load(v + i), VecF::load(acc + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += p * v[i];
}

/// acc[i] += Σ_{u<4} p[u] · v_u[i]: one load/store of acc per four cache rows.
inline void axpy4(const float* p, const float* v0, const float* v1, const float* v2, const float* v3, int64_t n,
                  float* acc) {
  using simd::VecF;
  constexpr int64_t W = simd::kLanes;
  const VecF p0 = VecF::set1(p[0]), p1 = VecF::set1(p[1]), p2 = VecF::set1(p[2]), p3 = VecF::set1(p[3]);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    VecF a = VecF::load(acc + i);
    a = simd::fma(p0, VecF::load(v0 + i), a);
    a = simd::fma(p1, VecF::load(v1 + i), a);
    a = simd::fma(p2, VecF::load(v2 + i), a);
    a = simd::fma(p3, VecF::load(v3 + i), a);
    a.store(acc + i);
  }
  for (; i < n; ++i) acc[i] += p[0] * v0[i] + p[1] * v1[i] + p[2] * v2[i] + p[3] * v3[i];
}

/// In place x[i] = exp(x[i] - m) for n floats; returns their sum (in double,
/// from f32 partial sums over short blocks, so long rows lose no accuracy).
inline double exp_shift_sum(float* x, int64_t n, float m) {
  using simd::VecF;
  constexpr int64_t W = simd::kLanes;
  constexpr int64_t kBlock = 64 * W;
  const VecF vm = VecF::set1(m);
  double z = 0.0;
  int64_t i = 0;
  while (i + W <= n) {
    VecF s = VecF::zero();
    const int64_t stop = std::min(n - W + 1, i + kBlock);
    for (; i < stop; i += W) {
      const VecF e = simd::exp(VecF::load(x + i) - vm);
      e.store(x + i);
      s = s + e;
    }
    z += simd::hsum_double(s);
  }
  for (; i < n; ++i) z += (x[i] = std::exp(x[i] - m));
  return z;
}

/// Max of n floats (n ≥ 1); NaN propagates.
inline float max_of(const float* x, int64_t n) {
  using simd::VecF;
  constexpr int64_t W = simd::kLanes;
  float m = x[0];
  int64_t i = 0;
  if (n >= W) {
    VecF vm = VecF::load(x);
    for (i = W; i + W <= n; i += W) vm = simd::max(VecF::load(x + i), vm);
    m = simd::hmax(vm);
  }
  for (; i < n; ++i) m = std::isnan(x[i]) || x[i] > m ? x[i] : m;
  return m;
}

inline int thread_num() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Attention of one query token (all heads) over cache rows [kv_begin, end),
/// sweeping the cache in row order: every K and V row is read once, whole
/// (n_kv·hd floats, contiguous), for all heads together. Reading one head's
/// slice down the rows instead would stride by a row (usually ≥ a 4 KiB page)
/// and miss the TLB and the hardware prefetcher on every row. Threads split
/// the rows; partial P·V sums are reduced at the end.
/// q: [n_head, hd]; out: [n_head, hd].
/// Prefetches (into L2) the four cache rows that attend_token reads two blocks after row j:
/// rows kv_begin + j + 8 .. + 11 of [*, ld] (those below n only). Decode reads each layer's keys
/// and values once per token, after the weights have pushed them out of the caches.
inline void prefetch_rows_ahead(const float* base, int64_t kv_begin, int64_t j, int64_t n, int64_t ld) {
  const int64_t r0 = j + 8, r1 = std::min<int64_t>(n, j + 12);
  if (r0 >= r1) return;
  const char* p = reinterpret_cast<const char*>(base + (kv_begin + r0) * ld);
  const int64_t bytes = (r1 - r0) * ld * int64_t(sizeof(float));
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 2);
}

inline void attend_token(const float* q, const float* k, const float* v, int64_t kv_begin, int64_t end, int n_head,
                         int n_kv, int hd, float scale, float* out) {
  const int64_t n = end - kv_begin;
  if (n <= 0) {  // nothing visible (caller broke kv_begin ≤ pos0): defined output, no crash
    std::fill(out, out + int64_t(n_head) * hd, 0.f);
    return;
  }
  const int group = n_head / n_kv;
  const int64_t ld = int64_t(n_kv) * hd;
  const int64_t hsz = int64_t(n_head) * hd;
  const int nthr_max = max_threads();
  // Shared (calling thread's) scratch: scores [n_head, n], per-thread partial outputs, 1/z.
  float* sc = scratch(kScratchScores, size_t(n_head * n));
  float* part = scratch(kScratchAcc, size_t(nthr_max * hsz));
  float* invz = scratch(kScratchRope, size_t(n_head));
  const int64_t nb = (n + 3) / 4;  // blocks of four rows
  [[maybe_unused]] const bool par = nthr_max > 1 && hsz * n >= Tuning::kParallelMinWork;
  LOOPUS_OMP(omp parallel if (par))
  {
    // 1. Scores, four rows at a time: dot_rows shares each load of q over them.
    LOOPUS_OMP(omp for schedule(static))
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t j = b * 4;
      const int64_t rows = std::min<int64_t>(4, n - j);
      const float* kr = k + (kv_begin + j) * ld;
      prefetch_rows_ahead(k, kv_begin, j, n, ld);
      for (int h = 0; h < n_head; ++h) {
        const float* kh = kr + int64_t(h / group) * hd;
        if (rows == 4) {
          simd::dot_rows<simd::LoadF32, 4>(kh, ld, q + int64_t(h) * hd, hd, sc + h * n + j);
        } else {
          for (int64_t r = 0; r < rows; ++r)
            simd::dot_rows<simd::LoadF32, 1>(kh + r * ld, ld, q + int64_t(h) * hd, hd, sc + h * n + j + r);
        }
      }
    }
    // 2. Stable softmax numerators per head (normalisation folded into step 4).
    LOOPUS_OMP(omp for schedule(static))
    for (int h = 0; h < n_head; ++h) {
      float* s = sc + h * n;
      scale_to(s, scale, n, s);
      invz[h] = float(1.0 / exp_shift_sum(s, n, max_of(s, n)));
    }
    // 3. Partial P·V over this thread's share of the rows, into its own slice of `part`.
    LOOPUS_OMP(omp for schedule(static))
    for (int t = 0; t < nthr_max; ++t) std::fill(part + t * hsz, part + (t + 1) * hsz, 0.f);
    float* acc = part + thread_num() * hsz;
    LOOPUS_OMP(omp for schedule(static))
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t j = b * 4;
      const int64_t rows = std::min<int64_t>(4, n - j);
      const float* vr = v + (kv_begin + j) * ld;
      prefetch_rows_ahead(v, kv_begin, j, n, ld);
      for (int h = 0; h < n_head; ++h) {
        const float* vh = vr + int64_t(h / group) * hd;
        const float* p = sc + h * n + j;
        if (rows == 4) {
          axpy4(p, vh, vh + ld, vh + 2 * ld, vh + 3 * ld, hd, acc + h * hd);
        } else {
          for (int64_t r = 0; r < rows; ++r) axpy(p[r], vh + r * ld, hd, acc + h * hd);
        }
      }
    }
    // 4. out = Σ_threads partial / z.
    LOOPUS_OMP(omp for schedule(static))
    for (int h = 0; h < n_head; ++h) {
      float* o = out + int64_t(h) * hd;
      scale_to(part + h * hd, invz[h], hd, o);
      for (int t = 1; t < nthr_max; ++t) {
        const float* pt = part + t * hsz + h * hd;
        for (int i = 0; i < hd; ++i) o[i] += pt[i] * invz[h];
      }
    }
  }
}

/// Prefill attention for a block of nt consecutive query tokens (first at
/// position p0) and the `group` heads sharing one K/V head, as three dense
/// steps so Eigen's GEMM does the arithmetic: S = Q·Kᵀ over every row the
/// block's last token sees, causal mask + stable softmax per row, O = P·V.
/// q points at (token 0, first head of the group); tokens are q_ld floats
/// apart. Rows masked for earlier tokens of the block cost < nt/2 extra
/// columns per row.
inline void attend_block(const float* q, int64_t q_ld, int64_t nt, int group, const float* k, const float* v,
                         int64_t ld, int64_t kv_begin, int64_t p0, int hd, float scale, float* out) {
  const int64_t n = p0 + nt - kv_begin;  // columns seen by the last token
  const int64_t m = nt * group;          // rows: (token, head) pairs
  float* qs = scratch(kScratchAcc, size_t(m * hd));
  float* sc = scratch(kScratchScores, size_t(m * n));
  // Gather the block's query rows (a group's heads are adjacent within a token).
  for (int64_t t = 0; t < nt; ++t) std::memcpy(qs + t * group * hd, q + t * q_ld, size_t(group) * hd * sizeof(float));
  gemm<true>(m, n, hd, qs, hd, k + kv_begin * ld, ld, sc, n);  // S = Q·Kᵀ
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t visible = p0 + t + 1 - kv_begin;
    for (int g = 0; g < group; ++g) {
      float* row = sc + (t * group + g) * n;
      scale_to(row, scale, visible, row);
      const float inv_z = float(1.0 / exp_shift_sum(row, visible, max_of(row, visible)));
      scale_to(row, inv_z, visible, row);
      std::fill(row + visible, row + n, 0.f);
    }
  }
  // One GEMM for the whole block (reusing the query scratch), then scatter:
  // row (t, g) belongs at out + t * q_ld + g * hd.
  gemm<false>(m, hd, n, sc, n, v + kv_begin * ld, ld, qs, hd);  // O = P·V
  for (int64_t t = 0; t < nt; ++t) std::memcpy(out + t * q_ld, qs + t * group * hd, size_t(group) * hd * sizeof(float));
}

}  // namespace detail
}  // namespace loopus::cpu

namespace loopus {

/// The optimised CPU backend: same functions, shapes and semantics as
/// Ops<Reference> (see there), f32 accumulation, results within float rounding
/// of the reference. Kernels are OpenMP-parallel above small sizes, and none
/// allocates after warm-up (per-thread scratch grows monotonically, and Eigen's
/// GEMM gets its packing buffers from it too).
template <>
struct Ops<Cpu> {
  using S = Span<Cpu>;
  using CS = CSpan<Cpu>;

  /// Whether matmul(W, x, T, y) multiplies bf16(x) (x rounded to nearest-even bf16) rather than x:
  /// bf16 weights in prefill (T > kGemvMaxT) where the active kernel level has native bf16 pair
  /// products (AVX512_BF16), as llama.cpp does. The result is then within f32 rounding of
  /// Σ bf16(x)·w; everywhere else of Σ x·w, like Ops<Reference>. Quantized weights in prefill
  /// (T > kQuantGemvMaxT) at that level go the same way, x rounded to 8-bit blocks first and the
  /// weights rounded to bf16 too (see matmul).
  static bool rounds_x_to_bf16(const Weight& W, int64_t T) {
    return ((W.dtype == DType::kBF16 && T > cpu::Tuning::kGemvMaxT) ||
            (W.quantized() && cpu::detail::quant_prefill_bf16(W.dtype) && T > cpu::Tuning::kQuantGemvMaxT)) &&
           cpu::mat_kernels().gemm_bf16 != nullptr;
  }

  /// y[T, W.rows] = x[T, W.cols] · Wᵀ; W is f32, f16, bf16 or quantized. x and y must not overlap.
  /// Within f32 rounding of the reference, except that bf16 prefill may round x to bf16 first
  /// (rounds_x_to_bf16; LOOPUS_ISA=avx512 keeps x exact), and that a quantized W multiplies x
  /// rounded to 8-bit blocks, as llama.cpp does (ops/reference/quant.hpp is the oracle of that
  /// product): by the integer-dot GEMV up to Tuning::kQuantGemvMaxT tokens, by the f32 GEMM of
  /// widened panels and widened rounded activations beyond (the same products, summed in f32; the
  /// one difference is q4_1's minimum term, which the GEMV takes from the f16 sum llama.cpp stores),
  /// or, where rounds_x_to_bf16 says so, by the bf16 GEMM of both rounded once more to bf16.
  static void matmul(const Weight& W, const float* x, int64_t T, float* y) {
    using namespace cpu::detail;
    if (T <= 0 || W.rows <= 0) return;
    const bool gemv = T <= cpu::Tuning::kGemvMaxT;
    const cpu::MatKernels& kern = cpu::mat_kernels();
    switch (W.dtype) {
      case DType::kF32:
      case DType::kF16:
      case DType::kBF16:
        if (gemv) {
          const auto fn = W.dtype == DType::kF32   ? kern.gemv_f32
                          : W.dtype == DType::kF16 ? kern.gemv_f16
                                                   : kern.gemv_bf16;
          matmul_rows(fn, W.data, W.rows, W.cols, x, T, y);
        } else {
          matmul_gemm_panels(kern, W.dtype, W.data, W.rows, W.cols, x, T, y);
        }
        return;
      default:
        if (!W.quantized()) {
          LOOPUS_ASSERT(!"Ops<Cpu>::matmul: weight dtype must be f32, f16, bf16 or quantized");
          std::fill(y, y + T * W.rows, 0.f);
          return;
        }
        if (T <= cpu::Tuning::kQuantGemvMaxT) {
          matmul_rows_quant(kern, W.dtype, W.data, W.rows, W.cols, x, T, y);
        } else {
          matmul_gemm_panels(kern, W.dtype, W.data, W.rows, W.cols, x, T, y);
        }
        return;
    }
  }

  /// The products ps of one x[T, cols] (concept.hpp: matmul_shared), each y equal to what
  /// matmul(W, x, T, y) writes up to the thread split of rows (bit-equal for quantized W). Where
  /// every product takes a GEMV path (T ≤ Tuning::kGemvMaxT for float W, ≤ kQuantGemvMaxT for
  /// quantized; one activation rounding kind among the quantized ones) they run in one parallel
  /// region, x rounded to 8-bit blocks once; otherwise one matmul after another.
  static void matmul_shared(CS x, int64_t T, std::span<const SharedProduct<Cpu>> ps) {
    using namespace cpu::detail;
    constexpr size_t kMax = 4;
    if (T <= 0 || ps.empty()) return;
    const int64_t cols = ps[0].W->cols;
    bool together = ps.size() <= kMax;
    bool any_quant = false;
    quant::ActKind kind{};
    for (const SharedProduct<Cpu>& p : ps) {
      const Weight& W = *p.W;
      LOOPUS_ASSERT(x.size() >= T * W.cols && p.y.size() >= T * W.rows);
      if (W.cols != cols || W.rows <= 0) together = false;
      if (W.quantized()) {
        if (T > cpu::Tuning::kQuantGemvMaxT || (any_quant && quant::act_kind(W.dtype) != kind)) together = false;
        kind = quant::act_kind(W.dtype);
        any_quant = true;
      } else if (T > cpu::Tuning::kGemvMaxT ||
                 (W.dtype != DType::kF32 && W.dtype != DType::kF16 && W.dtype != DType::kBF16)) {
        together = false;
      }
    }
    if (!together) {
      for (const SharedProduct<Cpu>& p : ps) matmul(*p.W, x, T, p.y);
      return;
    }
    const cpu::MatKernels& kern = cpu::mat_kernels();
    quant::ActRow acts[cpu::Tuning::kQuantGemvMaxT];
    if (any_quant) round_act_rows(kern, kind, x.p_, T, cols, acts);
    RowProduct rp[kMax];
    for (size_t i = 0; i < ps.size(); ++i) {
      const Weight& W = *ps[i].W;
      rp[i].w = W.data;
      rp[i].rows = W.rows;
      rp[i].y = ps[i].y.p_;
      if (W.quantized()) {
        rp[i].qgemv = kern.gemv_q[quant::quant_index(W.dtype)];
      } else {
        rp[i].gemv = W.dtype == DType::kF32 ? kern.gemv_f32 : W.dtype == DType::kF16 ? kern.gemv_f16 : kern.gemv_bf16;
      }
    }
    run_row_products(rp, int(ps.size()), cols, x.p_, acts, T);
  }

  /// y[T, d] = x / rms(x) * g, per row; y may alias x.
  static void rmsnorm(const float* x, const Weight& g, int64_t T, int64_t d, float eps, float* y) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    using simd::VecF;
    constexpr int64_t kW = simd::kLanes;
    // Widen a non-f32 gain once per call into scratch (d floats).
    const float* gf = g.f32();
    if (g.dtype != DType::kF32) {
      float* tmp = scratch(kScratchRope, size_t(d));
      if (g.dtype == DType::kF16) simd::widen<simd::LoadF16>(static_cast<const uint16_t*>(g.data), d, tmp);
      else simd::widen<simd::LoadBF16>(static_cast<const uint16_t*>(g.data), d, tmp);
      gf = tmp;
    }
    [[maybe_unused]] const bool par = T > 1 && T * d >= cpu::Tuning::kParallelMinWork;
    LOOPUS_OMP(omp parallel for schedule(static) if (par))
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = x + t * d;
      float* yr = y + t * d;
      VecF s0 = VecF::zero(), s1 = VecF::zero();
      int64_t i = 0;
      for (; i + 2 * kW <= d; i += 2 * kW) {
        const VecF a = VecF::load(xr + i), b = VecF::load(xr + i + kW);
        s0 = simd::fma(a, a, s0);
        s1 = simd::fma(b, b, s1);
      }
      double ss = simd::hsum_double(s0 + s1);
      for (; i < d; ++i) ss += double(xr[i]) * xr[i];
      const float inv = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
      const VecF vinv = VecF::set1(inv);
      i = 0;
      for (; i + kW <= d; i += kW) (VecF::load(xr + i) * vinv * VecF::load(gf + i)).store(yr + i);
      for (; i < d; ++i) yr[i] = xr[i] * inv * gf[i];
    }
  }

  /// Rotates x[T, n_head, head_dim] in place; token t is at position pos0 + t.
  /// Angles are formed in double exactly as the reference does (no global
  /// tables, so theta and n_rot may change per call), then rotation is in f32.
  /// freq_factors / mscale: Phi-3 longrope, as Ops<Reference>::rope.
  static void rope(float* x, int64_t T, int n_head, int head_dim, int n_rot, int64_t pos0, float theta,
                   RopeStyle style, const float* freq_factors = nullptr, float mscale = 1.f) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    using simd::VecF;
    constexpr int kW = simd::kLanes;
    const int half = n_rot / 2;
    if (half <= 0 || T <= 0) return;
    [[maybe_unused]] const bool par = T > 1 && T * n_head * int64_t(n_rot) >= cpu::Tuning::kParallelMinWork;
    LOOPUS_OMP(omp parallel for schedule(static) if (par))
    for (int64_t t = 0; t < T; ++t) {
      float* cs = scratch(kScratchRope, size_t(2 * half));  // cos[half], sin[half]
      float* sn = cs + half;
      for (int i = 0; i < half; ++i) {
        double freq = std::pow(double(theta), -2.0 * i / n_rot);
        if (freq_factors) freq /= double(freq_factors[i]);
        const double ang = double(pos0 + t) * freq;
        cs[i] = float(std::cos(ang) * mscale);
        sn[i] = float(std::sin(ang) * mscale);
      }
      for (int h = 0; h < n_head; ++h) {
        float* v = x + (t * n_head + h) * int64_t(head_dim);
        if (style == RopeStyle::kHalf) {
          float* a = v;
          float* b = v + half;
          int i = 0;
          for (; i + kW <= half; i += kW) {
            const VecF x0 = VecF::load(a + i), x1 = VecF::load(b + i);
            const VecF c = VecF::load(cs + i), s = VecF::load(sn + i);
            simd::fnma(x1, s, x0 * c).store(a + i);
            simd::fma(x0, s, x1 * c).store(b + i);
          }
          for (; i < half; ++i) {
            const float x0 = a[i], x1 = b[i];
            a[i] = x0 * cs[i] - x1 * sn[i];
            b[i] = x0 * sn[i] + x1 * cs[i];
          }
        } else {
          // Pairs are adjacent; short loop, the compiler vectorises it well enough.
          for (int i = 0; i < half; ++i) {
            const float x0 = v[2 * i], x1 = v[2 * i + 1];
            v[2 * i] = x0 * cs[i] - x1 * sn[i];
            v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
          }
        }
      }
    }
  }

  /// Causal grouped-query attention, as Ops<Reference>::attention: q [T, n_head, hd],
  /// cache rows [n_ctx, n_kv, hd] holding the new rows; token t sees rows
  /// kv_begin .. pos0 + t; out [T, n_head * hd]. Requires kv_begin ≤ pos0.
  /// Optional hook (models call it when present): grow this thread's decode
  /// attention scratch for contexts up to n_ctx once, so decoding never
  /// allocates as the context fills.
  static void reserve_context(int64_t n_ctx, int n_head, int hd) {
    using namespace cpu::detail;
    scratch(kScratchScores, size_t(n_head) * size_t(std::max<int64_t>(n_ctx, 1)));
    scratch(kScratchAcc, size_t(max_threads()) * size_t(n_head) * size_t(hd));
  }

  static void attention(const float* q, const float* k, const float* v, int64_t T, int64_t pos0, int64_t kv_begin,
                        int n_head, int n_kv, int hd, float* out) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    LOOPUS_ASSERT(n_kv > 0 && n_head % n_kv == 0 && kv_begin >= 0 && kv_begin <= pos0);
    if (T <= 0 || pos0 < 0 || n_kv <= 0 || n_head % n_kv != 0) return;
    kv_begin = std::clamp<int64_t>(kv_begin, 0, pos0);  // asserts off: stay inside the written rows
    const int group = n_head / n_kv;
    const float scale = float(1.0 / std::sqrt(double(hd)));
    const int64_t ld = int64_t(n_kv) * hd;
    [[maybe_unused]] const int nthr = max_threads();
    if (T >= cpu::Tuning::kAttnBlockMinT) {
      // Prefill: one work item = a K/V head × a block of query tokens, done with GEMMs.
      const int64_t bt = cpu::Tuning::kAttnBlockT;
      const int64_t nblk = (T + bt - 1) / bt;
      const int64_t items = nblk * n_kv;
      LOOPUS_OMP(omp parallel for schedule(dynamic, 1) if (nthr > 1 && items > 1))
      for (int64_t it = 0; it < items; ++it) {
        // Last blocks first: they see the most rows, so the tail of the schedule is short.
        const int64_t blk = nblk - 1 - it / n_kv;
        const int kh = int(it % n_kv);
        const int64_t t0 = blk * bt, nt = std::min(bt, T - t0);
        const int64_t off = (t0 * n_head + int64_t(kh) * group) * hd;
        attend_block(q + off, int64_t(n_head) * hd, nt, group, k + int64_t(kh) * hd, v + int64_t(kh) * hd, ld,
                     kv_begin, pos0 + t0, hd, scale, out + off);
      }
      return;
    }
    // Decode / short chunks: token by token, each sweeping the cache in row order.
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * n_head * int64_t(hd);
      attend_token(q + off, k, v, kv_begin, pos0 + t + 1, n_head, n_kv, hd, scale, out + off);
    }
  }

  /// out[n] = silu(gate) * up
  static void swiglu(const float* gate, const float* up, int64_t n, float* out) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    using simd::VecF;
    constexpr int64_t kW = simd::kLanes;
    constexpr int64_t kChunk = 4096;
    const int64_t nchunk = (n + kChunk - 1) / kChunk;
    [[maybe_unused]] const bool par = nchunk > 1 && n >= cpu::Tuning::kParallelMinWork;
    LOOPUS_OMP(omp parallel for schedule(static) if (par))
    for (int64_t ch = 0; ch < nchunk; ++ch) {
      const int64_t lo = ch * kChunk, hi = std::min(n, lo + kChunk);
      const VecF one = VecF::set1(1.f), zero = VecF::zero();
      int64_t i = lo;
      for (; i + kW <= hi; i += kW) {
        const VecF g = VecF::load(gate + i);
        const VecF e = simd::exp(zero - g);
        (g * VecF::load(up + i) / (one + e)).store(out + i);
      }
      for (; i < hi; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
    }
  }

  /// y += x
  static void add(float* y, const float* x, int64_t n) {
    namespace simd = cpu::simd;
    using simd::VecF;
    constexpr int64_t kW = simd::kLanes;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) (VecF::load(y + i) + VecF::load(x + i)).store(y + i);
    for (; i < n; ++i) y[i] += x[i];
  }

  /// out[T, E.cols] = rows ids[t] of E (widened to f32). Ids must be in [0, E.rows)
  /// (checked by LOOPUS_ASSERT; with asserts off an out-of-range id gives a zero row).
  static void embed(const Weight& E, const int32_t* ids, int64_t T, float* out) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    for (int64_t t = 0; t < T; ++t) {
      float* o = out + t * E.cols;
      LOOPUS_ASSERT(ids[t] >= 0 && ids[t] < E.rows);
      if (ids[t] < 0 || ids[t] >= E.rows) {  // release builds: a zero row rather than a wild read
        std::fill(o, o + E.cols, 0.f);
        continue;
      }
      const int64_t off = int64_t(ids[t]) * E.cols;
      switch (E.dtype) {
        case DType::kF32: std::memcpy(o, E.f32() + off, size_t(E.cols) * sizeof(float)); break;
        case DType::kF16: simd::widen<simd::LoadF16>(static_cast<const uint16_t*>(E.data) + off, E.cols, o); break;
        case DType::kBF16: simd::widen<simd::LoadBF16>(static_cast<const uint16_t*>(E.data) + off, E.cols, o); break;
        default: dequantize_rows(E, ids[t], 1, o); break;
      }
    }
  }

  /// In-place softmax over n values (max subtracted first; sum kept in double).
  static void softmax(float* x, int64_t n) {
    using namespace cpu::detail;
    namespace simd = cpu::simd;
    if (n <= 0) return;
    const double z = exp_shift_sum(x, n, max_of(x, n));
    scale_to(x, float(1.0 / z), n, x);
  }

  // ---- the OpsBackend operations on Cpu storage (contracts in ops/concept.hpp) ----
  // The transformer kernels forward to the pointer kernels above; the loop's
  // elementwise maths and reductions keep exactly the arithmetic (f32 mixes,
  // double sums) the model used before it moved here, so outputs are unchanged.

  /// The host address of Cpu storage. Cpu memory is host memory, so code
  /// written for the Cpu backend alone (a custom gate's own kernel, tests) may
  /// read it directly; code meant for every backend uses the operations below.
  /// Ops<Reference> has no such function: its storage stays opaque.
  static float* data(S x) { return x.p_; }
  static const float* data(CS x) { return x.p_; }

  /// A span over the caller's host memory, for results the caller reads on the
  /// host (logits): a host backend writes them in place instead of staging.
  static S borrow_host(float* p, int64_t n) { return S(p, n); }
  static void upload(const float* src, S dst) { std::memcpy(dst.p_, src, size_t(dst.size()) * sizeof(float)); }
  static void download(CS src, float* dst) { std::memcpy(dst, src.p_, size_t(src.size()) * sizeof(float)); }
  static void copy(S dst, CS src) {
    LOOPUS_ASSERT(dst.size() == src.size());
    if (dst.p_ != src.p_) std::memcpy(dst.p_, src.p_, size_t(src.size()) * sizeof(float));
  }
  static void fill(S x, float v) { std::fill(x.p_, x.p_ + x.size(), v); }

  static void embed(const Weight& E, const int32_t* ids, int64_t T, S out) {
    LOOPUS_ASSERT(out.size() >= T * E.cols);
    embed(E, ids, T, out.p_);
  }
  static void matmul(const Weight& W, CS x, int64_t T, S y) {
    LOOPUS_ASSERT(x.size() >= T * W.cols && y.size() >= T * W.rows);
    matmul(W, x.p_, T, y.p_);
  }
  static void rmsnorm(CS x, const Weight& g, int64_t T, int64_t d, float eps, S y) {
    LOOPUS_ASSERT(x.size() >= T * d && y.size() >= T * d);
    rmsnorm(x.p_, g, T, d, eps, y.p_);
  }
  static void rope(S x, int64_t T, int n_head, int head_dim, int n_rot, int64_t pos0, float theta, RopeStyle style,
                   const float* freq_factors = nullptr, float mscale = 1.f) {
    LOOPUS_ASSERT(x.size() >= T * n_head * head_dim);
    rope(x.p_, T, n_head, head_dim, n_rot, pos0, theta, style, freq_factors, mscale);
  }
  static void attention(CS q, CS k, CS v, int64_t T, int64_t pos0, int64_t kv_begin, int n_head, int n_kv, int hd,
                        S out) {
    LOOPUS_ASSERT(k.size() >= (pos0 + T) * n_kv * hd && out.size() >= T * n_head * hd);
    attention(q.p_, k.p_, v.p_, T, pos0, kv_begin, n_head, n_kv, hd, out.p_);
  }
  static void swiglu(CS gate, CS up, S out) {
    LOOPUS_ASSERT(gate.size() == out.size() && up.size() == out.size());
    swiglu(gate.p_, up.p_, out.size(), out.p_);
  }
  static void add(S y, CS x) {
    LOOPUS_ASSERT(y.size() == x.size());
    add(y.p_, x.p_, y.size());
  }
  static void softmax(S x) { softmax(x.p_, x.size()); }

  static void sub(CS a, CS b, S out) {
    LOOPUS_ASSERT(a.size() == out.size() && b.size() == out.size());
    const float* pa = a.p_;
    const float* pb = b.p_;
    float* o = out.p_;
    for (int64_t i = 0; i < out.size(); ++i) o[i] = pa[i] - pb[i];
  }
  static void mix(S h, CS p, float alpha) {
    LOOPUS_ASSERT(h.size() == p.size());
    const float a = alpha, b = 1.f - alpha;
    float* hv = h.p_;
    const float* pv = p.p_;
    for (int64_t i = 0; i < h.size(); ++i) hv[i] = a * pv[i] + b * hv[i];
  }
  static float selective_mix(CS z, const Weight& bias, const Weight& A, CS p, S h, int64_t T, int64_t d) {
    LOOPUS_ASSERT(z.size() >= T * d && p.size() >= T * d && h.size() >= T * d);
    LOOPUS_ASSERT(bias.dtype == DType::kF32 && A.dtype == DType::kF32);
    const float* zv = z.p_;
    const float* pv = p.p_;
    const float* bv = bias.f32();
    const float* av = A.f32();
    float* hv = h.p_;
    double asum = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const float zz = zv[t * d + c] + bv[c];
        const float delta = zz > 20.f ? zz : std::log1p(std::exp(zz));  // torch softplus, threshold 20
        const float a = std::exp(-delta * av[c]);
        float& x = hv[t * d + c];
        x = a * pv[t * d + c] + (1.f - a) * x;
        asum += a;
      }
    return T * d > 0 ? float(asum / double(T * d)) : 0.f;
  }
  static float layernorm_dot(CS xs, const Weight& ln_w, const Weight& ln_b, const Weight& w, float bias, float eps) {
    LOOPUS_ASSERT(ln_w.dtype == DType::kF32 && ln_b.dtype == DType::kF32 && w.dtype == DType::kF32);
    const float* x = xs.p_;
    const float* gw = ln_w.f32();
    const float* gb = ln_b.f32();
    const float* wv = w.f32();
    const int64_t d = xs.size();
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= double(d);
    for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= double(d);  // biased, as torch LayerNorm
    const double inv = 1.0 / std::sqrt(var + double(eps));
    double s = bias;
    for (int64_t i = 0; i < d; ++i) s += double(wv[i]) * ((x[i] - mean) * inv * gw[i] + gb[i]);
    return float(s);
  }
  static double distance(CS a, CS b) {
    LOOPUS_ASSERT(a.size() == b.size());
    double ss = 0;
    for (int64_t i = 0; i < a.size(); ++i) {
      const float df = a.p_[i] - b.p_[i];
      ss += double(df) * df;
    }
    return std::sqrt(ss);
  }
  static void log_softmax(S xs) {
    float* x = xs.p_;
    const int64_t n = xs.size();
    double m = -INFINITY, z = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
    for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - m);
    const double lz = m + std::log(z);
    for (int64_t i = 0; i < n; ++i) x[i] = float(double(x[i]) - lz);
  }
  static double kl_div(CS logp, CS logq) {
    LOOPUS_ASSERT(logp.size() == logq.size());
    const float* p = logp.p_;
    const float* q = logq.p_;
    double kl = 0;
    for (int64_t i = 0; i < logp.size(); ++i) kl += std::exp(double(p[i])) * (double(p[i]) - q[i]);
    return kl;
  }
  static int64_t argmax(CS x) {
    if (x.empty()) return -1;
    return int64_t(std::max_element(x.p_, x.p_ + x.size()) - x.p_);
  }
};

static_assert(OpsBackend<Cpu>, "Ops<Cpu> must provide every operation of ops/concept.hpp");

}  // namespace loopus
