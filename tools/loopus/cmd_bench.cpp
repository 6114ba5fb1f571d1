// loopus bench: prompt/generation speed of plain and looped models across loop counts, lengths and cache policies.
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <sstream>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/bench.hpp"

namespace loopus::cli {

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
    BackendArgs backend;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub, /*per_run=*/false);  // bench takes lists of --loops and --cache
  sub->add_option("--loops", a->loops_list, "comma-separated loop counts B (default 1,8)");
  sub->add_option(
      "-n,--n-gen", a->n_list,
      "comma-separated numbers of generated tokens (default 64,256; each run's KV cache must fit in memory)");
  sub->add_option("--cache", a->cache_list, "comma-separated cache policies: per-depth, shared, none, plain (the original model, no loop)");
  sub->add_option("-p,--n-prompt", a->n_prompt, "prompt tokens prefilled before generation")->check(CLI::Range(1, 1 << 20));
  sub->add_option("-r,--reps", a->reps, "repetitions (the median is reported)")->check(CLI::Range(1, 100));
  sub->add_flag("--plain", a->plain, "also measure the plain (non-looped) model");
  a->backend.add_to(*sub);
  sub->add_flag("--json", a->json, "print a JSON array of rows instead of the table");
  sub->add_option("--csv", a->csv, "also write the rows as CSV to this file");
  sub->add_option("--svg", a->svg, "also plot ms/token against generated tokens (one line per cache, loops) to this SVG");
  sub->callback([a] {
    a->model.apply_threads();
    analysis::BenchPlan plan;
    plan.loops = parse_loop_list(a->loops_list, "--loops");
    plan.n_gen = parse_int_list(a->n_list, "-n", 1, 1 << 24, "token counts");
    plan.caches.clear();
    {
      std::stringstream ss(a->cache_list);
      for (std::string c; std::getline(ss, c, ',');) plan.caches.push_back(c);
    }
    plan.n_prompt = a->n_prompt;
    plan.reps = a->reps;
    plan.plain = a->plain;
    plan.spec = a->loop.spec;
    io::OpenModelOptions oo = a->model.open_options(/*need_tokenizer=*/false);
    oo.recast = true;  // a plain model is measured recast (split from the loop options; none by default)
    oo.encoder_layers = a->loop.enc;
    oo.decoder_layers = a->loop.dec;
    auto m = io::open_model(a->model.model, oo);
    if (!a->json) {
      std::fprintf(stdout, "model: %s | split %s | %s\n", a->model.model.c_str(), m.looped->split.text().c_str(),
                   a->backend.describe().c_str());
      std::fprintf(stdout, "| cache     | loops | prompt |    gen |   pp tok/s  |   tg tok/s  |  ms/tok   | loops/tok  |  cache MB |\n");
      std::fprintf(stdout, "|-----------|------:|-------:|-------:|------------:|------------:|----------:|-----------:|----------:|\n");
    }
    auto print_row = [&](const analysis::BenchRow& r) {
      if (!a->json)
        std::fprintf(stdout, "| %-9s | %5d | %6d | %6d | %11.2f | %11.2f | %9.3f | %10.2f | %9.2f |\n", r.cache.c_str(),
                     r.loops, r.n_prompt, r.n_gen, r.prompt_tps, r.gen_tps, r.ms_per_token, r.mean_loops,
                     double(r.cache_bytes) / 1048576.0);
      std::fflush(stdout);
    };
    const auto rows = a->backend.dispatch(
        [&]<class Backend>() { return analysis::run_bench<Backend>(m.looped, plan, print_row); });
    if (a->json) std::printf("%s\n", analysis::bench_json(rows).dump(2).c_str());
    if (!a->csv.empty()) io::write_file_atomic(a->csv, analysis::bench_csv(rows));
    if (!a->svg.empty()) io::write_file_atomic(a->svg, analysis::bench_svg(rows));
  });
}

}  // namespace loopus::cli
