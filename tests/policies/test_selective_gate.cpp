// SelectiveGate: the official init and the other starting points of a fresh gate (--gate-init).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "loopus/model/synth.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/selective_gate.hpp"

using namespace loopus;

namespace {

// Runs the gate on random p, h and returns the per-element a recovered from h' = a p + (1 - a) h.
std::vector<double> gate_alphas(const SelectiveGateWeights& w, int64_t T, uint32_t seed) {
  const int64_t d = w.d;
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> p(size_t(T * d)), h(size_t(T * d));
  for (auto& v : p) v = nd(gen);
  for (auto& v : h) v = nd(gen);
  std::vector<float> h2 = h;
  SelectiveGate g(std::make_shared<const SelectiveGateWeights>(w));
  g.reserve<Cpu>(T, d);
  Tensor<Cpu> pt({T, d}), ht({T, d});
  Ops<Cpu>::upload(p.data(), pt.span());
  Ops<Cpu>::upload(h2.data(), ht.span());
  g.blend<Cpu>(pt.span(), ht.span(), T);
  Ops<Cpu>::download(ht.span(), h2.data());
  std::vector<double> a;
  for (size_t i = 0; i < p.size(); ++i)
    if (std::abs(p[i] - h[i]) > 0.5f) a.push_back((double(h2[i]) - h[i]) / (double(p[i]) - h[i]));
  return a;
}

}  // namespace

TEST_CASE("[gate] official init: S4D-real A_log, softplus(bias) in [1e-3, 0.1], r = ceil(d / 16)") {
  SplitMix64 rng(3);
  const auto w = SelectiveGateWeights::official_init(40, [&] { return rng.uniform(); });
  CHECK(w.r == 3);
  for (int64_t c = 0; c < w.d; ++c) {
    CHECK(w.A_log[size_t(c)] == doctest::Approx(std::log(double(c + 1))));
    const double dt = std::log1p(std::exp(double(w.delta_b[size_t(c)])));
    CHECK(dt >= 1e-3 * 0.999);
    CHECK(dt <= 0.1 * 1.001);
  }
  for (float v : w.delta_w) CHECK(std::abs(v) <= 1.0 / std::sqrt(3.0));
}

TEST_CASE("[gate] mix:ALPHA init gives a = ALPHA on every token and channel, whatever p - h") {
  for (double alpha : {0.125, 0.5, 0.9}) {
    SplitMix64 rng(5);
    const auto w = SelectiveGateWeights::constant_init(48, alpha, [&] { return rng.uniform(); });
    const auto a = gate_alphas(w, 7, 11);
    REQUIRE(a.size() > 100);
    for (double v : a) CHECK(v == doctest::Approx(alpha).epsilon(1e-4));
  }
}

TEST_CASE("[gate] open init passes the proposal through (a close to 1), the official one keeps much of h") {
  SplitMix64 r1(9), r2(9);
  const auto open = gate_alphas(SelectiveGateWeights::open_init(64, [&] { return r1.uniform(); }), 5, 2);
  const auto off = gate_alphas(SelectiveGateWeights::official_init(64, [&] { return r2.uniform(); }), 5, 2);
  double mo = 0, mf = 0, fmin = 1;
  for (double v : open) {
    CHECK(v > 0.98);
    mo += v / double(open.size());
  }
  for (double v : off) {
    mf += v / double(off.size());
    fmin = std::min(fmin, v);
  }
  CHECK(mo > 0.99);
  CHECK(mf < 0.8);    // d = 64: about 0.66 here
  CHECK(fmin < 0.1);  // high-index channels have A = -(c + 1): their a can be small
}

TEST_CASE("[gate] init specs: official | open | mix:ALPHA, anything else is a clear error") {
  SplitMix64 r1(1), r2(1);
  const auto a = SelectiveGateWeights::from_spec("official", 32, [&] { return r1.uniform(); });
  const auto b = SelectiveGateWeights::official_init(32, [&] { return r2.uniform(); });
  CHECK(a.delta_b == b.delta_b);
  CHECK(a.in_w == b.in_w);
  SplitMix64 r3(1);
  auto uni = [&] { return r3.uniform(); };
  CHECK(SelectiveGateWeights::from_spec("mix:0.25", 32, uni).A_log[0] == 0.f);
  CHECK(SelectiveGateWeights::from_spec("open", 32, uni).A_log[31] == doctest::Approx(std::log(0.01)));
  for (const char* bad : {"mix:", "mix:x", "mix:0.5x", "mix:0", "mix:1", "mix:-0.1", "closed", ""}) {
    CAPTURE(bad);
    try {
      (void)SelectiveGateWeights::from_spec(bad, 32, uni);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("gate init") != std::string::npos);
    }
  }
}
