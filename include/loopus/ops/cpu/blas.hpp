// Optional BLAS for f32 GEMMs: OpenBLAS's cblas_sgemm when the build found it (LOOPUS_HAS_CBLAS) and
// its kernels suit this CPU (blas_fast()), else Eigen.
// SPDX-License-Identifier: MIT
#pragma once
#include <cctype>
#include <cstdint>
#include <string>

#if defined(LOOPUS_HAS_CBLAS)
#include <cblas.h>
#endif

namespace loopus::cpu::detail {

#if defined(LOOPUS_HAS_CBLAS)
/// Whether OpenBLAS's sgemm is the faster one here. OpenBLAS picks its kernels by CPU model when
/// it loads; on a CPU newer than the library it falls back to an old core's kernels: OpenBLAS
/// 0.3.21 (Debian 12) runs a Sapphire Rapids Xeon with "Prescott" (SSE3) kernels, at a fraction
/// of Eigen's kernel compiled for this CPU. In an AVX2 build, a pre-AVX2 core means Eigen's GEMM
/// instead. The core is OpenBLAS's own choice (OPENBLAS_CORETYPE included), read once.
inline bool blas_fast() {
  static const bool fast = [] {
#if defined(__AVX2__)
    const char* name = openblas_get_corename();
    if (name == nullptr) return true;
    std::string core(name);
    for (char& c : core) c = char(std::tolower(static_cast<unsigned char>(c)));
    for (const char* old : {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge", "bulldozer",
                            "piledriver", "opteron", "barcelona", "bobcat", "katmai", "coppermine", "northwood",
                            "banias", "yonah", "athlon", "unknown"})
      if (core == old) return false;
#endif
    return true;
  }();
  return fast;
}

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
