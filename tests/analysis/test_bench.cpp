// Speed benchmark driver and KV cache accounting: bytes per token against the caches models really
// allocate, the measured decode loop, the order and fields of the rows, the reports.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "loopus/analysis/bench.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;

namespace {

/// Logits with their maximum at (last fed id + 1) % V; records what was fed.
struct CountingModel {
  int V = 50;
  int resets = 0;
  std::vector<std::vector<int32_t>> calls;
  void reset() { ++resets; }
  int n_vocab() const { return V; }
  void eval(std::span<const int32_t> ids, float* logits, bool = false) {
    calls.emplace_back(ids.begin(), ids.end());
    for (int i = 0; i < V; ++i) logits[i] = 0.f;
    logits[(ids.back() + 1) % V] = 1.f;
  }
  int last_loops() const { return 2; }
};

}  // namespace

TEST_CASE("[loopus] analysis: KV bytes per token, against the caches the models allocate") {
  SynthParams p = test::tiny_params(5);  // 4 layers, 2 KV heads of 4 dims: 8 floats per K or V row
  auto w = synth_weights(p);
  CHECK(analysis::kv_row_bytes(w->hp) == 8 * 2 * 4);
  CHECK(analysis::kv_bytes_per_token(w->hp) == 4 * 64);

  ContextParams cp;
  cp.n_ctx = 20;
  CausalLM<Cpu> lm(w, cp);
  CHECK(analysis::kv_cache_bytes(lm) == 20 * analysis::kv_bytes_per_token(w->hp));

  auto lw = recast(w, LayerSplit::from_specs("0..0", "3..3", 4));  // encoder 1, reasoning 2, decoder 1
  CHECK(analysis::looped_kv_bytes_per_token(*lw, "per-depth", 3) == (1 + 2 * 3 + 1) * 64);
  CHECK(analysis::looped_kv_bytes_per_token(*lw, "shared", 3) == (1 + 2 + 1) * 64);
  CHECK(analysis::looped_kv_bytes_per_token(*lw, "none", 3) == (1 + 2 + 1) * 64);
  CHECK_THROWS_AS(analysis::looped_kv_bytes_per_token(*lw, "pooled", 3), Error);
  for (std::string cache : {"per-depth", "shared", "none"}) {
    LoopRunSpec spec;
    spec.loops = 3;
    spec.cache = cache;
    spec.gate = "none";
    with_looped_model<Cpu>(lw, spec, cp, [&](auto& m) {
      CHECK(m.cache_bytes_per_token() == analysis::looped_kv_bytes_per_token(*lw, cache, 3));
      CHECK(analysis::kv_cache_bytes(m) == 20 * analysis::looped_kv_bytes_per_token(*lw, cache, 3));
    });
  }
}

TEST_CASE("[loopus] analysis: measure_speed prefills, then decodes greedily, reps times") {
  const auto prompt = analysis::bench_prompt(6, 50);
  CHECK(prompt.size() == 6);
  CHECK(prompt[0] == 1);
  CHECK(prompt[1] == 1 + 7919 % 49);
  CHECK(std::all_of(prompt.begin(), prompt.end(), [](int32_t id) { return id >= 1 && id < 50; }));

  CountingModel m;
  const auto row = analysis::measure_speed(m, 6, 4, 3);
  CHECK(m.resets == 3);
  REQUIRE(m.calls.size() == 3 * 5);
  CHECK(m.calls[0] == prompt);
  // each decoded token is the argmax of the previous logits: the successor of the last fed id
  int32_t last = prompt.back();
  for (int i = 1; i <= 4; ++i) {
    REQUIRE(m.calls[size_t(i)].size() == 1);
    CHECK(m.calls[size_t(i)][0] == (last + 1) % 50);
    last = m.calls[size_t(i)][0];
  }
  CHECK(row.n_prompt == 6);
  CHECK(row.n_gen == 4);
  CHECK(row.mean_loops == 2);
  CHECK(row.prompt_tps > 0);
  CHECK(row.gen_tps > 0);
  CHECK(row.ms_per_token == doctest::Approx(1e3 / row.gen_tps));
}

TEST_CASE("[loopus] analysis: run_bench measures the plan in order, reports") {
  auto lw = recast(synth_weights(test::tiny_params(9)), LayerSplit::from_specs("0..0", "3..3", 4));
  analysis::BenchPlan plan;
  plan.loops = {1, 2};
  plan.n_gen = {2, 3};
  plan.caches = {"per-depth", "plain", "shared"};
  plan.n_prompt = 4;
  plan.spec.gate = "none";
  int seen = 0;
  const auto rows = analysis::run_bench<Cpu>(lw, plan, [&](const analysis::BenchRow&) { ++seen; });
  REQUIRE(rows.size() == 10);
  CHECK(seen == 10);
  const std::vector<std::pair<std::string, int>> order = {
      {"plain", 1}, {"per-depth", 1}, {"shared", 1}, {"per-depth", 2}, {"shared", 2}};
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    CAPTURE(i);
    CHECK(r.cache == order[i % 5].first);
    CHECK(r.loops == order[i % 5].second);
    CHECK(r.n_gen == (i < 5 ? 2 : 3));
    CHECK(r.n_prompt == 4);
    CHECK(r.mean_loops == r.loops);  // halting "auto" is benchmarked as fixed
    const size_t per_token = r.cache == "plain" ? analysis::kv_bytes_per_token(lw->base->hp)
                                                : analysis::looped_kv_bytes_per_token(*lw, r.cache, r.loops);
    CHECK(r.cache_bytes == per_token * size_t(4 + r.n_gen + 1));
  }

  const auto j = analysis::bench_json(rows);
  REQUIRE(j.size() == 10);
  for (const char* k : {"cache", "loops", "n_prompt", "n_gen", "prompt_tokens_per_s", "gen_tokens_per_s",
                        "ms_per_token", "mean_loops", "cache_bytes"})
    CHECK(j[0].contains(k));
  CHECK(j[0].size() == 9);
  CHECK(j[1]["cache"] == "per-depth");

  std::istringstream csv(analysis::bench_csv(rows));
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(csv, line)) lines.push_back(line);
  REQUIRE(lines.size() == 11);
  CHECK(lines[0] ==
        "cache,loops,n_prompt,n_gen,prompt_tokens_per_s,gen_tokens_per_s,ms_per_token,mean_loops,cache_bytes");
  CHECK(lines[1].rfind("plain,1,4,2,", 0) == 0);
  CHECK(lines[10].rfind("shared,2,4,3,", 0) == 0);

  const std::string svg = analysis::bench_svg(rows);
  CHECK(svg.find("<svg") != std::string::npos);
  CHECK(svg.find("per-depth, B=2") != std::string::npos);
  CHECK(svg.find("plain, B=1") != std::string::npos);
}
