// Tests for Sampler: greedy, top-k/top-p/min-p truncation sets, sampled frequencies, seeding, repetition penalty.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <doctest/doctest.h>

#include "loopus/sample/sampler.hpp"

namespace {

using loopus::Sampler;
using loopus::SamplerParams;

std::vector<float> random_logits(loopus::Xoshiro256StarStar& rng, int n, float scale = 4.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float((rng.uniform() * 2.0 - 1.0) * scale);
  return v;
}

/// The reference truncation, written independently of the sampler: sort by
/// probability, keep top-k, then the top-p prefix, then the min-p survivors;
/// returns id -> probability (0 outside the set).
std::vector<double> expected_dist(const std::vector<float>& logits, float temp, int top_k, float top_p, float min_p) {
  const int n = int(logits.size());
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  if (top_k > 0 && top_k < n) order.resize(size_t(top_k));
  std::vector<double> p;
  for (int id : order) p.push_back(std::exp(double(logits[size_t(id)]) / temp));
  double z = std::accumulate(p.begin(), p.end(), 0.0);
  for (auto& x : p) x /= z;
  size_t keep = p.size();
  if (top_p < 1.0f) {
    double c = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      c += p[i];
      if (c >= top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  size_t m = 0;
  while (m < keep && p[m] >= min_p * p[0]) ++m;
  keep = std::max<size_t>(m, 1);
  double zk = 0;
  for (size_t i = 0; i < keep; ++i) zk += p[i];
  std::vector<double> out(size_t(n), 0.0);
  for (size_t i = 0; i < keep; ++i) out[size_t(order[i])] = p[i] / zk;
  return out;
}

/// Draws `draws` samples and checks: never outside the expected set; the
/// chi-square statistic against the expected probabilities is below a loose
/// bound (df <= 9 here; 40 is far beyond the 1e-5 tail), so a wrong
/// temperature or a wrong renormalisation fails while noise does not.
void check_distribution(const std::vector<float>& logits, SamplerParams sp, int draws) {
  const auto want = expected_dist(logits, sp.temperature, sp.top_k, sp.top_p, sp.min_p);
  Sampler s(sp);
  std::vector<int> count(logits.size(), 0);
  std::vector<float> work;
  int out_of_range = 0;
  for (int i = 0; i < draws; ++i) {
    work = logits;
    int32_t id = s.sample(work.data(), int32_t(work.size()));
    if (id < 0 || size_t(id) >= logits.size()) {
      ++out_of_range;
      continue;
    }
    ++count[size_t(id)];
  }
  REQUIRE_EQ(out_of_range, 0);
  double chi2 = 0;
  int in_set = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (want[i] == 0.0) {
      CHECK_MESSAGE(count[i] == 0, "token " << i << " outside the truncation set was drawn " << count[i] << "x");
      continue;
    }
    ++in_set;
    double e = want[i] * draws;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  CHECK_EQ(int(s.last_candidates().size()), in_set);
  CHECK_LT(chi2, 40.0);
  MESSAGE("T=" << sp.temperature << " k=" << sp.top_k << " p=" << sp.top_p << " min_p=" << sp.min_p << ": set of "
               << in_set << ", chi2 " << chi2 << " (df " << in_set - 1 << ")");
}

}  // namespace

TEST_CASE("[loopus] sampler: greedy is argmax, lowest index on ties") {
  loopus::Xoshiro256StarStar rng(7);
  SamplerParams g;
  g.temperature = 0.0f;
  Sampler s(g);
  for (int t = 0; t < 200; ++t) {
    auto l = random_logits(rng, 1000);
    int32_t want = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    CHECK_EQ(s.sample(l.data(), int32_t(l.size())), want);
  }
  std::vector<float> tie = {1.0f, 3.0f, 2.0f, 3.0f};
  CHECK_EQ(s.sample(tie.data(), 4), 1);
  std::vector<float> nan = {std::nanf(""), -5.0f, -1.0f};
  CHECK_EQ(s.sample(nan.data(), 3), 2);
  CHECK_EQ(Sampler::argmax(nan.data(), 3), 2);
  CHECK_THROWS_AS(s.sample(nullptr, 3), loopus::Error);
  CHECK_THROWS_AS(s.sample(tie.data(), 0), loopus::Error);
}

TEST_CASE("[loopus] sampler: top_k = 1 is greedy at any temperature") {
  loopus::Xoshiro256StarStar rng(11);
  for (float temp : {0.1f, 1.0f, 10.0f}) {
    SamplerParams p;
    p.temperature = temp;
    p.top_k = 1;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    Sampler s(p);
    for (int t = 0; t < 100; ++t) {
      auto l = random_logits(rng, 500);
      int32_t want = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
      CHECK_EQ(s.sample(l.data(), int32_t(l.size())), want);
    }
  }
}

TEST_CASE("[loopus] sampler: a fixed seed reproduces the same draws") {
  // First outputs of xoshiro256** seeded by splitmix64(42), from an independent
  // Python implementation of the published algorithms: they pin portability.
  loopus::Xoshiro256StarStar r(42);
  CHECK_EQ(r.next(), 1546998764402558742ULL);
  CHECK_EQ(r.next(), 6990951692964543102ULL);
  CHECK_EQ(r.next(), 12544586762248559009ULL);
  CHECK_EQ(r.next(), 17057574109182124193ULL);

  loopus::Xoshiro256StarStar gen(3);
  const auto logits = random_logits(gen, 256, 2.0f);
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 1234;
  auto run = [&](Sampler& s) {
    std::vector<int32_t> out;
    std::vector<float> w;
    for (int i = 0; i < 500; ++i) {
      w = logits;
      out.push_back(s.sample(w.data(), int32_t(w.size())));
    }
    return out;
  };
  Sampler a(p), b(p);
  auto ra = run(a);
  CHECK_EQ(ra, run(b));
  a.reseed(1234);
  CHECK_EQ(run(a), ra);
  p.seed = 1235;
  Sampler c(p);
  CHECK_NE(run(c), ra);
  // The scratch storage is not reallocated between calls.
  const int32_t* before = a.last_candidates().data();
  run(a);
  CHECK_EQ(a.last_candidates().data(), before);
}

TEST_CASE("[loopus] sampler: temperature, top-k, top-p and min-p give the right sets and frequencies") {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -2.0f, -3.0f, -4.0f};
  const int draws = 100000;
  auto P = [](float t, int k, float p, float m) {
    SamplerParams sp;
    sp.temperature = t;
    sp.top_k = k;
    sp.top_p = p;
    sp.min_p = m;
    sp.seed = 99;
    return sp;
  };
  check_distribution(logits, P(1.0f, 0, 1.0f, 0.0f), draws);   // plain softmax, all 10 tokens
  check_distribution(logits, P(0.5f, 0, 1.0f, 0.0f), draws);   // sharper
  check_distribution(logits, P(2.0f, 0, 1.0f, 0.0f), draws);   // flatter
  check_distribution(logits, P(1.0f, 3, 1.0f, 0.0f), draws);   // top-k
  check_distribution(logits, P(1.0f, 0, 0.8f, 0.0f), draws);   // top-p
  check_distribution(logits, P(1.0f, 0, 1.0f, 0.2f), draws);   // min-p
  check_distribution(logits, P(0.7f, 6, 0.9f, 0.1f), draws);   // all together
  check_distribution(logits, P(1.0f, 0, 0.0f, 0.0f), 1000);    // top_p = 0 keeps only the best

  // Exact sets, worked by hand: softmax of the 10 logits at T=1 has
  // p0 = .4012, p1 = .2434, p2 = .1476 -> cumulative .6446 < .65 <= .7922.
  Sampler s(P(1.0f, 0, 0.65f, 0.0f));
  auto w = logits;
  s.sample(w.data(), int32_t(w.size()));
  CHECK_EQ(std::vector<int32_t>(s.last_candidates().begin(), s.last_candidates().end()),
           (std::vector<int32_t>{0, 1, 2}));
  // min-p 0.3: p_i / p0 = exp(l_i - 2) >= 0.3  <=>  l_i >= 2 + ln 0.3 = 0.796 -> ids 0, 1, 2.
  Sampler m(P(1.0f, 0, 1.0f, 0.3f));
  w = logits;
  m.sample(w.data(), int32_t(w.size()));
  CHECK_EQ(m.last_candidates().size(), 3u);
  double sum = 0;
  for (double x : m.last_probs()) sum += x;
  CHECK_LT(std::abs(sum - 1.0), 1e-12);
  CHECK_LT(std::abs(m.last_probs()[0] - 1.0 / (1.0 + std::exp(-0.5) + std::exp(-1.0))), 1e-12);

  // -inf logits (masked tokens) are never drawn.
  std::vector<float> masked = {0.0f, -INFINITY, 0.0f, -INFINITY};
  Sampler u(P(1.0f, 0, 1.0f, 0.0f));
  for (int i = 0; i < 1000; ++i) {
    auto mm = masked;
    int32_t id = u.sample(mm.data(), 4);
    CHECK((id == 0 || id == 2));
  }
}

TEST_CASE("[loopus] sampler: repetition penalty divides positive and multiplies negative logits once per id") {
  SamplerParams p;
  p.temperature = 0.0f;
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 64;
  Sampler s(p);
  std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
  const std::vector<int32_t> hist = {0, 1, 1, 1, 4, 99, -3};  // repeats count once; bad ids ignored
  s.apply_repetition_penalty(l.data(), 5, hist);
  CHECK_EQ(l, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, 0.0f}));

  // Only the last repeat_last_n ids count.
  p.repeat_last_n = 2;
  Sampler s2(p);
  l = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
  const std::vector<int32_t> h2 = {3, 0, 2};
  s2.apply_repetition_penalty(l.data(), 5, h2);
  CHECK_EQ(l, (std::vector<float>{1.0f, -1.0f, 0.25f, 3.0f, 0.0f}));

  // repeat_last_n < 0: the whole history; it changes the greedy pick.
  p.repeat_last_n = -1;
  Sampler s3(p);
  l = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
  const std::vector<int32_t> h3 = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  CHECK_EQ(s3.sample(l.data(), 5, h3), 0);  // 3.0 -> 1.5 falls below token 0's 2.0
  CHECK_EQ(l[3], 1.5f);
  CHECK_EQ(l[0], 2.0f);
  CHECK_EQ(l[1], -2.0f);
  // penalty 1 or repeat_last_n 0: untouched.
  p.repeat_penalty = 1.0f;
  Sampler s4(p);
  l = {2.0f, -1.0f};
  s4.apply_repetition_penalty(l.data(), 2, h3);
  CHECK_EQ(l, (std::vector<float>{2.0f, -1.0f}));
  p.repeat_penalty = 0.0f;
  CHECK_THROWS_AS(Sampler{p}, loopus::Error);
}
