// The quantized-weight GEMV kernels (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K against 8-bit activations).
// SPDX-License-Identifier: MIT
// No include guard: included into each x86 level's namespace (ops/cpu/isa_kernels.hpp) after
//   hsum8(__m256)                      (isa/x86_reduce.hpp), and
//   dot_u8s8(__m256i u, __m256i s)     8 int32 lanes, each the sum of four u8·s8 products: one
//                                      vpdpbusd where the level has AVX512_VNNI, else
//                                      vpmaddubsw + vpmaddwd (no saturation: u ≤ 128 and
//                                      |s| ≤ 127 keep each pair sum below 2^15).
// The arithmetic is ops/reference/quant.hpp's (llama.cpp's), block for block: an exact integer dot
// per block, converted to f32 and multiplied by the f32 product of the two scales. Only the order
// of the f32 additions differs. 256-bit vectors throughout: one 32-value block per vector; on
// Zen 4, which executes 512-bit integer operations as two 256-bit halves, wider vectors gain
// nothing here, and the kernels stay shared with AVX2.

namespace qk {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t rd16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
/// 32 4-bit values of a 16-byte run: low nibbles (values 0-15), then high nibbles (16-31).
inline __m256i nibbles(const unsigned char* q) {
  const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  return _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}
inline void prefetch(const unsigned char* p) { __builtin_prefetch(p, 0, 2); }

/// The f16 words at byte offsets kOff, kOff + kStride, ..., kOff + 7·kStride of p (one field of 8
/// consecutive blocks), as f32. Eight word loads and one vcvtph2ps: a vpgatherdd costs more here.
template <int kStride, int kOff>
inline __m256 load_f16x8(const unsigned char* p) {
  const __m128i h = _mm_setr_epi16(short(rd16(p + kOff)), short(rd16(p + kStride + kOff)),
                                   short(rd16(p + 2 * kStride + kOff)), short(rd16(p + 3 * kStride + kOff)),
                                   short(rd16(p + 4 * kStride + kOff)), short(rd16(p + 5 * kStride + kOff)),
                                   short(rd16(p + 6 * kStride + kOff)), short(rd16(p + 7 * kStride + kOff)));
  return _mm256_cvtph_ps(h);
}

/// The dots of the 32-value block types: per block one integer dot (`isum(blk, b, s)`, eight int32
/// lanes) converted and multiplied by the block's scale product f16(d_w)·d_x, into four
/// accumulators. The eight scale products of eight blocks are computed as one vector and stored;
/// each block broadcasts its own from memory (a load, no shuffle). `extra(blk, b, e)` adds the
/// blocks' scalar terms (q4_1's minimum times the activations' sum) as a vector: eight blocks at a
/// time (blk the first of them), or one tail block in lane 0 (blk null). Measured on Zen 4 (the
/// level's gemv_q8_0 timed on L2-resident random rows, one thread), this runs at twice the rate of
/// the former form (a vpgatherdd of the scales, then a vpermps per block to splat its lane).
/// (Results go through reference parameters: GCC compiles the lambdas without the level's target
/// attribute's ABI, and -Wpsabi objects to vector return values there.)
template <int kBlock, class ISum, class Extra>
inline float dot_blocks32(const unsigned char* w, const quant::ActRow& a, int64_t nb, ISum isum, Extra extra) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  __m256 ex = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const unsigned char* blk = w + b * kBlock;
    __m256 e;
    extra(blk, b, e);
    ex = _mm256_add_ps(ex, e);
    alignas(32) float dd[8];
    _mm256_store_ps(dd, _mm256_mul_ps(load_f16x8<kBlock, 0>(blk), _mm256_loadu_ps(a.d + b)));
    for (int j = 0; j < 8; j += 4) {
      __m256i s0, s1, s2, s3;
      isum(blk + j * kBlock, b + j, s0);
      isum(blk + (j + 1) * kBlock, b + j + 1, s1);
      isum(blk + (j + 2) * kBlock, b + j + 2, s2);
      isum(blk + (j + 3) * kBlock, b + j + 3, s3);
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(dd + j), _mm256_cvtepi32_ps(s0), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(dd + j + 1), _mm256_cvtepi32_ps(s1), acc1);
      acc2 = _mm256_fmadd_ps(_mm256_broadcast_ss(dd + j + 2), _mm256_cvtepi32_ps(s2), acc2);
      acc3 = _mm256_fmadd_ps(_mm256_broadcast_ss(dd + j + 3), _mm256_cvtepi32_ps(s3), acc3);
    }
  }
  acc0 = _mm256_add_ps(acc0, acc2);
  acc1 = _mm256_add_ps(acc1, acc3);
  for (const unsigned char* blk = w + b * kBlock; b < nb; ++b, blk += kBlock) {  // the last < 8 blocks
    __m256i s;
    isum(blk, b, s);
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(rd16(blk)) * a.d[b]), _mm256_cvtepi32_ps(s), acc0);
    __m256 e;
    extra(nullptr, b, e);
    ex = _mm256_add_ps(ex, e);
  }
  return hsum8(_mm256_add_ps(acc0, acc1)) + hsum8(ex);
}

