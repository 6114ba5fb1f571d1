// Sampler: next-token choice from logits (repetition penalty, greedy, top-k, top-p, min-p) with a portable PRNG.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus {

/// xoshiro256** seeded through splitmix64: a small PRNG whose output is
/// defined bit for bit, so a seed gives the same samples on every platform
/// and standard library (std:: distributions are implementation-defined).
class Xoshiro256StarStar {
 public:
  explicit Xoshiro256StarStar(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) s = splitmix64(x);  // never all-zero: splitmix64 is a bijection of a counter
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

/// Sampling settings. Defaults are llama.cpp's, except the seed, which is
/// fixed so that runs repeat; pass a varying seed for varied output.
struct SamplerParams {
  float temperature = 0.8f;    ///< <= 0: greedy argmax
  int top_k = 40;              ///< keep the k most likely tokens; <= 0: off
  float top_p = 0.95f;         ///< keep the smallest prefix with cumulative probability >= p; >= 1: off
  float min_p = 0.05f;         ///< drop tokens with probability < min_p * max probability; <= 0: off
  float repeat_penalty = 1.0f; ///< CTRL penalty on recently seen ids; 1: off
  int repeat_last_n = 64;      ///< how many trailing history ids the penalty looks at; 0: off, < 0: all
  uint64_t seed = 0x10095EEDULL;
};

/// Chooses the next token. Order: repetition penalty -> (temperature <= 0:
/// argmax) -> top-k -> softmax(logits / temperature) -> top-p -> min-p ->
/// renormalise -> draw. Temperature scales the logits before the truncations,
/// as Hugging Face does (llama.cpp's default chain applies it after them).
/// Ties rank the lower id first everywhere, so results do not depend on the
/// sort implementation. After the first call with a given vocabulary size,
/// sample() does not allocate. Not thread-safe: one Sampler per sequence.
class Sampler {
 public:
  explicit Sampler(SamplerParams p = {}) : p_(p), rng_(p.seed) {
    if (!std::isfinite(p_.temperature)) throw UsageError("SamplerParams: temperature must be finite");
    if (!(p_.repeat_penalty > 0.0f) || !std::isfinite(p_.repeat_penalty))
      throw UsageError("SamplerParams: repeat_penalty must be a positive number (got " +
                       std::to_string(p_.repeat_penalty) + ")");
    if (std::isnan(p_.top_p)) throw UsageError("SamplerParams: top_p is NaN");
    if (std::isnan(p_.min_p)) throw UsageError("SamplerParams: min_p is NaN");
  }

  const SamplerParams& params() const { return p_; }

  /// Restarts the random stream (same seed -> same draws).
  void reseed(uint64_t seed) {
    p_.seed = seed;
    rng_.reseed(seed);
  }

  /// Picks a token id from logits[0, n_vocab). `history` is the sequence so
  /// far (prompt + generated), used by the repetition penalty; ids outside
  /// the vocabulary in it are ignored. The penalty is applied to `logits` in place.
  /// NaN logits count as -inf. Throws Error for a null pointer or n_vocab <= 0.
  int32_t sample(float* logits, int32_t n_vocab, std::span<const int32_t> history = {}) {
    if (!logits || n_vocab <= 0)
      throw UsageError("Sampler::sample: need logits for at least one token (n_vocab = " + std::to_string(n_vocab) +
                       ")");
    if (keys_.capacity() < size_t(n_vocab)) {  // the only allocations: first call per vocabulary size
      keys_.reserve(size_t(n_vocab));
      w_.reserve(size_t(n_vocab));
      cand_.reserve(size_t(n_vocab));
      prob_.reserve(size_t(n_vocab));
      seen_.resize(size_t(n_vocab), 0);
    }
    apply_repetition_penalty(logits, n_vocab, history);
    cand_.clear();
    prob_.clear();
    if (p_.temperature <= 0.0f || p_.top_k == 1) return greedy(logits, n_vocab);

    // Candidates: every token with a finite logit. A +inf logit is certain.
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const double inv_t = 1.0 / double(p_.temperature);
    float maxv = -kInf;
    auto weight = [&](float l) { return std::exp((double(l) - double(maxv)) * inv_t); };  // 1 for the best
    keys_.clear();
    double total = 0;  // softmax denominator over the top-k set (all tokens when top-k is off)
    if (p_.top_k > 0) {
      // One pass through a bounded min-heap of the k best keys (pushes are rare).
      const size_t k = size_t(p_.top_k);
      float floor = -kInf;  // logit of the heap's worst entry once full: a cheap early reject
      for (int32_t i = 0; i < n_vocab; ++i) {
        const float l = logits[i];
        if (l < floor || !valid(l)) continue;
        if (l == kInf) return greedy(logits, n_vocab);
        const uint64_t key = pack(l, i);
        if (keys_.size() < k) {
          keys_.push_back(key);
          std::push_heap(keys_.begin(), keys_.end(), std::greater<>());
        } else if (key > keys_.front()) {
          std::pop_heap(keys_.begin(), keys_.end(), std::greater<>());
          keys_.back() = key;
          std::push_heap(keys_.begin(), keys_.end(), std::greater<>());
        } else {
          continue;
        }
        if (keys_.size() == k) floor = logits[unpack(keys_.front())];
      }
      if (keys_.empty()) return greedy(logits, n_vocab);
      std::sort(keys_.begin(), keys_.end(), std::greater<>());
      maxv = logits[unpack(keys_[0])];
      for (uint64_t key : keys_) total += weight(logits[unpack(key)]);
    } else {
      int32_t n_valid = 0;
      for (int32_t i = 0; i < n_vocab; ++i) {
        const float l = logits[i];
        if (!valid(l)) continue;
        if (l == kInf) return greedy(logits, n_vocab);
        maxv = std::max(maxv, l);
        ++n_valid;
      }
      if (n_valid == 0) return greedy(logits, n_vocab);
      // Sort only the tokens that can survive. min-p keeps w >= min_p
      // (w_max = 1); otherwise find a weight cut-off whose survivors already
      // hold the top-p mass, so the minimal prefix lies inside them.
      for (int32_t i = 0; i < n_vocab; ++i)
        if (valid(logits[i])) total += weight(logits[i]);
      double cut = 0;
      if (p_.min_p > 0.0f) {
        cut = double(p_.min_p);
      } else if (p_.top_p < 1.0f) {
        // The margin covers summation-order rounding between this pass and the sorted prefix sum.
        const double target = double(std::max(p_.top_p, 0.0f)) * total * (1.0 + 1e-9);
        for (cut = 1e-2; cut > 1e-30; cut *= 1e-2) {
          double mass = 0;
          for (int32_t i = 0; i < n_vocab; ++i)
            if (valid(logits[i])) {
              double w = weight(logits[i]);
              if (w >= cut) mass += w;
            }
          if (mass >= target) break;
        }
        if (cut <= 1e-30) cut = 0;
      }
      for (int32_t i = 0; i < n_vocab; ++i)
        if (valid(logits[i]) && (cut == 0 || weight(logits[i]) >= cut)) keys_.push_back(pack(logits[i], i));
      std::sort(keys_.begin(), keys_.end(), std::greater<>());
    }

    const size_t k = keys_.size();
    w_.resize(k);
    for (size_t i = 0; i < k; ++i) w_[i] = weight(logits[unpack(keys_[i])]);
    size_t keep = k;
    if (p_.top_p < 1.0f) {
      const double target = double(std::max(p_.top_p, 0.0f)) * total;
      double cum = 0;
      for (size_t i = 0; i < k; ++i) {
        cum += w_[i];
        if (cum >= target) {
          keep = i + 1;
          break;
        }
      }
    }
    if (p_.min_p > 0.0f) {
      const double thr = double(p_.min_p) * w_[0];  // w_ is sorted, w_[0] the max
      size_t m = 1;
      while (m < keep && w_[m] >= thr) ++m;
      keep = m;
    }
    double kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += w_[i];

    const double u = rng_.uniform() * kept;
    double cum = 0;
    size_t pick = keep - 1;  // rounding can leave u just above the last partial sum
    for (size_t i = 0; i < keep; ++i) {
      cum += w_[i];
      if (u < cum) {
        pick = i;
        break;
      }
    }
    for (size_t i = 0; i < keep; ++i) {
      cand_.push_back(unpack(keys_[i]));
      prob_.push_back(w_[i] / kept);
    }
    return unpack(keys_[pick]);
  }

