// SplitMix64: the seeded random generator of synth weights, fresh gates and training data order.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>

namespace loopus {

/// splitmix64: a tiny generator whose stream is the same on every platform.
struct SplitMix64 {
  uint64_t s;
  explicit SplitMix64(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// U[0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
};

}  // namespace loopus
