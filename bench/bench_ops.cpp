// Benchmarks of Ops<Cpu> (Ops<Reference> beside it on small shapes), with the memory-bandwidth and FLOP/s ceilings.
// SPDX-License-Identifier: MIT
//
// Run with OMP_NUM_THREADS=1 and =2 (etc.) to get single- and multi-stream
// numbers. Decode matmuls (T = 1) cycle through enough copies of the weight
// (≥ 256 MiB) that every call streams it from DRAM, as a real decode step
// does; compare their GB/s with BM_MemBandwidth_Read.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "loopus/ops/cpu/eigen.hpp"

#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"

namespace {

using loopus::Cpu;
using loopus::DType;
using loopus::Ops;
using loopus::Reference;
using loopus::Weight;

/// Fast deterministic fill with values in [-0.5, 0.5).
void fill(float* p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    p[i] = float(s >> 40) * (1.f / 16777216.f) - 0.5f;
  }
}
std::vector<float> rand_vec(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  fill(v.data(), n, seed);
  return v;
}

/// `copies` copies of one random [rows, cols] weight in dtype dt, back to back.
struct WeightSet {
  loopus::AlignedBuffer buf;
  std::vector<Weight> w;
  WeightSet(DType dt, int64_t rows, int64_t cols, int64_t min_total_bytes) {
    const size_t one = size_t(rows) * loopus::dtype_row_bytes(dt, cols);
    const size_t copies = std::max<size_t>(1, (size_t(min_total_bytes) + one - 1) / one);
    buf.resize(one * copies);
    std::vector<float> f = rand_vec(size_t(rows * cols), uint64_t(rows * 31 + cols));
    auto* base = buf.data();
    if (dt == DType::kF32) {
      std::memcpy(base, f.data(), one);
    } else if (loopus::dtype_is_quantized(dt)) {
      // Random quant bytes under small f16 scales: the kernels' work does not depend on the values.
      uint64_t s = uint64_t(rows * 131 + cols);
      for (size_t i = 0; i < one; ++i) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        base[i] = std::byte(s >> 56);
      }
      const size_t bb = loopus::dtype_block_bytes(dt);
      const size_t at = dt == DType::kQ6_K ? 208 : 0;
      const uint16_t d = loopus::f32_to_f16(0.01f);
      for (size_t o = 0; o < one; o += bb) std::memcpy(base + o + at, &d, 2);
    } else {
      auto* h = reinterpret_cast<uint16_t*>(base);
      for (size_t i = 0; i < f.size(); ++i)
        h[i] = dt == DType::kF16 ? loopus::f32_to_f16(f[i]) : loopus::f32_to_bf16(f[i]);
    }
    for (size_t c = 1; c < copies; ++c) std::memcpy(base + c * one, base, one);
    for (size_t c = 0; c < copies; ++c) w.push_back(Weight{base + c * one, dt, rows, cols});
  }
};

constexpr int64_t kColdBytes = 256ll << 20;
constexpr auto kMs = benchmark::kMillisecond;

template <class B, DType D>
void BM_Matmul(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1), T = st.range(2);
  // Decode streams weights from DRAM; prefill is compute-bound, one copy is enough.
  WeightSet ws(D, rows, cols, T == 1 ? kColdBytes : 0);
  const auto x = rand_vec(size_t(T * cols), 7);
  std::vector<float> y(size_t(T * rows));
  size_t i = 0;
  for (auto _ : st) {
    Ops<B>::matmul(ws.w[i], x.data(), T, y.data());
    if (++i == ws.w.size()) i = 0;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double n = double(st.iterations());
  if (T == 1)
    st.counters["GB/s"] = benchmark::Counter(n * double(ws.w[0].nbytes()) / 1e9, benchmark::Counter::kIsRate);
  else
    st.counters["GFLOP/s"] =
        benchmark::Counter(n * 2.0 * double(T * rows * cols) / 1e9, benchmark::Counter::kIsRate);
}

