// Optional BLAS for f32 GEMMs: OpenBLAS's cblas_sgemm when the build found it (LOOPUS_HAS_CBLAS), else Eigen.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>

#if defined(LOOPUS_HAS_CBLAS)
#include <cblas.h>
#endif

namespace loopus::cpu::detail {

#if defined(LOOPUS_HAS_CBLAS)
/// C[M×N] = op(A)·op(B) + beta·C, row-major with leading dimensions, on the
/// calling thread. loopus splits its GEMMs over OpenMP threads itself, so
/// OpenBLAS is pinned to one thread (once, on first use): its own pool would
/// oversubscribe the cores and spin against ours.
inline void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  static const bool single = (openblas_set_num_threads(1), true);
  (void)single;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), 1.f, A, int(lda), B, int(ldb), beta, C, int(ldc));
}
#endif

}  // namespace loopus::cpu::detail
