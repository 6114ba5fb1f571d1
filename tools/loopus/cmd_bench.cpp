// loopus bench: prompt/generation speed of plain and looped models across loop counts, lengths and cache policies.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/svg_plot.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/ops/cpu/ops.hpp"

namespace loopus::cli {

namespace {

std::vector<int> parse_int_list(const std::string& s, const std::string& flag) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const int x = std::stoi(item, &used);
      if (used != item.size() || x <= 0) throw std::invalid_argument("");
      v.push_back(x);
    } catch (const std::exception&) {
      throw Error(flag + " '" + s + "': expected a comma-separated list of positive integers");
    }
  }
  if (v.empty()) throw Error(flag + " is empty");
  return v;
}

struct Row {
  std::string cache;
  int loops = 0;
  int n_prompt = 0, n_gen = 0;
  double prompt_tps = 0, gen_tps = 0, ms_per_token = 0, mean_loops = 0;
  size_t cache_bytes = 0;
};

/// Prefill n_prompt tokens, then decode n_gen tokens greedily; median of reps.
template <class Model>
Row measure(Model& m, int n_prompt, int n_gen, int reps) {
  using clock = std::chrono::steady_clock;
  std::vector<float> logits(static_cast<size_t>(m.n_vocab()));
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (int i = 0; i < n_prompt; ++i) prompt[size_t(i)] = int32_t(1 + (i * 7919) % (m.n_vocab() - 1));
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
  Row row;
  row.n_prompt = n_prompt;
  row.n_gen = n_gen;
  row.prompt_tps = n_prompt / pp[pp.size() / 2];
  row.gen_tps = n_gen / tg[tg.size() / 2];
  row.ms_per_token = 1e3 * tg[tg.size() / 2] / n_gen;
  row.mean_loops = loops_sum / n_gen;
  return row;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench",
                                 "llama-bench style speed table: prompt and generation tokens/s, ms/token and KV cache "
                                 "size per loop count, generated length and cache policy");
  struct Args {
    ModelArgs model;
    LoopArgs loop;
    std::string loops_list = "1,8", n_list = "64,256", cache_list = "per-depth,shared,none";
    int n_prompt = 16, reps = 1;
    bool json = false, plain = false;
    std::string csv, svg;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub, /*per_run=*/false);  // bench takes lists of --loops and --cache
  sub->add_option("--loops", a->loops_list, "comma-separated loop counts B (default 1,8)");
  sub->add_option("-n,--n-gen", a->n_list, "comma-separated numbers of generated tokens (default 64,256)");
  sub->add_option("--cache", a->cache_list, "comma-separated cache policies: per-depth, shared, none, plain (the original model, no loop)");
  sub->add_option("-p,--n-prompt", a->n_prompt, "prompt tokens prefilled before generation")->check(CLI::Range(1, 1 << 20));
  sub->add_option("-r,--reps", a->reps, "repetitions (the median is reported)")->check(CLI::Range(1, 100));
  sub->add_flag("--plain", a->plain, "also measure the plain (non-looped) model");
  sub->add_flag("--json", a->json, "print a JSON array of rows instead of the table");
  sub->add_option("--csv", a->csv, "also write the rows as CSV to this file");
  sub->add_option("--svg", a->svg, "also plot ms/token against generated tokens (one line per cache, loops) to this SVG");
  sub->callback([a] {
    a->model.apply_threads();
    const auto loops = parse_int_list(a->loops_list, "--loops");
    const auto ns = parse_int_list(a->n_list, "-n");
    std::vector<std::string> caches;
    {
      std::stringstream ss(a->cache_list);
      for (std::string c; std::getline(ss, c, ',');) caches.push_back(c);
    }
    LoopArgs la = a->loop;
    auto m = open_runnable(a->model, la, /*need_tokenizer=*/false);
    if (!m.looped)
      m.looped = recast(m.plain, LayerSplit::from_specs(la.enc.empty() ? "none" : la.enc,
                                                        la.dec.empty() ? "none" : la.dec, m.plain->hp.n_layer));
    std::vector<Row> rows;
    auto emit = [&](const Row& r) {
      rows.push_back(r);
      if (!a->json)
        std::fprintf(stdout, "| %-9s | %5d | %6d | %6d | %11.2f | %11.2f | %9.3f | %10.2f | %9.2f |\n", r.cache.c_str(),
                     r.loops, r.n_prompt, r.n_gen, r.prompt_tps, r.gen_tps, r.ms_per_token, r.mean_loops,
                     double(r.cache_bytes) / 1048576.0);
      std::fflush(stdout);
    };
    if (!a->json) {
      std::fprintf(stdout, "model: %s | split %s | threads %d\n", a->model.model.c_str(), m.looped->split.text().c_str(),
                   omp_get_max_threads());
      std::fprintf(stdout, "| cache     | loops | prompt |    gen |   pp tok/s  |   tg tok/s  |  ms/tok   | loops/tok  |  cache MB |\n");
      std::fprintf(stdout, "|-----------|------:|-------:|-------:|------------:|------------:|----------:|-----------:|----------:|\n");
    }
    for (int n : ns) {
      ContextParams cp;
      cp.n_ctx = a->n_prompt + n + 1;
      const bool plain = a->plain || std::find(caches.begin(), caches.end(), "plain") != caches.end();
      if (plain) {
        CausalLM<Cpu> lm(m.plain, cp);
        Row r = measure(lm, a->n_prompt, n, a->reps);
        r.cache = "plain";
        r.loops = 1;
        r.mean_loops = 1;
        r.cache_bytes = lm.cache().bytes();
        emit(r);
      }
      for (int B : loops)
        for (const auto& c : caches) {
          if (c == "plain") continue;
          LoopRunSpec spec = la.spec;
          spec.loops = B;
          spec.cache = c;
          if (spec.halt == "auto") spec.halt = "fixed";
          with_looped_model<Cpu>(m.looped, spec, cp, [&](auto& lm) {
            Row r = measure(lm, a->n_prompt, n, a->reps);
            r.cache = c;
            r.loops = B;
            r.cache_bytes = lm.cache_bytes();
            emit(r);
          });
        }
    }
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& r : rows)
      arr.push_back({{"cache", r.cache},
                     {"loops", r.loops},
                     {"n_prompt", r.n_prompt},
                     {"n_gen", r.n_gen},
                     {"prompt_tokens_per_s", r.prompt_tps},
                     {"gen_tokens_per_s", r.gen_tps},
                     {"ms_per_token", r.ms_per_token},
                     {"mean_loops", r.mean_loops},
                     {"cache_bytes", r.cache_bytes}});
    if (a->json) std::printf("%s\n", arr.dump(2).c_str());
    if (!a->csv.empty()) {
      std::ofstream f(a->csv);
      if (!f) throw Error(a->csv + ": cannot write");
      f << "cache,loops,n_prompt,n_gen,prompt_tokens_per_s,gen_tokens_per_s,ms_per_token,mean_loops,cache_bytes\n";
      for (const auto& r : rows)
        f << r.cache << ',' << r.loops << ',' << r.n_prompt << ',' << r.n_gen << ',' << r.prompt_tps << ','
          << r.gen_tps << ',' << r.ms_per_token << ',' << r.mean_loops << ',' << r.cache_bytes << '\n';
    }
    if (!a->svg.empty()) {
      std::map<std::string, analysis::Series> by;
      for (const auto& r : rows) {
        const std::string key = r.cache + ", B=" + std::to_string(r.loops);
        auto& s = by[key];
        s.label = key;
        s.x.push_back(r.n_gen);
        s.y.push_back(r.ms_per_token / 1e3);
      }
      std::vector<analysis::Series> series;
      for (auto& [k, s] : by) series.push_back(s);
      analysis::PlotSpec ps;
      ps.title = "Seconds per generated token vs generated length";
      ps.x_label = "generated tokens";
      ps.y_label = "seconds / token";
      ps.log_y = true;
      std::ofstream f(a->svg);
      if (!f) throw Error(a->svg + ": cannot write");
      f << analysis::svg_line_chart(series, ps);
    }
  });
}

}  // namespace loopus::cli
