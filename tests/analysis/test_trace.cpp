// The loop probe (LoopObserver) and thinking traces: what the observer sees equals what the model computes, and
// observing changes nothing.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/analysis/trace.hpp"
#include "loopus/analysis/trace_report.hpp"
#include "loopus/core/random.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

constexpr int kTraceB = 4;
const std::vector<int32_t> kTracePrompt = {1, 403, 407, 261, 378, 290};

std::shared_ptr<const ModelWeights> trace_stories() {
  static auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  return w;
}

/// stories260K as E = layer 0, M = layers 1-3, D = layer 4 with a seeded official-init gate and a q head.
std::shared_ptr<LoopedWeights> trace_looped() {
  auto lw = recast(trace_stories(), LayerSplit::from_specs("0..0", "4..4", 5));
  SplitMix64 rng(5);
  lw->gate = std::make_shared<SelectiveGateWeights>(
      SelectiveGateWeights::official_init(64, [&] { return rng.uniform(); }));
  auto q = std::make_shared<ConfidenceHead>();
  q->d = 64;
  for (int i = 0; i < 64; ++i) {
    q->ln_w.push_back(float(0.5 + rng.uniform()));
    q->ln_b.push_back(float(0.2 * (rng.uniform() - 0.5)));
    q->w.push_back(float(0.6 * (rng.uniform() - 0.5)));
  }
  lw->q_head = q;
  return lw;
}

LoopParams trace_params() {
  LoopParams lp;
  lp.halting.max_loops = kTraceB;
  return lp;
}

/// Keeps copies of every event.
struct EventLog : LoopObserver {
  LoopObserveOptions opt;
  struct Copy {
    int64_t pos, n, d;
    int loop;
    float q;
    std::vector<float> h_in, p, h, a, q_rows, logprobs, last_h;
  };
  std::vector<Copy> ev;
  LoopObserveOptions wants() const override { return opt; }
  void on_loop(const LoopEvent& e) override {
    const size_t nd = size_t(e.rows.n * e.d);
    Copy c{e.pos,
           e.rows.n,
           e.d,
           e.loop,
           e.q,
           {e.rows.h_in, e.rows.h_in + nd},
           {e.rows.p, e.rows.p + nd},
           {e.rows.h, e.rows.h + nd},
           {e.rows.a, e.rows.a + nd},
           {e.rows.q, e.rows.q + e.rows.n},
           {},
           {e.h, e.h + e.d}};
    if (e.logprobs) c.logprobs.assign(e.logprobs, e.logprobs + e.n_vocab);
    ev.push_back(std::move(c));
  }
};

double q_of(const ConfidenceHead& q, const float* x, int64_t d) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < d; ++i) mean += x[i];
  mean /= double(d);
  for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= double(d);
  double s = q.b;
  for (int64_t i = 0; i < d; ++i)
    s += double(q.w[size_t(i)]) * ((x[i] - mean) / std::sqrt(var + 1e-5) * q.ln_w[size_t(i)] + q.ln_b[size_t(i)]);
  return 1 / (1 + std::exp(-s));
}

std::vector<float> log_softmax_of(const float* x, int64_t n) {
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(x[i]));
  for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - mx);
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = float(double(x[i]) - mx - std::log(z));
  return out;
}