// stories110M: d 768, ff 2048, vocab 32000. Qwen3-0.6B: d 1024, q 2048, ff 3072, vocab 151936.
void decode_shapes(benchmark::internal::Benchmark* b) {
  for (auto [r, c] : {std::pair{768, 768}, {2048, 768}, {768, 2048}, {32000, 768}, {2048, 1024}, {1024, 2048},
                      {3072, 1024}, {1024, 3072}, {151936, 1024}})
    b->Args({r, c, 1});
}
void prefill_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t T : {64, 512})
    for (auto [r, c] : {std::pair{768, 768}, {2048, 768}, {768, 2048}, {2048, 1024}, {1024, 2048}, {3072, 1024},
                        {1024, 3072}})
      b->Args({r, c, T});
  b->Args({32000, 768, 64});
}
void small_t_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t T : {2, 4, 8, 9, 16, 32}) b->Args({3072, 1024, T});
}

#define LOOPUS_MATMUL_BENCH(B, D, name)                                                                      \
  BENCHMARK(BM_Matmul<B, D>)->Name(name "/decode")->Apply(decode_shapes)->UseRealTime()->Unit(kMs);   \
  BENCHMARK(BM_Matmul<B, D>)->Name(name "/prefill")->Apply(prefill_shapes)->UseRealTime()->Unit(kMs); \
  BENCHMARK(BM_Matmul<B, D>)->Name(name "/smallT")->Apply(small_t_shapes)->UseRealTime()->Unit(kMs)

LOOPUS_MATMUL_BENCH(Cpu, DType::kF32, "BM_Matmul_F32");
LOOPUS_MATMUL_BENCH(Cpu, DType::kF16, "BM_Matmul_F16");
LOOPUS_MATMUL_BENCH(Cpu, DType::kBF16, "BM_Matmul_BF16");
// Quantized weights (GB/s counts the quantized bytes: compare with BM_MemBandwidth_Read).
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ8_0, "BM_Matmul_Q8_0");
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ4_0, "BM_Matmul_Q4_0");
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ4_1, "BM_Matmul_Q4_1");
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ4_K, "BM_Matmul_Q4_K");
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ5_K, "BM_Matmul_Q5_K");
LOOPUS_MATMUL_BENCH(Cpu, DType::kQ6_K, "BM_Matmul_Q6_K");
// The oracle, small shapes only (it is scalar double-precision code).
BENCHMARK(BM_Matmul<Reference, DType::kF32>)->Name("BM_Matmul_F32_Reference")->Args({768, 768, 1})
    ->Args({768, 768, 64})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Matmul<Reference, DType::kBF16>)->Name("BM_Matmul_BF16_Reference")->Args({768, 768, 1})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

