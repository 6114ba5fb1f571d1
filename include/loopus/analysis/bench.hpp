// Speed measurement of plain and looped models (prompt and generation tokens/s, ms/token, loops/token)
// across loop counts, generated lengths and cache policies, and the KV cache size each one holds.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/analysis/svg_plot.hpp"
#include "loopus/core/error.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/model/hparams.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/model/looped_weights.hpp"

namespace loopus::analysis {

// ---- KV cache accounting (f32 K and V rows, as KvCache stores them)

/// Bytes one token occupies in one layer's cache: K and V rows of kv_dim floats.
inline size_t kv_row_bytes(const HParams& hp) { return size_t(hp.kv_dim()) * 2 * sizeof(float); }

/// Bytes of KV cache per token of the plain model (every layer once).
inline size_t kv_bytes_per_token(const HParams& hp) { return size_t(hp.n_layer) * kv_row_bytes(hp); }

/// Bytes of KV cache per token of a looped model with `loops` iterations:
/// encoder and decoder layers once each; the reasoning layers once per depth
/// ("per-depth") or once ("shared", and "none", which keeps one scratch slot per
/// layer and recomputes). Throws Error for another cache name.
inline size_t looped_kv_bytes_per_token(const LoopedWeights& lw, const std::string& cache, int loops) {
  const size_t nE = lw.split.encoder.size(), nM = lw.split.reasoning.size(), nD = lw.split.decoder.size();
  size_t depths = 1;
  if (cache == "per-depth") depths = size_t(loops);
  else if (cache != "shared" && cache != "none")
    throw UsageError("cache must be per-depth, shared or none, got '" + cache + "'");
  return (nE + nM * depths + nD) * kv_row_bytes(lw.base->hp);
}

/// Bytes a model's KV caches hold now (CausalLM: its cache; LoopedModel: all of them).
template <class Model>
size_t kv_cache_bytes(const Model& m) {
  if constexpr (requires { m.cache_bytes(); }) return m.cache_bytes();
  else return m.cache().bytes();
}

// ---- timing

/// One measured configuration.
struct BenchRow {
  std::string cache;  ///< per-depth, shared, none, or plain (the original model)
  int loops = 0;      ///< B (1 for plain)
  int n_prompt = 0, n_gen = 0;
  double prompt_tps = 0;    ///< prefill tokens/s
  double gen_tps = 0;       ///< decode tokens/s
  double ms_per_token = 0;  ///< decode ms/token
  double mean_loops = 0;    ///< loops per generated token (1 for plain)
  size_t cache_bytes = 0;   ///< KV cache bytes allocated for n_prompt + n_gen + 1 tokens

  nlohmann::json json() const {
    return {{"cache", cache},
            {"loops", loops},
            {"n_prompt", n_prompt},
            {"n_gen", n_gen},
            {"prompt_tokens_per_s", prompt_tps},
            {"gen_tokens_per_s", gen_tps},
            {"ms_per_token", ms_per_token},
            {"mean_loops", mean_loops},
            {"cache_bytes", cache_bytes}};
  }
};

/// The synthetic prompt the benchmark feeds: n ids spread over 1..n_vocab-1 (never 0).
inline std::vector<int32_t> bench_prompt(int n, int n_vocab) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) p[size_t(i)] = int32_t(1 + (int64_t(i) * 7919) % (n_vocab - 1));
  return p;
}

/// Prefills n_prompt tokens (bench_prompt), then decodes n_gen tokens
/// greedily, `reps` times from a reset model; the median time of each phase.
/// Fills the timing fields and mean_loops (0 for a model that does not report
/// loops); cache, loops and cache_bytes are left to the caller.
template <class Model>
BenchRow measure_speed(Model& m, int n_prompt, int n_gen, int reps) {
  using clock = std::chrono::steady_clock;
  if (n_prompt < 1 || n_gen < 1 || reps < 1) throw UsageError("bench: n_prompt, n_gen and reps must be >= 1");
  std::vector<float> logits(static_cast<size_t>(m.n_vocab()));
  const std::vector<int32_t> prompt = bench_prompt(n_prompt, m.n_vocab());
  std::vector<double> pp, tg;
  double loops_sum = 0;
  for (int r = 0; r < reps; ++r) {
    m.reset();
    auto t0 = clock::now();
    m.eval(prompt, logits.data());
    pp.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    auto t1 = clock::now();
    double lsum = 0;
    for (int i = 0; i < n_gen; ++i) {
      const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      m.eval(std::span<const int32_t>(&id, 1), logits.data());
      if constexpr (ReportsLoops<Model>) lsum += m.last_loops();
    }
    tg.push_back(std::chrono::duration<double>(clock::now() - t1).count());
    loops_sum = lsum;
  }
  std::sort(pp.begin(), pp.end());
  std::sort(tg.begin(), tg.end());
  BenchRow row;
  row.n_prompt = n_prompt;
  row.n_gen = n_gen;
  row.prompt_tps = n_prompt / pp[pp.size() / 2];
  row.gen_tps = n_gen / tg[tg.size() / 2];
  row.ms_per_token = 1e3 * tg[tg.size() / 2] / n_gen;
  row.mean_loops = loops_sum / n_gen;
  return row;
}