/// Runs the prompt and one more token with and without an observer; the logits must be identical, and
/// what the observer saw must match the gate's rule, the q head and the final decode.
template <class Cache>
void check_probe(bool all_rows) {
  auto lw = trace_looped();
  using M = LoopedModel<Cpu, SelectiveGate, Cache>;
  const int64_t V = 512, d = 64;
  M plain(lw, trace_params(), {.n_ctx = 32}, SelectiveGate(lw->gate));
  M probed(lw, trace_params(), {.n_ctx = 32}, SelectiveGate(lw->gate));
  EventLog log;
  log.opt = {.all_rows = all_rows, .decode = true};
  probed.set_observer(&log);
  std::vector<float> a(static_cast<size_t>(V)), b(static_cast<size_t>(V));
  for (int step = 0; step < 2; ++step) {
    const std::vector<int32_t> ids = step == 0 ? kTracePrompt : std::vector<int32_t>{290};
    log.ev.clear();
    plain.eval(ids, a.data());
    probed.eval(ids, b.data());
    CHECK(a == b);  // observing, decoding probes included, changes nothing
    REQUIRE(log.ev.size() == size_t(kTraceB));
    const int64_t n_call = Cache::kRecompute ? int64_t(kTracePrompt.size()) + step : int64_t(ids.size());
    for (int r = 0; r < kTraceB; ++r) {
      const auto& e = log.ev[size_t(r)];
      CHECK(e.loop == r);
      CHECK(e.pos == int64_t(kTracePrompt.size()) - 1 + step);
      CHECK(e.n == (all_rows ? n_call : 1));
      CHECK(e.d == d);
      // h = a p + (1 - a) h_in on every row and channel, a in (0, 1]
      double worst = 0;
      for (size_t i = 0; i < e.h.size(); ++i) {
        CHECK(e.a[i] > 0.f);
        CHECK(e.a[i] <= 1.f);
        worst = std::max(worst, std::abs(double(e.a[i]) * e.p[i] + (1 - double(e.a[i])) * e.h_in[i] - e.h[i]));
      }
      CHECK(worst < 1e-4);
      // the next iteration starts from this one's state
      if (r > 0) CHECK(e.h_in == log.ev[size_t(r - 1)].h);
      for (int64_t i = 0; i < e.n; ++i)
        CHECK(e.q_rows[size_t(i)] == doctest::Approx(q_of(*lw->q_head, e.h.data() + i * d, d)).epsilon(1e-5));
      CHECK(e.q == e.q_rows.back());
      CHECK(std::equal(e.last_h.begin(), e.last_h.end(), e.h.end() - d));
    }
    // the last iteration's decoded distribution is the model's final one
    const auto final_lp = log_softmax_of(b.data(), V);
    const auto& lp = log.ev.back().logprobs;
    REQUIRE(lp.size() == size_t(V));
    double worst = 0;
    for (int64_t i = 0; i < V; ++i) worst = std::max(worst, double(std::abs(lp[size_t(i)] - final_lp[size_t(i)])));
    CHECK(worst < 1e-4);
  }
}

}  // namespace

TEST_CASE("LoopObserver: the probe sees h_in, p, a, h, q and the decoded state, and changes no output") {
  SUBCASE("per-depth cache, last row") { check_probe<PerDepthCache>(false); }
  SUBCASE("per-depth cache, all rows") { check_probe<PerDepthCache>(true); }
  SUBCASE("shared cache, all rows") { check_probe<SharedCache>(true); }
  SUBCASE("no cache (whole sequence per call), all rows") { check_probe<NoCache>(true); }
}

TEST_CASE("LoopObserver: an observer does not see batched scoring, and removing it stops reports") {
  auto lw = trace_looped();
  LoopedModel<Cpu, SelectiveGate, PerDepthCache> m(lw, trace_params(), {.n_ctx = 32}, SelectiveGate(lw->gate));
  EventLog log;
  m.set_observer(&log);
  std::vector<float> logits(512 * 6);
  const TokenRun run{6, 0, 0, 0, 6};
  m.eval_runs(kTracePrompt, std::span<const TokenRun>(&run, 1), logits.data());
  CHECK(log.ev.empty());
  m.eval(kTracePrompt, logits.data());
  CHECK(log.ev.size() == size_t(kTraceB));
  m.set_observer(nullptr);
  m.reset();
  m.eval(kTracePrompt, logits.data());
  CHECK(log.ev.size() == size_t(kTraceB));
}

