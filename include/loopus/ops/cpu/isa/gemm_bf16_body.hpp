// Prefill with bf16 weights on AVX512_BF16: bf16 × bf16 pair products, f32 accumulation (VDPBF16PS).
// SPDX-License-Identifier: MIT
// No include guard: included once, into the AVX512_BF16 namespace of ops/cpu/isa_kernels.hpp.
//
// y[T, rows] = bf16(x)[T, K] · Wᵀ with W stored [rows, K] in bf16. The activations are rounded to
// bf16 once per call (round to nearest even, as llama.cpp does for its bf16 matmuls), so the result
// is Σ bf16(x)·w accumulated in f32: within f32 rounding of that sum, not of Σ x·w (the f32
// widening path, LOOPUS_ISA=avx512, keeps x exact). Each 512-bit VDPBF16PS multiplies 16 pairs
// along K and adds them to 16 f32 lanes: twice the multiply-adds of an f32 FMA, from half the bytes.
//
// The kernel works in dot-product form, like llama.cpp's tinyBLAS: a tile of kTileM tokens × 8 weight
// rows keeps 24 accumulators, each holding 16 partial sums of one (token, row) pair; W is used
// as stored (no packing) and x's rows are zero-padded to a multiple of 32 values. At the end of K
// the 8 accumulators of a token are summed across lanes together (one 8-float store).

inline constexpr int kTileM = 3;  // tokens per tile
inline constexpr int kTileN = 8;  // weight rows per tile

/// dst[0, n_pad) = bf16(x[0, n)) then zeros; round to nearest even (denormals flush to zero).
inline void to_bf16(const float* x, int64_t n, uint16_t* dst, int64_t n_pad) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(dst + i, (__m512i)v);
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16(x[i]);
  for (; i < n_pad; ++i) dst[i] = 0;
}

/// The 8 lane-sums of a[0..8), in order.
inline __m256 sum8(const __m512* a) {
  __m256 h[8];
  for (int j = 0; j < 8; ++j)
    h[j] = _mm256_add_ps(_mm512_castps512_ps256(a[j]),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[j]), 1)));
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(h[4], h[5]), _mm256_hadd_ps(h[6], h[7]));
  // t0 = [s0..s3 (low 128), s0..s3 (high 128)] partial sums; likewise t1 for s4..s7.
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

/// y[i, 0..nr) = Σ_k xb[i, k] · w_j[k] for i < M tokens (ldx apart) and nr ≤ 8 weight rows
/// (ldw apart; rows past nr repeat the last one and are not stored).
template <int M>
inline void tile_bf16(const uint16_t* xb, int64_t ldx, const uint16_t* w, int64_t ldw, int nr, int64_t K, float* y,
                      int64_t ldy) {
  const uint16_t* wr[kTileN];
  for (int j = 0; j < kTileN; ++j) wr[j] = w + std::min(j, nr - 1) * ldw;
  __m512 acc[M][kTileN];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < kTileN; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh a[M];
    for (int i = 0; i < M; ++i) a[i] = (__m512bh)_mm512_loadu_si512(xb + i * ldx + k);
    for (int j = 0; j < kTileN; ++j) {
      const __m512bh b = (__m512bh)_mm512_loadu_si512(wr[j] + k);
      for (int i = 0; i < M; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a[i], b);
    }
  }
  if (k < K) {  // the last K % 32 values; x is zero-padded, W is read under a mask
    const auto m = __mmask32((1u << unsigned(K - k)) - 1u);
    __m512bh a[M];
    for (int i = 0; i < M; ++i) a[i] = (__m512bh)_mm512_loadu_si512(xb + i * ldx + k);
    for (int j = 0; j < kTileN; ++j) {
      const __m512bh b = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[j] + k);
      for (int i = 0; i < M; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a[i], b);
    }
  }
  const auto store = __mmask8((1u << unsigned(nr)) - 1u);
  for (int i = 0; i < M; ++i) _mm256_mask_storeu_ps(y + i * ldy, store, sum8(acc[i]));
}

/// Rows [r0, r1) of y[T, ldy] = xb[T, ldx] · Wᵀ, W [rows, K] bf16; xb from to_bf16 (ldx a multiple
/// of 32, zero-padded). Each group of 8 rows (24–64 KiB for K of 1.5–4 Ki, in L1/L2) meets
/// every token, kTileM tokens at a time.
inline void gemm_bf16(const uint16_t* xb, int64_t ldx, int64_t T, const void* wv, int64_t r0, int64_t r1, int64_t K,
                      float* y, int64_t ldy) {
  const auto* w = static_cast<const uint16_t*>(wv);
  for (int64_t r = r0; r < r1; r += kTileN) {
    const int nr = int(std::min<int64_t>(kTileN, r1 - r));
    const uint16_t* wr = w + r * K;
    int64_t t = 0;
    for (; t + kTileM <= T; t += kTileM) tile_bf16<kTileM>(xb + t * ldx, ldx, wr, K, nr, K, y + t * ldy + r, ldy);
    if (T - t == 2) tile_bf16<2>(xb + t * ldx, ldx, wr, K, nr, K, y + t * ldy + r, ldy);
    if (T - t == 1) tile_bf16<1>(xb + t * ldx, ldx, wr, K, nr, K, y + t * ldy + r, ldy);
  }
}

/// iters × 12 chains of VDPBF16PS (bench_ops' bf16 peak); 32 multiply-adds per chain step.
inline float dpbf16_chains(int64_t iters) {
  constexpr int kChains = 12;
  __m512 a[kChains];
  for (int c = 0; c < kChains; ++c) a[c] = _mm512_set1_ps(float(c) * 1e-3f);
  const __m512bh m = (__m512bh)_mm512_set1_epi16(short(0x3f80)), b = (__m512bh)_mm512_set1_epi16(short(0x3380));
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) a[c] = _mm512_dpbf16_ps(a[c], m, c % 2 ? b : m);
  __m512 s = _mm512_setzero_ps();
  for (int c = 0; c < kChains; ++c) s = _mm512_add_ps(s, a[c]);
  return _mm512_reduce_add_ps(s);
}