/// What run_bench() measures: every generated length, and for each the plain
/// model (when `plain`, or "plain" is among the caches) and then every loop
/// count x cache policy.
struct BenchPlan {
  std::vector<int> loops{1, 8};
  std::vector<int> n_gen{64, 256};
  std::vector<std::string> caches{"per-depth", "shared", "none"};  ///< may include "plain"
  int n_prompt = 16;
  int reps = 1;
  bool plain = false;
  LoopRunSpec spec;  ///< gate, halting (auto: fixed), ...; loops and cache come from the lists above
};

/// Runs the plan on the Backend; on_row sees each row as soon as it is measured.
template <class Backend>
std::vector<BenchRow> run_bench(std::shared_ptr<const LoopedWeights> lw, const BenchPlan& plan,
                                const std::function<void(const BenchRow&)>& on_row = {}) {
  std::vector<BenchRow> rows;
  auto emit = [&](const BenchRow& r) {
    rows.push_back(r);
    if (on_row) on_row(r);
  };
  const bool plain = plan.plain || std::find(plan.caches.begin(), plan.caches.end(), "plain") != plan.caches.end();
  for (int n : plan.n_gen) {
    ContextParams cp;
    cp.n_ctx = plan.n_prompt + n + 1;
    if (plain) {
      CausalLM<Backend> lm(lw->base, cp);
      BenchRow r = measure_speed(lm, plan.n_prompt, n, plan.reps);
      r.cache = "plain";
      r.loops = 1;
      r.mean_loops = 1;
      r.cache_bytes = kv_cache_bytes(lm);
      emit(r);
    }
    for (int B : plan.loops)
      for (const auto& c : plan.caches) {
        if (c == "plain") continue;
        LoopRunSpec spec = plan.spec;
        spec.loops = B;
        spec.cache = c;
        if (spec.halt == "auto") spec.halt = "fixed";
        with_looped_model<Backend>(lw, spec, cp, [&](auto& lm) {
          BenchRow r = measure_speed(lm, plan.n_prompt, n, plan.reps);
          r.cache = c;
          r.loops = B;
          r.cache_bytes = kv_cache_bytes(lm);
          emit(r);
        });
      }
  }
  return rows;
}

// ---- reports

/// The rows as a JSON array of BenchRow::json() objects.
inline nlohmann::json bench_json(const std::vector<BenchRow>& rows) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rows) arr.push_back(r.json());
  return arr;
}

/// The rows as CSV with a header line (the JSON keys).
inline std::string bench_csv(const std::vector<BenchRow>& rows) {
  std::ostringstream f;
  f << "cache,loops,n_prompt,n_gen,prompt_tokens_per_s,gen_tokens_per_s,ms_per_token,mean_loops,cache_bytes\n";
  for (const auto& r : rows)
    f << r.cache << ',' << r.loops << ',' << r.n_prompt << ',' << r.n_gen << ',' << r.prompt_tps << ',' << r.gen_tps
      << ',' << r.ms_per_token << ',' << r.mean_loops << ',' << r.cache_bytes << '\n';
  return f.str();
}

/// An SVG chart of seconds per generated token against generated tokens, one line per (cache, loops).
inline std::string bench_svg(const std::vector<BenchRow>& rows) {
  std::map<std::string, Series> by;
  for (const auto& r : rows) {
    const std::string key = r.cache + ", B=" + std::to_string(r.loops);
    auto& s = by[key];
    s.label = key;
    s.x.push_back(r.n_gen);
    s.y.push_back(r.ms_per_token / 1e3);
  }
  std::vector<Series> series;
  for (auto& [k, s] : by) series.push_back(s);
  PlotSpec ps;
  ps.title = "Seconds per generated token vs generated length";
  ps.x_label = "generated tokens";
  ps.y_label = "seconds / token";
  ps.log_y = true;
  return svg_line_chart(series, ps);
}

}  // namespace loopus::analysis