TEST_CASE("record_trace: per token and iteration, geometry and top tokens agree with the generation") {
  auto lw = trace_looped();
  auto tok = io::open_tokenizer_file(test::data_file("models/stories260K/stories260K.gguf"));
  LoopedModel<Cpu, SelectiveGate, PerDepthCache> m(lw, trace_params(), {.n_ctx = 64}, SelectiveGate(lw->gate));
  analysis::TraceParams tp;
  tp.n_predict = 6;
  tp.stop_at_eos = false;
  const analysis::Trace t = analysis::record_trace(m, *tok, kTracePrompt, tp);
  // the same greedy generation without an observer
  std::vector<int32_t> ids;
  {
    Sampler s(tp.sampler);
    GenerateParams gp;
    gp.n_predict = 6;
    gp.stop_id = -1;
    ids = generate(m, kTracePrompt, gp, s, [](int32_t) {}).ids;
  }
  REQUIRE(t.tokens.size() == 6);
  CHECK(t.d == 64);
  CHECK(t.max_loops == kTraceB);
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    const auto& k = t.tokens[i];
    CHECK(k.id == ids[i]);
    CHECK(k.pos == int64_t(kTracePrompt.size() + i) - 1);
    REQUIRE(k.loops == kTraceB);
    REQUIRE(k.iters.size() == size_t(kTraceB + 1));
    REQUIRE(k.states.size() == size_t((kTraceB + 1) * 64));
    REQUIRE(k.alpha.size() == size_t(kTraceB * 64));
    // greedy: the last iteration's top token is the chosen one
    REQUIRE(k.iters.back().top.size() == 5);
    CHECK(k.iters.back().top[0].id == k.id);
    for (size_t j = 1; j < 5; ++j) CHECK(k.iters.back().top[j - 1].p >= k.iters.back().top[j].p);
    CHECK(k.iters.back().cos_final == doctest::Approx(1.0));
    for (int r = 1; r <= kTraceB; ++r) {
      double dd = 0, n0 = 0;
      for (int c = 0; c < 64; ++c) {
        const double x = double(k.states[size_t(r * 64 + c)]) - double(k.states[size_t((r - 1) * 64 + c)]);
        dd += x * x;
        n0 += double(k.states[size_t((r - 1) * 64 + c)]) * k.states[size_t((r - 1) * 64 + c)];
      }
      CHECK(k.iters[size_t(r)].delta == doctest::Approx(std::sqrt(dd)).epsilon(1e-9));
      CHECK(k.iters[size_t(r)].delta_rel == doctest::Approx(std::sqrt(dd / n0)).epsilon(1e-9));
      CHECK(k.iters[size_t(r)].alpha.min <= k.iters[size_t(r)].alpha.q1);
      CHECK(k.iters[size_t(r)].alpha.q3 <= k.iters[size_t(r)].alpha.max);
      CHECK(std::isfinite(k.iters[size_t(r)].q));
    }
  }
  // the report: every file written, trace.json readable, states.f32 the right size
  const auto dir = test::temp_dir("trace_report");
  analysis::TraceInfo info;
  info.model = "stories260K <recast>";
  const auto files = analysis::write_trace_report(dir.string(), t, *tok, info);
  CHECK(files.size() == 9);
  for (const auto& f : files) CHECK(std::filesystem::file_size(dir / f) > 0);
  CHECK(std::filesystem::file_size(dir / "states.f32") == size_t(6 * (kTraceB + 1) * 64 * 4));
  const auto j = nlohmann::json::parse(test::read_text(dir / "trace.json"));
  CHECK(j["tokens"].size() == 6);
  CHECK(j["tokens"][0]["iterations"].size() == size_t(kTraceB + 1));
  CHECK(j["tokens"][2]["state_row"] == 2 * (kTraceB + 1));
  const std::string svg = test::read_text(dir / "trajectory.svg");
  CHECK(svg.find("<svg") != std::string::npos);
  CHECK(svg.find("stories260K &lt;recast&gt;") == std::string::npos);  // the model name is only in the grid title
  const std::string html = test::read_text(dir / "thinking.html");
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("stories260K &lt;recast&gt;") != std::string::npos);
}

TEST_CASE("record_trace: an early exit records only the loops run") {
  auto lw = trace_looped();
  auto q = std::make_shared<ConfidenceHead>(*lw->q_head);
  std::fill(q->w.begin(), q->w.end(), 0.f);
  q->b = 3.f;  // q = 0.95 on every loop
  lw->q_head = q;
  auto tok = io::open_tokenizer_file(test::data_file("models/stories260K/stories260K.gguf"));
  LoopParams lp = trace_params();
  lp.halting.rule = HaltRule::kThreshold;
  lp.halting.threshold = 0.9f;
  lp.halting.min_loops = 2;
  LoopedModel<Cpu, SelectiveGate, PerDepthCache> m(lw, lp, {.n_ctx = 64}, SelectiveGate(lw->gate));
  analysis::TraceParams tp;
  tp.n_predict = 3;
  tp.stop_at_eos = false;
  const analysis::Trace t = analysis::record_trace(m, *tok, kTracePrompt, tp);
  REQUIRE(t.tokens.size() == 3);
  for (const auto& k : t.tokens) {
    CHECK(k.loops == 2);
    CHECK(k.iters.size() == 3);
    CHECK(std::isnan(k.iters[1].halt_value));  // min_loops = 2: the rule does not look after loop 1
    CHECK(k.iters[2].halt_value == doctest::Approx(k.iters[2].q));
  }
}
