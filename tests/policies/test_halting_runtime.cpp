// Halting rules at run time (q threshold, CDF hazard, KL, min_loops, q_eval_interval, q on the delta) and the
// `latest` exit fill of PerDepthCache, each against values recomputed here, outside LoopedModel.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "loopus/io/load_model.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

using Model = LoopedModel<Cpu, FixedMixGate, PerDepthCache>;
constexpr int kB = 8;
constexpr float kAlpha = 0.5f;
const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 290};

std::shared_ptr<const ModelWeights> stories() {
  static auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  return w;
}

/// stories260K split E = layer 0, M = layers 1-3, D = layer 4, with the given q head.
std::shared_ptr<LoopedWeights> with_q_head(std::shared_ptr<const ConfidenceHead> q) {
  auto lw = recast(stories(), LayerSplit::from_specs("0..0", "4..4", 5));
  lw->q_head = std::move(q);
  return lw;
}

/// A q head that ignores its input: q = sigmoid(b) = q0 on every loop.
std::shared_ptr<const ConfidenceHead> constant_q(double q0) {
  auto q = std::make_shared<ConfidenceHead>();
  q->d = 64;
  q->ln_w.assign(64, 1.f);
  q->ln_b.assign(64, 0.f);
  q->w.assign(64, 0.f);
  q->b = float(std::log(q0 / (1 - q0)));
  return q;
}

/// A q head whose output depends on its input (seeded weights).
std::shared_ptr<const ConfidenceHead> varying_q() {
  auto q = std::make_shared<ConfidenceHead>();
  q->d = 64;
  SplitMix64 rng(17);
  for (int i = 0; i < 64; ++i) {
    q->ln_w.push_back(float(0.5 + rng.uniform()));
    q->ln_b.push_back(float(0.2 * (rng.uniform() - 0.5)));
    q->w.push_back(float(0.6 * (rng.uniform() - 0.5)));
  }
  q->b = 0.1f;
  return q;
}

/// sigmoid(w · LayerNorm(x) + b), written out here rather than via ConfidenceHead::prob.
double q_by_hand(const ConfidenceHead& q, const std::vector<float>& x) {
  const size_t d = x.size();
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= double(d);
  for (float v : x) var += (v - mean) * (v - mean);
  var /= double(d);
  double s = q.b;
  for (size_t i = 0; i < d; ++i)
    s += double(q.w[i]) * ((x[i] - mean) / std::sqrt(var + 1e-5) * q.ln_w[i] + q.ln_b[i]);
  return 1 / (1 + std::exp(-s));
}

/// Records what the loop reports: the last token's post-gate state h, its proposal p, and halt_value.
struct Recorder : LoopObserver {
  std::vector<std::vector<float>> h, p;
  std::vector<float> value;
  void on_loop(const LoopEvent& e) override {
    h.emplace_back(e.h, e.h + e.d);
    p.emplace_back(e.p, e.p + e.d);
    value.push_back(e.halt_value);
  }
};

LoopParams params(HaltRule rule, float thr_or_eps, int interval = 1, int min_loops = 1,
                  QInput in = QInput::kState) {
  LoopParams lp;
  lp.halting.rule = rule;
  lp.halting.threshold = thr_or_eps;
  lp.halting.eps = thr_or_eps;
  lp.halting.eval_interval = interval;
  lp.halting.min_loops = min_loops;
  lp.halting.max_loops = kB;
  lp.halting.q_input = in;
  return lp;
}

/// Runs the prompt in one call; returns the loops run and what the observer saw.
int run(const std::shared_ptr<const LoopedWeights>& lw, const LoopParams& lp, Recorder* rec = nullptr,
        float alpha = kAlpha) {
  Model m(lw, lp, {.n_ctx = 64}, FixedMixGate(alpha));
  if (rec) m.set_observer(rec);
  std::vector<float> logits(512);
  m.eval(kPrompt, logits.data());
  return m.last_loops();
}

