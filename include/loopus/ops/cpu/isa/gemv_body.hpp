// The weight-streaming matmul (GEMV) and widening kernels, written once against VecF.
// SPDX-License-Identifier: MIT
// No include guard: included into each instruction set's namespace after its VecF (ops/cpu/simd.hpp
// for the build's own flags, ops/cpu/isa_kernels.hpp once per x86 level). The includer defines the
// tuning of its level (docs/performance.md, "Kernels per instruction set"):
//   kPrefetchF32          whether the four-row f32 GEMV software-prefetches the next block;
//   kGemvStream           whether one-token GEMVs read W as one sequential stream, row by row;
//   kStreamPrefetchBytes  how far ahead that stream software-prefetches.

/// Hint that the cache line at p will be read soon (into L2; no fault if invalid).
inline void prefetch_l2(const char* p) { __builtin_prefetch(p, 0, 2); }

// Weight element loaders: a vector of kLanes widened values, or one value.
// kPrefetch: whether the GEMV software-prefetches the next block of rows.
// Measured (AVX2, 1 thread, cold weights): +35-70% for f16/bf16, whose
// 16-byte loads leave the hardware prefetcher behind on short rows; -5-25%
// for f32, where the hardware already keeps up and the hints only cost. On
// AVX-512 (AMD EPYC, Zen 4) the f32 GEMV gains from prefetching too
// (docs/performance.md), hence kPrefetchF32 per instruction set.
// pair() loads 2·kLanes weights as two vectors; kPairOrder says in which order: false, the natural
// one (p[0..W), p[W..2W)); true, even positions then odd ones, which bf16 gets from one load
// (VecF::load_bf16_pairs) where widening in order costs a shuffle per vector. The GEMV then
// multiplies with x permuted the same way (pair_order below).
struct LoadF32 {
  static constexpr bool kPrefetch = kPrefetchF32;
  static constexpr bool kPairOrder = false;
  using T = float;
  static VecF vec(const float* p) { return VecF::load(p); }
  static void pair(const float* p, VecF& a, VecF& b) { a = vec(p), b = vec(p + kLanes); }
  static float one(float v) { return v; }
};
struct LoadF16 {
  static constexpr bool kPrefetch = true;
  static constexpr bool kPairOrder = false;
  using T = uint16_t;
  static VecF vec(const uint16_t* p) { return VecF::load_f16(p); }
  static void pair(const uint16_t* p, VecF& a, VecF& b) { a = vec(p), b = vec(p + kLanes); }
  static float one(uint16_t v) { return f16_to_f32(v); }
};
struct LoadBF16 {
  static constexpr bool kPrefetch = true;
  static constexpr bool kPairOrder = true;
  using T = uint16_t;
  static VecF vec(const uint16_t* p) { return VecF::load_bf16(p); }
  static void pair(const uint16_t* p, VecF& a, VecF& b) { VecF::load_bf16_pairs(p, a, b); }
  static float one(uint16_t v) { return bf16_to_f32(v); }
};

/// dst = x[0, n) with each whole block of 2·kLanes values reordered even positions first, then odd
/// ones (the order of LoadBF16::pair); the last n mod 2·kLanes values stay in place.
inline void pair_order(const float* x, int64_t n, float* dst) {
  constexpr int64_t W = kLanes;
  int64_t c = 0;
  for (; c + 2 * W <= n; c += 2 * W)
    for (int64_t i = 0; i < W; ++i) {
      dst[c + i] = x[c + 2 * i];
      dst[c + W + i] = x[c + 2 * i + 1];
    }
  for (; c < n; ++c) dst[c] = x[c];
}

/// out[r] = Σ_c w[r·ld + c] · x[c] for R rows at once, f32 accumulation (x in L's pair order).
/// Several rows share each load of x, and two accumulators per row hide FMA latency.
/// With `pf` set, each step also prefetches (into L2) as many bytes from pf
/// onwards as it consumes from w: the GEMV passes the next block of rows, which
/// is contiguous, so the prefetch stream runs exactly one block ahead (see
/// L::kPrefetch for when that pays).
template <class L, int R>
inline void dot_rows(const typename L::T* w, int64_t ld, const float* x, int64_t n, float* out,
                     const char* pf = nullptr) {
  constexpr int64_t W = kLanes;
  constexpr int64_t kStepBytes = R * 2 * W * int64_t(sizeof(typename L::T));
  VecF a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = VecF::zero();
  int64_t c = 0;
  for (; c + 2 * W <= n; c += 2 * W) {
    if (pf) {
      for (int64_t b = 0; b < kStepBytes; b += 64) prefetch_l2(pf + b);
      pf += kStepBytes;
    }
    const VecF x0 = VecF::load(x + c), x1 = VecF::load(x + c + W);
    for (int r = 0; r < R; ++r) {
      VecF w0, w1;
      L::pair(w + r * ld + c, w0, w1);
      a0[r] = fma(w0, x0, a0[r]);
      a1[r] = fma(w1, x1, a1[r]);
    }
  }
  if (c + W <= n) {
    const VecF x0 = VecF::load(x + c);
    for (int r = 0; r < R; ++r) a0[r] = fma(L::vec(w + r * ld + c), x0, a0[r]);
    c += W;
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(a0[r] + a1[r]);
    for (int64_t k = c; k < n; ++k) s += L::one(w[r * ld + k]) * x[k];
    out[r] = s;
  }
}