inline float dot_q8_0(const unsigned char* w, const quant::ActRow& a, int64_t n) {
  return dot_blocks32<34>(
      w, a, n / 32,
      [&](const unsigned char* blk, int64_t b, __m256i& s) {
        const __m256i q = load256(blk + 2), x = load256(a.qs + 32 * b);
        s = dot_u8s8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
      },
      [](const unsigned char*, int64_t, __m256& e) { e = _mm256_setzero_ps(); });
}
inline float dot_q4_0(const unsigned char* w, const quant::ActRow& a, int64_t n) {
  // The -8 offset of the 4-bit values, Σ(q-8)x = Σqx - 8Σx, leaves the integer sum exact: 8Σx is
  // subtracted in lane 0 before the conversion.
  return dot_blocks32<18>(
      w, a, n / 32,
      [&](const unsigned char* blk, int64_t b, __m256i& s) {
        s = _mm256_sub_epi32(dot_u8s8(nibbles(blk + 2), load256(a.qs + 32 * b)),
                             _mm256_zextsi128_si256(_mm_cvtsi32_si128(8 * a.isum[b])));
      },
      [](const unsigned char*, int64_t, __m256& e) { e = _mm256_setzero_ps(); });
}
inline float dot_q4_1(const unsigned char* w, const quant::ActRow& a, int64_t n) {
  return dot_blocks32<20>(
      w, a, n / 32,
      [&](const unsigned char* blk, int64_t b, __m256i& s) { s = dot_u8s8(nibbles(blk + 4), load256(a.qs + 32 * b)); },
      [&](const unsigned char* blk, int64_t b, __m256& e) {
        if (!blk) {  // one block (the tail): its minimum times s, in lane 0
          e = _mm256_setr_ps(f16(rd16(w + b * 20 + 2)) * a.s[b], 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f);
          return;
        }
        e = _mm256_mul_ps(load_f16x8<20, 2>(blk), _mm256_loadu_ps(a.s + b));
      });
}

/// The 8 scales (bytes 0-7) and 8 mins (bytes 8-15) of a q4_K / q5_K super-block, unpacked from
/// their 12 bytes with word-wide masks (the same bits q4k_scale_min picks one at a time), built in
/// a register: four 32-bit stores read back as one 128-bit load would stall store forwarding.
inline void scales_mins_q45k(const unsigned char* s12, __m128i& out) {
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  constexpr uint32_t k6 = 0x3f3f3f3fu, k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
  const uint32_t sc03 = u[0] & k6, m03 = u[1] & k6;
  const uint32_t sc47 = (u[2] & k4) | (((u[0] >> 6) & k2) << 4);
  const uint32_t m47 = ((u[2] >> 4) & k4) | (((u[1] >> 6) & k2) << 4);
  out = _mm_setr_epi32(int(sc03), int(sc47), int(m03), int(m47));
}

/// Byte-shuffle mask that copies the int16 at index i of a 128-bit lane into all 8 positions.
inline __m256i word_splat_mask(int i) { return _mm256_set1_epi16(int16_t((2 * i) | ((2 * i + 1) << 8))); }