/// Plain Eigen, the natural column-major way (Y = W·X), as the yardstick for prefill f32.
void BM_EigenGemm_F32(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1), T = st.range(2);
  Eigen::MatrixXf W(rows, cols), X(cols, T), Y(rows, T);
  fill(W.data(), size_t(W.size()), 1);
  fill(X.data(), size_t(X.size()), 2);
  for (auto _ : st) {
    Y.noalias() = W * X;
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(T * rows * cols) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EigenGemm_F32)->Apply(prefill_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

/// f32 prefill as one Eigen GEMM on the row-major weights, threaded by Eigen
/// itself: the alternative to Ops<Cpu>'s per-thread panels.
void BM_EigenThreaded_F32(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1), T = st.range(2);
  const auto w = rand_vec(size_t(rows * cols), 1), x = rand_vec(size_t(T * cols), 2);
  std::vector<float> y(size_t(T * rows));
  for (auto _ : st) {
    loopus::cpu::detail::matmul_gemm_f32(w.data(), rows, cols, x.data(), T, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(T * rows * cols) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EigenThreaded_F32)->Apply(prefill_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

/// The GEMV (row-streaming) kernel forced at larger T, to place the GEMV/GEMM crossover.
void BM_RowsKernel_BF16(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1), T = st.range(2);
  WeightSet ws(DType::kBF16, rows, cols, 0);
  const auto x = rand_vec(size_t(T * cols), 2);
  std::vector<float> y(size_t(T * rows));
  for (auto _ : st) {
    loopus::cpu::detail::matmul_rows(loopus::cpu::mat_kernels().gemv_bf16, ws.w[0].data, rows, cols, x.data(), T,
                                     y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(T * rows * cols) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RowsKernel_BF16)->Apply(small_t_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

/// Args: n_head, n_kv, head_dim, T, n_ctx. Decode: T = 1 at position n_ctx - 1;
/// prefill: T = n_ctx from position 0.
template <class B>
void BM_Attention(benchmark::State& st) {
  const int n_head = int(st.range(0)), n_kv = int(st.range(1)), hd = int(st.range(2));
  const int64_t T = st.range(3), n_ctx = st.range(4);
  const int64_t pos0 = n_ctx - T;
  const auto q = rand_vec(size_t(T * n_head * hd), 1);
  const auto k = rand_vec(size_t(n_ctx * n_kv * hd), 2), v = rand_vec(size_t(n_ctx * n_kv * hd), 3);
  std::vector<float> out(size_t(T * n_head * hd));
  for (auto _ : st) {
    Ops<B>::attention(q.data(), k.data(), v.data(), T, pos0, 0, n_head, n_kv, hd, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double n = double(st.iterations());
  if (T == 1)  // the K/V bytes a decode step must read
    st.counters["GB/s"] =
        benchmark::Counter(n * 2.0 * double(n_ctx * n_kv * hd) * 4 / 1e9, benchmark::Counter::kIsRate);
  // QKᵀ and PV over the causal triangle (or the one row of a decode step)
  const double pairs = T == 1 ? double(n_ctx) : double(T) * double(T + 1) / 2;
  st.counters["GFLOP/s"] = benchmark::Counter(n * 4.0 * pairs * n_head * hd / 1e9, benchmark::Counter::kIsRate);
}
void attention_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t n_ctx : {128, 512, 1024, 4096}) {
    b->Args({12, 12, 64, 1, n_ctx});   // stories110M
    b->Args({16, 8, 128, 1, n_ctx});   // Qwen3-0.6B
  }
  for (int64_t T : {64, 512}) {
    b->Args({12, 12, 64, T, T});
    b->Args({16, 8, 128, T, T});
  }
}
BENCHMARK(BM_Attention<Cpu>)->Name("BM_Attention")->Apply(attention_shapes)->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Attention<Reference>)->Name("BM_Attention_Reference")->Args({12, 12, 64, 1, 512})
    ->Args({16, 8, 128, 1, 512})->Args({12, 12, 64, 64, 64})->UseRealTime()->Unit(benchmark::kMillisecond);

template <class B>
void BM_Elementwise(benchmark::State& st) {
  const int64_t T = st.range(0), d = st.range(1);
  auto x = rand_vec(size_t(T * d), 1), u = rand_vec(size_t(T * d), 2);
  const auto g = rand_vec(size_t(d), 3);
  const Weight gw{g.data(), DType::kF32, 1, d};
  std::vector<float> y(x.size());
  for (auto _ : st) {
    Ops<B>::rmsnorm(x.data(), gw, T, d, 1e-5f, y.data());
    Ops<B>::swiglu(x.data(), u.data(), T * d, y.data());
    Ops<B>::rope(y.data(), T, int(d / 64), 64, 64, 1000, 10000.f, loopus::RopeStyle::kHalf);
    Ops<B>::softmax(y.data(), d);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Elementwise<Cpu>)->Name("BM_Norm_SwiGLU_Rope_Softmax")->Args({1, 3072})->Args({64, 3072})
    ->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Elementwise<Reference>)->Name("BM_Norm_SwiGLU_Rope_Softmax_Reference")->Args({1, 3072})
    ->Args({64, 3072})->UseRealTime()->Unit(benchmark::kMicrosecond);

/// Memory-bandwidth floor: sum a 512 MiB buffer, one stream per OpenMP thread.
void BM_MemBandwidth_Read(benchmark::State& st) {
  const size_t n = (512ull << 20) / sizeof(float);
  loopus::AlignedBuffer buf(n * sizeof(float));
  float* p = buf.as<float>();
  for (size_t i = 0; i < n; ++i) p[i] = 1.f;
  namespace simd = loopus::cpu::simd;
  using simd::VecF;
  constexpr size_t W = simd::kLanes;
  float total = 0;
  for (auto _ : st) {
    total = 0;
    LOOPUS_OMP(omp parallel for schedule(static) reduction(+ : total))
    for (int64_t blk = 0; blk < int64_t(n / (4 * W * 1024)); ++blk) {
      VecF a0 = VecF::zero(), a1 = a0, a2 = a0, a3 = a0;
      const float* q = p + size_t(blk) * 4 * W * 1024;
      for (size_t i = 0; i < 4 * W * 1024; i += 4 * W) {
        a0 = a0 + VecF::load(q + i);
        a1 = a1 + VecF::load(q + i + W);
        a2 = a2 + VecF::load(q + i + 2 * W);
        a3 = a3 + VecF::load(q + i + 3 * W);
      }
      total += simd::hsum((a0 + a1) + (a2 + a3));
    }
    benchmark::DoNotOptimize(total);
  }
  st.counters["GB/s"] = benchmark::Counter(double(st.iterations()) * double(n * sizeof(float)) / 1e9,
                                           benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MemBandwidth_Read)->UseRealTime()->Unit(benchmark::kMillisecond);

/// Peak multiply-add throughput of kernel level range(0) (ops/cpu/isa.hpp; skipped where the CPU
/// lacks it): 12 independent chains per thread of f32 FMAs (range(1) = 0) or of AVX512_BF16 pair
/// products (range(1) = 1). FLOP = 2 per multiply-add.
void BM_PeakFlops(benchmark::State& st) {
  using loopus::cpu::Isa;
  const auto isa = Isa(st.range(0));
  const bool bf16 = st.range(1) != 0;
  st.SetLabel(std::string(loopus::cpu::isa_name(isa)) + (bf16 ? " bf16 pairs" : " f32 fma"));
  if (!loopus::cpu::isa_supported(isa)) return st.SkipWithError("this CPU lacks the level");
  const auto& k = loopus::cpu::mat_kernels(isa);
  if (bf16 && k.dpbf16_chains == nullptr) return st.SkipWithError("no bf16 products at this level");
  constexpr int64_t kIters = 1 << 20;
  int threads = 1;
  for (auto _ : st) {
    float sink = 0;
    LOOPUS_OMP(omp parallel reduction(+ : sink))
    {
#if defined(_OPENMP)
      LOOPUS_OMP(omp single)
      threads = omp_get_num_threads();
#endif
      sink += bf16 ? k.dpbf16_chains(kIters) : k.fma_chains(kIters);
    }
    benchmark::DoNotOptimize(sink);
  }
  const double per_step = bf16 ? 32.0 : double(k.lanes);
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * threads * kIters * 12 * 2.0 * per_step / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PeakFlops)->ArgsProduct({{0, 1, 2, 3}, {0}})->Args({3, 1})->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

// The matmul benchmarks run the active kernel level: the best this CPU has, or LOOPUS_ISA's.
int main(int argc, char** argv) {
  benchmark::AddCustomContext("loopus_isa", loopus::cpu::isa_name(loopus::cpu::active_isa()));
  benchmark::AddCustomContext("loopus_isa_detected", loopus::cpu::isa_name(loopus::cpu::detect_isa()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
