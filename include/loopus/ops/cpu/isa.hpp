// The instruction sets the CPU kernels can run, found at run time: one binary, every x86-64 CPU.
// SPDX-License-Identifier: MIT
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "loopus/core/error.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
/// 1 where the matmul kernels are compiled once per x86 instruction set and picked at run time
/// (ops/cpu/isa_kernels.hpp); 0 elsewhere, where the build's own flags are the only level.
#define LOOPUS_X86_DISPATCH 1
#else
#define LOOPUS_X86_DISPATCH 0
#endif

namespace loopus::cpu {

/// Kernel levels, lowest first. kBaseline is the code compiled with the build's own flags (the
/// portable fallback on other CPUs); the others are compiled for their instruction set whatever
/// the flags, and run only where the CPU has it:
///   kAvx2        AVX2 + FMA + F16C (x86-64-v3)
///   kAvx512      AVX-512 F, BW, VL on top of that (x86-64-v4)
///   kAvx512Bf16  and AVX512_BF16 + AVX512_VNNI: bf16 weights' prefill multiplies bf16 pairs
///                natively, quantized weights' dot products use vpdpbusd (every CPU with
///                AVX512_BF16 so far also has AVX512_VNNI; one without it stays at kAvx512)
enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };
inline constexpr Isa kAllIsas[] = {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kBaseline: return "baseline";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512bf16";
  }
  return "?";
}

inline std::optional<Isa> parse_isa(std::string_view s) {
  for (Isa i : kAllIsas)
    if (s == isa_name(i)) return i;
  return std::nullopt;
}

namespace detail {
#if LOOPUS_X86_DISPATCH
/// The highest level this CPU and its operating system support (the OS must save the wide
/// registers: XCR0), read with CPUID.
inline Isa detect_isa_uncached() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::kBaseline;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!(osxsave && avx && fma && f16c)) return Isa::kBaseline;
  unsigned xlo = 0, xhi = 0;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  (void)xhi;
  if ((xlo & 0x6u) != 0x6u) return Isa::kBaseline;  // XMM and YMM state
  if (__get_cpuid_max(0, nullptr) < 7) return Isa::kBaseline;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  if (!avx2) return Isa::kBaseline;
  if (!(avx512f && avx512bw && avx512vl) || (xlo & 0xE0u) != 0xE0u) return Isa::kAvx2;  // opmask, ZMM state
  __cpuid_count(7, 1, a, b, c, d);
  return (a & (1u << 5)) && avx512vnni ? Isa::kAvx512Bf16 : Isa::kAvx512;
}
#else
inline Isa detect_isa_uncached() { return Isa::kBaseline; }
#endif

/// -1: not chosen yet; else the active level.
inline std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{-1};
  return slot;
}
}  // namespace detail

/// The highest kernel level this CPU runs.
inline Isa detect_isa() {
  static const Isa isa = detail::detect_isa_uncached();
  return isa;
}

/// Whether the CPU can run kernels of level `isa`.
inline bool isa_supported(Isa isa) { return int(isa) <= int(detect_isa()); }

/// The level the matmul kernels use: detect_isa(), or lower when the environment variable
/// LOOPUS_ISA names one (baseline, avx2, avx512, avx512bf16), or what set_isa() chose. A level
/// the CPU cannot run, or a name that is none of these, is an error naming the variable.
inline Isa active_isa() {
  int v = detail::active_isa_slot().load(std::memory_order_relaxed);
  if (v >= 0) return Isa(v);
  Isa isa = detect_isa();
  if (const char* env = std::getenv("LOOPUS_ISA"); env != nullptr && *env != '\0') {
    const auto want = parse_isa(env);
    if (!want)
      throw UsageError("LOOPUS_ISA=" + std::string(env) + ": not a kernel level (baseline, avx2, avx512, avx512bf16)");
    if (!isa_supported(*want))
      throw UnsupportedError("LOOPUS_ISA=" + std::string(env) + ": this CPU runs kernels up to " + isa_name(isa));
    isa = *want;
  }
  detail::active_isa_slot().store(int(isa), std::memory_order_relaxed);
  return isa;
}

/// Makes the matmul kernels use level `isa` from now on (tests and benchmarks run each level this
/// way). Throws when the CPU cannot run it. Not for use while kernels run on other threads.
inline void set_isa(Isa isa) {
  if (!isa_supported(isa))
    throw UnsupportedError(std::string("kernel level ") + isa_name(isa) + " is beyond this CPU (it runs up to " +
                           isa_name(detect_isa()) + ")");
  detail::active_isa_slot().store(int(isa), std::memory_order_relaxed);
}

}  // namespace loopus::cpu