/// q4_K / q5_K (qh null for q4_K) against q8_K. Per super-block: the 8 scales and 8 mins unpacked
/// with word masks and widened to int16 together; each sub-block's 32 products summed in pairs
/// (vpmaddubsw) and weighted by its scale (vpmaddwd against the scale splatted by a byte shuffle);
/// the mins met with the 8 sums of 32 activations in one vpmaddwd, kept as a vector until the end.
template <bool kQ5>
inline float dot_q45_k(const unsigned char* w, const quant::ActRow& a, int64_t n) {
  constexpr int64_t kBytes = kQ5 ? 176 : 144;
  const __m256i lo4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  __m128 accm = _mm_setzero_ps();
  for (int64_t b = 0; b < n / 256; ++b, w += kBytes) {
    __m128i sm;
    scales_mins_q45k(w + 4, sm);
    const __m256i ms = _mm256_cvtepu8_epi16(sm);
    const __m256i bs = load256(a.bsums + 16 * b);
    const __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    const __m128i pm = _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), s32);
    const float dx = a.d[b];
    accm = _mm_fmadd_ps(_mm_set1_ps(f16(rd16(w + 2)) * dx), _mm_cvtepi32_ps(pm), accm);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
    const unsigned char* qs = w + (kQ5 ? 48 : 16);
    const int8_t* x = a.qs + 256 * b;
    const __m256i hb = kQ5 ? load256(w + 16) : _mm256_setzero_si256();
    __m256i sum = _mm256_setzero_si256(), sum1 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const __m256i v = load256(qs + 32 * g);
      __m256i q0 = _mm256_and_si256(v, lo4);
      __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
      if constexpr (kQ5) {  // the fifth bits: bit 2g of qh[l] for the low nibbles, 2g+1 for the high
        q0 = _mm256_add_epi8(q0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * g), one), 4));
        q1 = _mm256_add_epi8(q1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * g + 1), one), 4));
      }
      const __m256i p0 = _mm256_maddubs_epi16(q0, load256(x + 64 * g));
      const __m256i p1 = _mm256_maddubs_epi16(q1, load256(x + 64 * g + 32));
      sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(scales, word_splat_mask(2 * g))));
      sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(scales, word_splat_mask(2 * g + 1))));
    }
    sum = _mm256_add_epi32(sum, sum1);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(rd16(w)) * dx), _mm256_cvtepi32_ps(sum), acc);
  }
  const __m128 m = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
  return hsum8(acc) - _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
}
inline float dot_q6_k(const unsigned char* w, const quant::ActRow& a, int64_t n) {
  const __m256i lo4 = _mm256_set1_epi8(0x0F), lo2 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 256; ++b, w += 210) {
    const unsigned char* ql = w;
    const unsigned char* qh = w + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
    const int8_t* x = a.qs + 256 * b;
    // Σ_g sc_g·bsum_g: the -32 offset of the 6-bit values, 16 products in one vpmaddwd.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    const __m256i offs = _mm256_madd_epi16(sc16, load256(a.bsums + 16 * b));
    // The 16 int16 scales in both 128-bit lanes; a byte shuffle splats scale g into lanes 0-7
    // and g+1 into lanes 8-15 (the low lane's mask picks from its copy, the high lane's from its).
    __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i sc2 = _mm256_broadcastsi128_si256(h == 0 ? _mm256_castsi256_si128(sc16)
                                                             : _mm256_extracti128_si256(sc16, 1));
      const __m256i pair_mask[4] = {
          _mm256_set_m128i(_mm256_castsi256_si128(word_splat_mask(1)), _mm256_castsi256_si128(word_splat_mask(0))),
          _mm256_set_m128i(_mm256_castsi256_si128(word_splat_mask(3)), _mm256_castsi256_si128(word_splat_mask(2))),
          _mm256_set_m128i(_mm256_castsi256_si128(word_splat_mask(5)), _mm256_castsi256_si128(word_splat_mask(4))),
          _mm256_set_m128i(_mm256_castsi256_si128(word_splat_mask(7)), _mm256_castsi256_si128(word_splat_mask(6)))};
      const __m256i l0 = load256(ql + 64 * h), l1 = load256(ql + 64 * h + 32), hb = load256(qh + 32 * h);
      const __m256i q[4] = {_mm256_or_si256(_mm256_and_si256(l0, lo4), _mm256_slli_epi16(_mm256_and_si256(hb, lo2), 4)),
                            _mm256_or_si256(_mm256_and_si256(l1, lo4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), lo2), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), lo2), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), lo2), 4))};
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m256i scv = _mm256_shuffle_epi8(sc2, pair_mask[k]);
        const __m256i p = _mm256_maddubs_epi16(q[k], load256(x + 128 * h + 32 * k));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, scv));
      }
    }
    sum = _mm256_sub_epi32(sum, _mm256_slli_epi32(offs, 5));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(rd16(w + 208)) * a.d[b]), _mm256_cvtepi32_ps(sum), acc);
  }
  return hsum8(acc);
}