/// Rows [r0, r1) of y[T, ldy] = x[T, cols] · Wᵀ, streaming those rows of W once: each block of
/// four rows is multiplied with every token while it is still in L1/L2 (the next block is
/// prefetched on the first token where L::kPrefetch says so), or, for one token where
/// kGemvStream says so, row after row. Memory-bound for small T, so the goals are full-width
/// loads and an unbroken stream of weight bytes.
template <class L>
inline void gemv_rows(const typename L::T* w, int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t T, float* y,
                      int64_t ldy) {
  constexpr int64_t kRows = 4;
  float out[kRows];
  if constexpr (L::kPairOrder) {  // this thread's copy of x in pair order (grows, never shrinks)
    thread_local std::vector<float> xp;
    if (int64_t(xp.size()) < T * cols) xp.resize(size_t(T * cols));
    for (int64_t t = 0; t < T; ++t) pair_order(x + t * cols, cols, xp.data() + t * cols);
    x = xp.data();
  }
  if (T == 1 && kGemvStream) {
    // One token: row after row, a single sequential stream (the hardware prefetcher follows it
    // across rows; four interleaved row streams restart it every row), plus a software prefetch
    // kStreamPrefetchBytes ahead, which the short rows of small models need.
    for (int64_t r = r0; r < r1; ++r) {
      const char* pf = r + 1 < r1 ? reinterpret_cast<const char*>(w + r * cols) + kStreamPrefetchBytes : nullptr;
      dot_rows<L, 1>(w + r * cols, cols, x, cols, y + r, pf);
    }
    return;
  }
  for (int64_t r = r0; r < r1; r += kRows) {
    const int64_t nr = std::min<int64_t>(kRows, r1 - r);
    const typename L::T* wr = w + r * cols;
    for (int64_t t = 0; t < T; ++t) {
      if (nr == kRows) {
        const char* pf = L::kPrefetch && t == 0 && r + 2 * kRows <= r1
                             ? reinterpret_cast<const char*>(wr + kRows * cols)
                             : nullptr;
        dot_rows<L, kRows>(wr, cols, x + t * cols, cols, out, pf);
      } else {
        for (int64_t i = 0; i < nr; ++i) dot_rows<L, 1>(wr + i * cols, cols, x + t * cols, cols, out + i);
      }
      for (int64_t i = 0; i < nr; ++i) y[t * ldy + r + i] = out[i];
    }
  }
}

/// Widens n elements to f32.
template <class L>
inline void widen(const typename L::T* src, int64_t n, float* dst) {
  constexpr int64_t W = kLanes;
  int64_t i = 0;
  for (; i + W <= n; i += W) L::vec(src + i).store(dst + i);
  for (; i < n; ++i) dst[i] = L::one(src[i]);
}

// Entry points with plain signatures, for the run-time kernel table (ops/cpu/isa_kernels.hpp).
inline void gemv_f32(const void* w, int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t T, float* y,
                     int64_t ldy) {
  gemv_rows<LoadF32>(static_cast<const float*>(w), r0, r1, cols, x, T, y, ldy);
}
inline void gemv_f16(const void* w, int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t T, float* y,
                     int64_t ldy) {
  gemv_rows<LoadF16>(static_cast<const uint16_t*>(w), r0, r1, cols, x, T, y, ldy);
}
inline void gemv_bf16(const void* w, int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t T, float* y,
                      int64_t ldy) {
  gemv_rows<LoadBF16>(static_cast<const uint16_t*>(w), r0, r1, cols, x, T, y, ldy);
}
inline void widen_f16(const uint16_t* src, int64_t n, float* dst) { widen<LoadF16>(src, n, dst); }
inline void widen_bf16(const uint16_t* src, int64_t n, float* dst) { widen<LoadBF16>(src, n, dst); }