  /// CTRL-style penalty over the distinct ids among the last repeat_last_n of
  /// `history`: a positive logit is divided by the penalty, others multiplied.
  void apply_repetition_penalty(float* logits, int32_t n_vocab, std::span<const int32_t> history) {
    if (p_.repeat_penalty == 1.0f || p_.repeat_last_n == 0 || history.empty()) return;
    size_t start = 0;
    if (p_.repeat_last_n > 0 && history.size() > size_t(p_.repeat_last_n)) start = history.size() - size_t(p_.repeat_last_n);
    if (seen_.size() < size_t(n_vocab)) seen_.resize(size_t(n_vocab), 0);
    for (size_t i = start; i < history.size(); ++i) {
      int32_t id = history[i];
      if (id < 0 || id >= n_vocab || seen_[size_t(id)]) continue;
      seen_[size_t(id)] = 1;
      float& l = logits[id];
      l = l > 0.0f ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
    for (size_t i = start; i < history.size(); ++i) {
      int32_t id = history[i];
      if (id >= 0 && id < n_vocab) seen_[size_t(id)] = 0;
    }
  }

  /// Index of the largest logit, the lowest one on ties; NaN never wins.
  static int32_t argmax(const float* logits, int32_t n_vocab) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; ++i)
      if (logits[i] > logits[best] || (std::isnan(logits[best]) && !std::isnan(logits[i]))) best = i;
    return best;
  }

  /// The token set the last sample() call drew from, best first, and its
  /// renormalised probabilities (both empty after a greedy pick). For tests and diagnostics.
  std::span<const int32_t> last_candidates() const { return cand_; }
  std::span<const double> last_probs() const { return prob_; }

 private:
  SamplerParams p_;
  Xoshiro256StarStar rng_;
  std::vector<uint64_t> keys_;  // packed (logit, id) candidates, scratch
  std::vector<double> w_;       // unnormalised probabilities, scratch
  std::vector<uint8_t> seen_;  // repetition-penalty dedup flags, all zero between calls
  std::vector<int32_t> cand_;
  std::vector<double> prob_;

  int32_t greedy(const float* logits, int32_t n_vocab) const { return argmax(logits, n_vocab); }

  static bool valid(float l) { return !std::isnan(l) && l != -std::numeric_limits<float>::infinity(); }
  /// One integer that orders like (logit descending, id ascending): the sort
  /// key of every ranking step, so ties never depend on the sort algorithm.
  static uint64_t pack(float l, int32_t id) {
    l += 0.0f;  // -0 -> +0, so the two zeros tie as they compare equal
    uint32_t u;
    std::memcpy(&u, &l, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (uint64_t(u) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(id));
  }
  static int32_t unpack(uint64_t key) { return int32_t(0xFFFFFFFFu - uint32_t(key)); }
};

}  // namespace loopus
