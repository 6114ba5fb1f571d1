// Compares loopus::quantize_row with ggml's reference quantizers, linked from a llama.cpp build's libggml-base, on
// random and edge-case rows (a development check beside the committed goldens of tests/core/test_quantize.cpp).
// SPDX-License-Identifier: MIT
//
//   g++ -std=c++20 -O3 -march=x86-64-v3 -Iinclude tests/reference/check_quantize_vs_ggml.cpp
//       -L"$LLAMA_BIN" -lggml-base -Wl,-rpath,"$LLAMA_BIN" -o /tmp/check_quantize_vs_ggml     (one line)
//   /tmp/check_quantize_vs_ggml 6000     # rows per type; prints the mismatches (0 expected)
//
// LLAMA_BIN: the bin/ folder of a llama.cpp CMake build. Exits 1 on any mismatch.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "loopus/core/quantize.hpp"
extern "C" {
void quantize_row_q8_0_ref(const float*, void*, int64_t);
void quantize_row_q4_0_ref(const float*, void*, int64_t);
void quantize_row_q4_1_ref(const float*, void*, int64_t);
void quantize_row_q4_K_ref(const float*, void*, int64_t);
void quantize_row_q5_K_ref(const float*, void*, int64_t);
void quantize_row_q6_K_ref(const float*, void*, int64_t);
}
using loopus::DType;
int main(int argc, char** argv) {
  const int iters = argc > 1 ? atoi(argv[1]) : 2000;
  std::mt19937 rng(42);
  struct T {
    DType t;
    void (*f)(const float*, void*, int64_t);
    const char* n;
  };
  T ts[] = {{DType::kQ8_0, quantize_row_q8_0_ref, "q8_0"}, {DType::kQ4_0, quantize_row_q4_0_ref, "q4_0"},
            {DType::kQ4_1, quantize_row_q4_1_ref, "q4_1"}, {DType::kQ4_K, quantize_row_q4_K_ref, "q4_K"},
            {DType::kQ5_K, quantize_row_q5_K_ref, "q5_K"}, {DType::kQ6_K, quantize_row_q6_K_ref, "q6_K"}};
  const int n = 256;
  std::vector<float> x(n);
  long bad[6] = {0};
  for (int it = 0; it < iters; ++it) {
    const int kind = it % 12;
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(-1.f, 1.f);
    float scale = std::pow(10.f, float(int(rng() % 13)) - 8.f);  // 1e-8 .. 1e4
    for (int i = 0; i < n; ++i) {
      switch (kind) {
        case 0: x[i] = nd(rng) * 0.02f; break;
        case 1: x[i] = nd(rng) * scale; break;
        case 2: x[i] = ud(rng) * scale; break;
        case 3: x[i] = (rng() % 4 == 0) ? 0.f : nd(rng) * scale; break;
        case 4: x[i] = float(int(rng() % 17) - 8) * scale; break;        // exact levels, ties
        case 5: x[i] = (i / 32 % 2) ? 0.f : nd(rng); break;              // zero blocks
        case 6: x[i] = (i / 16 % 3 == 0) ? 1.5f : nd(rng); break;        // constant sub-blocks
        case 7: x[i] = std::fabs(nd(rng)) * scale; break;                // all positive
        case 8: x[i] = -std::fabs(nd(rng)) * scale; break;               // all negative
        case 9: x[i] = nd(rng) * (i % 37 == 0 ? 1000.f : 0.01f); break;  // outliers
        case 10: x[i] = float(int(rng() % 64) - 32) * 0.125f; break;
        case 11: x[i] = std::exp(nd(rng) * 3.f) * ((rng() & 1) ? 1.f : -1.f); break;
      }
    }
    for (int k = 0; k < 6; ++k) {
      const size_t nbytes = loopus::dtype_row_bytes(ts[k].t, n);
      std::vector<unsigned char> a(nbytes, 0xAA), b(nbytes, 0x55);
      ts[k].f(x.data(), a.data(), n);
      loopus::quantize_row(ts[k].t, x.data(), n, b.data());
      if (a != b) {
        if (bad[k]++ < 3) std::printf("MISMATCH %s iter %d kind %d\n", ts[k].n, it, kind);
      }
    }
  }
  long total = 0;
  for (int k = 0; k < 6; ++k) {
    std::printf("%s: %ld mismatches of %d\n", ts[k].n, bad[k], iters);
    total += bad[k];
  }
  return total ? 1 : 0;
}