/// Is loop r (0-based) one where the official rule looks at q: (r + 1) % interval == 0 or the last loop.
bool q_checked(int r, int interval) { return (r + 1) % interval == 0 || r + 1 == kB; }

/// The loops the official rules run for a q sequence q[0..B): threshold (q > thr) or
/// cdf (1 - prod(1 - min(q_j, 1 - 1e-7)) > thr over the evaluated loops), stopping
/// no earlier than min_loops. At most B.
int expected_q_loops(const std::vector<double>& q, bool cdf, double thr, int interval, int min_loops) {
  double survive = 1;
  for (int r = 0; r < kB; ++r) {
    if (!q_checked(r, interval)) continue;
    bool stop = q[size_t(r)] > thr;
    if (cdf) {
      survive *= 1 - std::min(q[size_t(r)], 1 - 1e-7);
      stop = 1 - survive > thr;
    }
    if (stop && r + 1 >= min_loops) return r + 1;
  }
  return kB;
}

/// Thresholds strictly between the sorted distinct values of xs (and one below,
/// one above), each at least `gap` away from every x: no decision sits on an edge.
std::vector<double> thresholds_between(std::vector<double> xs, double gap, double lo, double hi) {
  std::sort(xs.begin(), xs.end());
  std::vector<double> cand = {std::max(lo, xs.front() - 0.05), std::min(hi, xs.back() + 0.05)};
  for (size_t i = 1; i < xs.size(); ++i) cand.push_back(0.5 * (xs[i - 1] + xs[i]));
  std::vector<double> out;
  for (double c : cand) {
    bool ok = c > lo && c < hi;
    for (double x : xs) ok = ok && std::abs(c - x) > gap;
    if (ok) out.push_back(c);
  }
  return out;
}

}  // namespace

TEST_CASE("[loopus] halting: cdf with a constant q stops where 1 - (1 - q)^k first exceeds the threshold") {
  // q = 0.3 every loop: 1 - 0.7^k = 0.3, 0.51, 0.657, 0.7599, 0.83193, ...
  auto lw = with_q_head(constant_q(0.3));
  // closed form: the smallest k (evaluated loops only) with 1 - 0.7^k > thr
  auto closed_form = [](double thr, int interval) {
    int evaluated = 0;
    for (int r = 0; r < kB; ++r)
      if ((r + 1) % interval == 0 && r + 1 < kB && 1 - std::pow(0.7, ++evaluated) > thr) return r + 1;
    return kB;
  };
  for (const auto& c : {std::pair{0.45f, 1}, {0.8f, 1}, {0.25f, 1}, {0.95f, 1}, {0.45f, 3}, {0.6f, 3}, {0.45f, 2},
                        {0.75f, 2}}) {
    const float thr = c.first;
    const int interval = c.second;
    CAPTURE(thr);
    CAPTURE(interval);
    const int want = closed_form(thr, interval);
    Recorder rec;
    CHECK_EQ(run(lw, params(HaltRule::kCdf, thr, interval), &rec), want);
    // the threshold rule on the same q never waits: 0.3 > thr or never
    CHECK_EQ(run(lw, params(HaltRule::kThreshold, thr, interval)), 0.3 > thr ? std::min(interval, kB) : kB);
    // q is read (and reported) exactly on the evaluated loops
    for (size_t r = 0; r < rec.value.size(); ++r) {
      CAPTURE(r);
      if ((int(r) + 1) % interval == 0 && int(r) + 1 < kB) CHECK_EQ(rec.value[r], doctest::Approx(0.3).epsilon(1e-6));
      else CHECK(std::isnan(rec.value[r]));
    }
  }
  // values spot-checked against the list above: 0.51 > 0.45 at k = 2; 0.83193 > 0.8 at k = 5;
  // every third loop, k = 2 evaluations happen at loop 6
  CHECK_EQ(closed_form(0.45, 1), 2);
  CHECK_EQ(closed_form(0.8, 1), 5);
  CHECK_EQ(closed_form(0.45, 3), 6);
}