/// Rows [r0, r1) of y[T, ldy] against T rounded activation rows: row after row (one sequential
/// stream of weight bytes, prefetched kPrefetchBytes ahead), each row dotted with every token while
/// it sits in L1.
template <float (*kDot)(const unsigned char*, const quant::ActRow&, int64_t), int64_t kNum, int64_t kDen>
inline void gemv_q(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* acts, int64_t T, float* y,
                   int64_t ldy) {
  constexpr int64_t kPrefetchBytes = 768;
  const int64_t rb = cols / kDen * kNum;  // row bytes: cols/block values · bytes per block
  const auto* base = static_cast<const unsigned char*>(w);
  const unsigned char* end = base + r1 * rb;
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* row = base + r * rb;
    for (const unsigned char* p = row + kPrefetchBytes; p < row + rb + kPrefetchBytes && p < end; p += 64) prefetch(p);
    for (int64_t t = 0; t < T; ++t) y[t * ldy + r] = kDot(row, acts[t], cols);
  }
}

/// The int32 lanes of a, b, c, d (32 values in order) saturated to int8, in order.
inline __m256i pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

/// quant::quantize_act, vectorised, with the same result bit for bit (tests/ops/test_quant_kernels.cpp):
/// the block maxima are exact, the per-block scale arithmetic is the scalar code's, and vcvtps2dq
/// rounds half to even as nearbyint and nearest_int do (the default MXCSR rounding).
inline void quantize_act(quant::ActKind kind, const float* x, int64_t n, const quant::ActRowMut& a) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  if (kind == quant::ActKind::kQ8_K) {
    const __m256i max_q = _mm256_set1_epi32(127);
    for (int64_t b = 0; b < n / 256; ++b) {
      const float* xb = x + 256 * b;
      __m256 m = _mm256_setzero_ps();  // max |x|; a NaN lane never wins, as in the scalar loop
      for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + j)), m);
      const float amax = hmax8(m);
      int8_t* q = a.qs + 256 * b;
      if (amax == 0.f) {
        a.d[b] = 0.f;
        std::memset(q, 0, 256);
        std::memset(a.bsums + 16 * b, 0, 16 * sizeof(int16_t));
        continue;
      }
      // The value of largest magnitude, the first of them in order (the scalar loop keeps the first).
      const __m256 am = _mm256_set1_ps(amax);
      float mx = 0.f;
      for (int j = 0; j < 256; j += 8) {
        const int hit = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + j)), am, _CMP_EQ_OQ));
        if (hit != 0) {
          mx = xb[j + __builtin_ctz(unsigned(hit))];
          break;
        }
      }
      const float iscale = -127.f / mx;
      const __m256 is = _mm256_set1_ps(iscale);
      for (int j = 0; j < 256; j += 32) {
        __m256i v[4];
        for (int k = 0; k < 4; ++k)
          v[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(xb + j + 8 * k))), max_q);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), pack_i8(v[0], v[1], v[2], v[3]));
        a.bsums[16 * b + j / 16] = int16_t(hsum_i32(_mm256_add_epi32(v[0], v[1])));
        a.bsums[16 * b + j / 16 + 1] = int16_t(hsum_i32(_mm256_add_epi32(v[2], v[3])));
      }
      a.d[b] = 1.f / iscale;
    }
    return;
  }
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    __m256 xv[4];
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      xv[k] = _mm256_loadu_ps(xb + 8 * k);
      m = _mm256_max_ps(_mm256_andnot_ps(sign, xv[k]), m);
    }
    const float amax = hmax8(m);
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(xv[k], idv));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.qs + 32 * b), pack_i8(v[0], v[1], v[2], v[3]));
    const int32_t sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3])));
    a.d[b] = quant::f16_round(d);
    a.isum[b] = sum;
    a.s[b] = kind == quant::ActKind::kQ8_1 ? quant::f16_round(d * float(sum)) : 0.f;
  }
}

}  // namespace qk

inline void quantize_act(quant::ActKind kind, const float* x, int64_t n, const quant::ActRowMut& a) {
  qk::quantize_act(kind, x, n, a);
}
inline void gemv_q8_0(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q8_0, 34, 32>(w, r0, r1, cols, a, T, y, ldy);
}
inline void gemv_q4_0(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q4_0, 18, 32>(w, r0, r1, cols, a, T, y, ldy);
}
inline void gemv_q4_1(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q4_1, 20, 32>(w, r0, r1, cols, a, T, y, ldy);
}
inline void gemv_q4_k(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q45_k<false>, 144, 256>(w, r0, r1, cols, a, T, y, ldy);
}
inline void gemv_q5_k(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q45_k<true>, 176, 256>(w, r0, r1, cols, a, T, y, ldy);
}
inline void gemv_q6_k(const void* w, int64_t r0, int64_t r1, int64_t cols, const quant::ActRow* a, int64_t T, float* y,
                      int64_t ldy) {
  qk::gemv_q<qk::dot_q6_k, 210, 256>(w, r0, r1, cols, a, T, y, ldy);
}