TEST_CASE("[loopus] halting: cdf clamps the hazard to 1 - 1e-7") {
  // q = 1 exactly: unclamped, 1 - (1 - q) = 1 beats any threshold < 1 after one loop;
  // clamped, 1 - 1e-7 stays below the largest float under 1 (1 - 2^-24), and the
  // second loop's 1 - 1e-14 passes it.
  auto lw = with_q_head(constant_q(0.5));
  auto q1 = std::make_shared<ConfidenceHead>(*constant_q(0.5));
  q1->b = 60.f;  // sigmoid(60) is 1.0f
  lw->q_head = q1;
  Tensor<Cpu> zero({64});
  Ops<Cpu>::fill(zero.span(), 0.f);
  REQUIRE_EQ(q1->prob<Cpu>(zero.span()), 1.f);
  const float thr = std::nextafter(1.f, 0.f);
  REQUIRE_GT(double(thr), 1 - 1e-7);
  CHECK_EQ(run(lw, params(HaltRule::kCdf, thr)), 2);
  CHECK_EQ(run(lw, params(HaltRule::kCdf, 0.9999f)), 1);
}

TEST_CASE("[loopus] halting: threshold and cdf on a state-dependent q, on the state and on the delta, every interval") {
  auto q = varying_q();
  auto lw = with_q_head(q);
  // The trajectory does not depend on the halting rule: record it once with all B loops.
  Recorder traj;
  run(lw, params(HaltRule::kFixed, 0.5f), &traj);
  REQUIRE_EQ(traj.h.size(), size_t(kB));
  // The loop input of the last token at loop 0 is the encoder output: a zero gate keeps h = h0.
  Recorder zero;
  run(lw, params(HaltRule::kFixed, 0.5f), &zero, 0.f);
  std::vector<double> q_state, q_delta;
  for (int r = 0; r < kB; ++r) {
    const std::vector<float>& h_in = r == 0 ? zero.h[0] : traj.h[size_t(r - 1)];
    std::vector<float> delta(64);
    for (size_t i = 0; i < 64; ++i) delta[i] = traj.p[size_t(r)][i] - h_in[i];
    q_state.push_back(q_by_hand(*q, traj.h[size_t(r)]));
    q_delta.push_back(q_by_hand(*q, delta));
  }
  // the two inputs give clearly different q, so the test tells them apart
  double q_apart = 0;
  for (int r = 0; r < kB; ++r) q_apart = std::max(q_apart, std::abs(q_state[size_t(r)] - q_delta[size_t(r)]));
  CHECK_GT(q_apart, 0.02);

  std::set<int> seen;
  int cases = 0;
  for (QInput in : {QInput::kState, QInput::kDelta})
    for (bool cdf : {false, true})
      for (int interval : {1, 2, 3})
        for (int min_loops : {1, 3}) {
          if (cdf && min_loops > 1) continue;  // see the min_loops test: its cdf meaning is not pinned down
          const std::vector<double>& qs = in == QInput::kState ? q_state : q_delta;
          // the quantities the rule compares with its threshold, to keep thresholds off them
          std::vector<double> xs;
          double survive = 1;
          for (int r = 0; r < kB; ++r)
            if (q_checked(r, interval)) {
              survive *= 1 - qs[size_t(r)];
              xs.push_back(cdf ? 1 - survive : qs[size_t(r)]);
            }
          for (double thr : thresholds_between(xs, 1e-4, 0.0, 1.0)) {
            CAPTURE(int(in));
            CAPTURE(cdf);
            CAPTURE(interval);
            CAPTURE(min_loops);
            CAPTURE(thr);
            const int want = expected_q_loops(qs, cdf, thr, interval, min_loops);
            Recorder rec;
            const int got = run(lw, params(cdf ? HaltRule::kCdf : HaltRule::kThreshold, float(thr), interval,
                                           min_loops, in), &rec);
            CHECK_EQ(got, want);
            REQUIRE_EQ(rec.value.size(), size_t(got));
            for (int r = 0; r < got; ++r) {
              CAPTURE(r);
              // the loop reports q exactly where the rule reads it (the last loop needs no decision)
              const bool read = q_checked(r, interval) && r + 1 >= min_loops && r + 1 < kB;
              if (read) CHECK_EQ(double(rec.value[size_t(r)]), doctest::Approx(qs[size_t(r)]).epsilon(1e-5));
              else CHECK(std::isnan(rec.value[size_t(r)]));
            }
            seen.insert(got);
            ++cases;
          }
        }
  CHECK_GT(cases, 40);
  CHECK_GE(seen.size(), 4u);  // the thresholds drove the loop to stop at several different depths
}

TEST_CASE("[loopus] halting: min_loops forbids stopping earlier") {
  // q = 0.9 every loop: q:0.6 stops after loop 1 unless min_loops holds it back
  auto lw = with_q_head(constant_q(0.9));
  for (int min_loops : {1, 2, 3, 5, 8, 12}) {
    CAPTURE(min_loops);
    CHECK_EQ(run(lw, params(HaltRule::kThreshold, 0.6f, 1, min_loops)), std::min(min_loops, kB));
    // with q evaluated every third loop: the first evaluated loop at or after min_loops
    const int third = std::min(kB, (std::max(min_loops, 1) + 2) / 3 * 3);
    CHECK_EQ(run(lw, params(HaltRule::kThreshold, 0.6f, 3, min_loops)), third);
  }
  // q = 0.1 never reaches 0.6: min_loops does not make it stop
  CHECK_EQ(run(with_q_head(constant_q(0.1)), params(HaltRule::kThreshold, 0.6f, 1, 3)), kB);
}

TEST_CASE("[loopus] halting: KL between successive decoded distributions, from logits of fixed-B models") {
  auto lw = with_q_head(nullptr);
  // p_r: the next-token distribution after r + 1 loops = the final logits of a fixed (r + 1)-loop model
  std::vector<std::vector<double>> logp;
  for (int b = 1; b <= kB; ++b) {
    LoopParams lp;
    lp.halting.max_loops = b;
    Model m(lw, lp, {.n_ctx = 64}, FixedMixGate(kAlpha));
    std::vector<float> logits(512);
    m.eval(kPrompt, logits.data());
    double mx = -INFINITY, z = 0;
    for (float x : logits) mx = std::max(mx, double(x));
    for (float x : logits) z += std::exp(double(x) - mx);
    std::vector<double> lp_b;
    for (float x : logits) lp_b.push_back(double(x) - mx - std::log(z));
    logp.push_back(std::move(lp_b));
  }
  std::vector<double> kl(kB, INFINITY);  // kl[r]: KL(p_{r-1} || p_r), defined from r = 1
  for (int r = 1; r < kB; ++r) {
    double s = 0;
    for (size_t i = 0; i < 512; ++i) s += std::exp(logp[size_t(r - 1)][i]) * (logp[size_t(r - 1)][i] - logp[size_t(r)][i]);
    kl[size_t(r)] = s;
  }
  auto expected = [&](double eps, int min_loops) {
    for (int r = 1; r + 1 < kB; ++r)
      if (r + 1 >= min_loops && kl[size_t(r)] < eps) return r + 1;
    return kB;
  };
  // the values the loop reports are these KLs
  Recorder all;
  CHECK_EQ(run(lw, params(HaltRule::kKl, 1e-30f), &all), kB);
  REQUIRE_EQ(all.value.size(), size_t(kB));
  for (int r = 1; r + 1 < kB; ++r) {
    CAPTURE(r);
    CHECK_EQ(double(all.value[size_t(r)]), doctest::Approx(kl[size_t(r)]).epsilon(1e-3).scale(0));
  }
  CHECK(std::isnan(all.value[kB - 1]));  // no decision after the last loop
  // the KLs vary enough for thresholds between them to pick different loops
  std::vector<double> xs(kl.begin() + 1, kl.end() - 1);
  std::set<int> seen;
  for (double eps : thresholds_between(xs, 0, 0, INFINITY)) {
    bool clear = true;
    for (double x : xs) clear = clear && std::abs(eps - x) > 1e-2 * x;
    if (!clear) continue;
    for (int min_loops : {1, 4}) {
      CAPTURE(eps);
      CAPTURE(min_loops);
      const int want = expected(eps, min_loops);
      CHECK_EQ(run(lw, params(HaltRule::kKl, float(eps), 1, min_loops)), want);
      seen.insert(want);
    }
  }
  CHECK_GE(seen.size(), 3u);
}

// ---- the `latest` exit fill ----

// LoopedModel does not expose its reasoning KV cache. An explicit instantiation
// may name a private member ([temp.spec.general]/6), so this test reads it
// without a library change.
struct ReasoningKv {
  using type = KvCache<Cpu> Model::*;
  friend type member(ReasoningKv);
};
template <class Tag, typename Tag::type M>
struct Expose {
  friend typename Tag::type member(Tag) { return M; }
};
template struct Expose<ReasoningKv, &Model::rea_>;

TEST_CASE("[loopus] exit fill latest: a token that exits at depth e < B leaves depth e-1's rows at every deeper depth") {
  auto lw = with_q_head(nullptr);
  const int nM = 3;
  const int64_t kvd = stories()->hp.kv_dim();
  PerDepthCache pc;
  pc.exit_fill = ExitFill::kLatest;  // explicit: the default is not what this test is about
  Model m(lw, params(HaltRule::kConvergence, 2.0f), {.n_ctx = 64}, FixedMixGate(kAlpha), pc);
  KvCache<Cpu>& kv = m.*member(ReasoningKv{});
  REQUIRE_EQ(kv.n_slot(), nM * kB);
  std::vector<float> logits(512);
  const std::vector<int32_t> prompt = {1, 403, 407};
  m.eval(prompt, logits.data());
  std::vector<int> exit_at(prompt.size(), m.last_loops());  // the prompt's tokens share one depth
  const std::vector<int32_t> steps = {261, 378, 290, 17, 448, 259, 411, 302, 288, 266, 275, 300, 416, 313, 280, 270};
  for (int32_t tok : steps) {
    m.eval(std::span<const int32_t>(&tok, 1), logits.data());
    exit_at.push_back(m.last_loops());
  }
  auto rows_equal = [&](int slot_a, int slot_b, size_t t) {
    const LayerKv<Cpu> a = kv.slot(slot_a), b = kv.slot(slot_b);
    auto host = [&](CSpan<Cpu> s) {
      std::vector<float> v(static_cast<size_t>(kvd));
      Ops<Cpu>::download(s.rows(int64_t(t), 1, kvd), v.data());
      return v;
    };
    return host(a.k) == host(b.k) && host(a.v) == host(b.v);
  };
  int early = 0, full = 0;
  for (size_t t = 0; t < exit_at.size(); ++t) {
    const int e = exit_at[t];
    CAPTURE(t);
    CAPTURE(e);
    for (int j = 0; j < nM; ++j) {
      CAPTURE(j);
      for (int r = e; r < kB; ++r) {
        CAPTURE(r);
        CHECK(rows_equal(pc.slot(j, r, nM), pc.slot(j, e - 1, nM), t));
      }
      // depths the token did run hold their own rows (computed, so not all alike)
      if (e >= 2) CHECK_FALSE(rows_equal(pc.slot(j, e - 1, nM), pc.slot(j, e - 2, nM), t));
    }
    early += e < kB;
    full += e == kB;
  }
  CHECK_GT(early, 2);  // conv:2.0 does exit early here, at several tokens ...
  CHECK_GT(full, 0);   // ... and not at all of them
  for (int i = 0; i < kv.n_slot(); ++i) CHECK_EQ(kv.begin(i), 0);  // latest keeps every token visible
}
