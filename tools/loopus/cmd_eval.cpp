// loopus eval: the paper's zero-shot tasks with lm-eval's scoring, for a plain or looped model at a
// list of loop budgets. The library (include/loopus/eval/) does the work; this parses and prints.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/svg_plot.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/eval/harness.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/model/causal_lm.hpp"

namespace loopus::cli {

namespace {

struct EvalArgs {
  ModelArgs model;
  LoopArgs loop;
  BackendArgs backend;
  std::string tasks = "arc_easy,arc_challenge,hellaswag,piqa,openbookqa,winogrande";
  std::string loops_list;  // empty: the plain model (or one run at --loops' default for a looped model)
  std::string cache = "per-depth";
  std::string data_dir, mmlu_dir, baseline, svg, encoding = "whole", rolling = "lm-eval";
  size_t limit = 0;
  int64_t max_length = 0;
  int64_t batch_tokens = 512;
  bool json = false;
};

/// The progress line on stderr (a terminal only), redrawn in place.
struct Progress {
  bool tty = ::isatty(2) != 0;
  std::string label;
  bool drawn = false;
  void operator()(const eval::ScoreProgress& p) {
    if (!tty || p.seconds <= 0) return;
    const double rate = double(p.done) / p.seconds;
    std::fprintf(stderr, "\r%s: %zu/%zu requests, %.1f req/s, ETA %.0f s   ", label.c_str(), p.done, p.total, rate,
                 rate > 0 ? double(p.total - p.done) / rate : 0.0);
    drawn = true;
  }
  void end() {
    if (drawn) std::fprintf(stderr, "\n");
    drawn = false;
  }
};

/// One result row; requests and seconds: how many requests the task scored and the wall time of
/// tokenizing and scoring them; work: the tokens the model ran and the logit rows it computed.
nlohmann::json row_json(const eval::MetricRow& r, size_t requests, double seconds, const eval::ScoreProgress& work) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"task", r.task},     {"metric", r.metric},    {"value", num(r.value)},        {"stderr", num(r.stderr_)},
          {"n", r.n},           {"loops", r.loops},      {"mean_loops", r.mean_loops},   {"requests", requests},
          {"seconds", seconds}, {"tokens", work.tokens}, {"logit_rows", work.logit_rows}};
}

/// The paper's two tables as Markdown, one row per loop budget (and the baseline's, with Δ).
std::string markdown_tables(const std::vector<nlohmann::json>& rows, const std::vector<nlohmann::json>& base) {
  // value[(loops, task, metric)]
  auto index = [](const std::vector<nlohmann::json>& rs) {
    std::map<int, std::map<std::string, double>> v;
    for (const auto& r : rs)
      if (r["value"].is_number())
        v[r["loops"].get<int>()][r["task"].get<std::string>() + "/" + r["metric"].get<std::string>()] =
            r["value"].get<double>();
    return v;
  };
  const auto cur = index(rows), ref = index(base);
  struct Col {
    const char* head;
    const char* key;
    bool pct;
  };
  const std::vector<Col> table_a = {{"ARC-E", "arc_easy/acc_norm", true}, {"ARC-C", "arc_challenge/acc_norm", true},
                                    {"HS", "hellaswag/acc_norm", true},   {"WG", "winogrande/acc", true},
                                    {"PIQA", "piqa/acc_norm", true},      {"OBQA", "openbookqa/acc_norm", true}};
  const std::vector<Col> table_b = {{"Wiki", "wikitext/word_perplexity", false},
                                    {"LAMBADA", "lambada_openai/perplexity", false},
                                    {"MMLU", "mmlu/acc", true},
                                    {"HS", "hellaswag/acc", true},
                                    {"ARC-E", "arc_easy/acc", true},
                                    {"ARC-C", "arc_challenge/acc", true},
                                    {"PIQA", "piqa/acc", true},
                                    {"WG", "winogrande/acc", true},
                                    {"OBQA", "openbookqa/acc", true}};
  std::string out;
  auto table = [&](const char* title, const std::vector<Col>& cols) {
    // only when at least one column has a value
    bool any = false;
    for (const auto& [l, m] : cur)
      for (const auto& c : cols) any = any || m.count(c.key);
    if (!any) return;
    out += std::string("\n") + title + "\n\n| Setting |";
    for (const auto& c : cols) out += std::string(" ") + c.head + " |";
    out += " AVG | Δ |\n|---|";
    for (size_t i = 0; i < cols.size() + 2; ++i) out += "---|";
    out += "\n";
    auto avg_of = [&](const std::map<std::string, double>& m) -> double {
      double s = 0;
      int n = 0;
      for (const auto& c : cols)
        if (c.pct) {
          if (!m.count(c.key)) return NAN;
          s += m.at(c.key);
          ++n;
        }
      return n ? 100.0 * s / n : NAN;
    };
    const double base_avg = ref.empty() ? NAN : avg_of(ref.begin()->second);
    auto line = [&](const std::string& name, const std::map<std::string, double>& m, bool is_base) {
      out += "| " + name + " |";
      char buf[64];
      for (const auto& c : cols) {
        if (m.count(c.key))
          std::snprintf(buf, sizeof buf, c.pct ? " %.1f |" : " %.2f |", (c.pct ? 100.0 : 1.0) * m.at(c.key));
        else std::snprintf(buf, sizeof buf, " – |");
        out += buf;
      }
      const double a = avg_of(m);
      if (std::isfinite(a)) std::snprintf(buf, sizeof buf, " %.1f |", a);
      else std::snprintf(buf, sizeof buf, " – |");
      out += buf;
      if (!is_base && std::isfinite(a) && std::isfinite(base_avg))
        std::snprintf(buf, sizeof buf, " %+.1f |\n", a - base_avg);
      else std::snprintf(buf, sizeof buf, " – |\n");
      out += buf;
    };
    if (!ref.empty()) line("baseline (B=" + std::to_string(ref.begin()->first) + ")", ref.begin()->second, true);
    for (const auto& [l, m] : cur) line("B=" + std::to_string(l), m, false);
  };
  table("Table A (acc_norm; WinoGrande acc), %", table_a);
  table("Table B (perplexity; accuracy %)", table_b);
  return out;
}

}  // namespace

void register_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval",
                                 "zero-shot tasks of the LoopUS tables with lm-eval's scoring (acc, acc_norm, "
                                 "perplexity), at a list of loop budgets");
  auto a = std::make_shared<EvalArgs>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub, /*per_run=*/false);
  sub->add_option(
      "--task", a->tasks,
      "comma-separated lm-eval task names: arc_easy, arc_challenge, hellaswag, piqa, openbookqa, winogrande, "
      "lambada_openai, wikitext, copa, wsc273, mmlu (default: the six of the TinyLlama table)");
  sub->add_option("--limit", a->limit, "score the first N documents of each task (0: all)");
  sub->add_option("--loops", a->loops_list,
                  "comma-separated loop budgets B, e.g. 1,2,4,8 (each task runs at each; a plain model is recast)");
  sub->add_option("--cache", a->cache, "reasoning KV cache: per-depth (exact), shared, none")
      ->check(CLI::IsMember({"per-depth", "shared", "none"}));
  sub->add_option("--data-dir", a->data_dir, "folder laid out as ../shared/data/eval (default: $LOOPUS_DATA_DIR/eval)");
  sub->add_option("--mmlu-dir", a->mmlu_dir,
                  "MMLU folder with test/<subject>_test.csv (standard layout; for --task mmlu)");
  sub->add_option("--max-length", a->max_length,
                  "lm-eval's max_length: inputs are cut to their last N+1 tokens, rolling windows are N long "
                  "(default: the model's training context, else 2048)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  sub->add_option("--batch-tokens", a->batch_tokens,
                  "tokens per forward pass when scoring several questions together (plain models and fixed "
                  "loops; 0: one question at a time)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 16));
  sub->add_option(
         "--encoding", a->encoding,
         "whole (lm-eval: encode context+continuation, split at the context's length) or separate (the official "
         "LoopUS adapter: each encoded alone, no special tokens)")
      ->check(CLI::IsMember({"whole", "separate"}));
  sub->add_option("--rolling", a->rolling,
                  "wikitext windows: lm-eval (disjoint, max_length long) or official (1024 tokens, stride 512)")
      ->check(CLI::IsMember({"lm-eval", "official"}));
  sub->add_option("--baseline", a->baseline, "JSON rows of an earlier --json run: a baseline row and Δ in the tables");
  sub->add_option("--svg", a->svg, "write an SVG plot of every metric against the loop budget (with several --loops)");
  a->backend.add_to(*sub);
  sub->add_flag("--json", a->json,
                "print one JSON array of rows {task, metric, value, stderr, n, loops, mean_loops, requests, seconds, "
                "tokens, logit_rows}");
  sub->callback([a] {
    a->model.apply_threads();
    const std::vector<int> loops = a->loops_list.empty() ? std::vector<int>{}
                                                         : parse_loop_list(a->loops_list, "--loops");
    io::OpenModelOptions oo = a->model.open_options();
    oo.recast = a->loop.given() || !loops.empty();
    oo.encoder_layers = a->loop.enc;
    oo.decoder_layers = a->loop.dec;
    auto m = io::open_model(a->model.model, oo);
    eval::TaskOptions to;
    to.data_dir = a->data_dir.empty() ? std::filesystem::path(data_dir()) / "eval" : std::filesystem::path(a->data_dir);
    to.mmlu_dir = a->mmlu_dir;
    to.limit = a->limit;
    eval::EvalOptions eo;
    eo.encoding = a->encoding == "separate" ? eval::PairEncoding::kSeparate : eval::PairEncoding::kWhole;
    eo.rolling = a->rolling == "official" ? eval::RollingWindows::kOfficial : eval::RollingWindows::kLmEval;
    const HParams& hp = m.looped ? m.looped->base->hp : m.plain->hp;
    eo.batch_tokens = a->batch_tokens;
    eo.max_length = a->max_length > 0 ? a->max_length : (hp.n_ctx_train > 0 ? hp.n_ctx_train : 2048);

    std::vector<nlohmann::json> rows;
    Progress progress;
    for (const std::string& name : split_list(a->tasks)) {
      const eval::Task task = eval::load_task(name, to);
      const auto t_prep = std::chrono::steady_clock::now();
      const eval::PreparedTask prep = eval::prepare(task, *m.tok, eo);
      const double prep_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_prep).count();
      const ContextParams cp = eval::context_params(prep, eo);
      auto run = [&](int b) {
        progress.label = name + (m.looped ? " B=" + std::to_string(b) : "");
        std::vector<eval::Loglik> scores;
        double seconds = prep_seconds;  // tokenization + scoring
        eval::ScoreProgress work;       // the last report: the totals
        auto score = [&](auto& lm) {
          const auto t0 = std::chrono::steady_clock::now();
          scores = eval::score(lm, prep, eo, [&](const eval::ScoreProgress& p) {
            work = p;
            progress(p);
          });
          seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        };
        a->backend.dispatch([&]<class Backend>() {
          if (!m.looped) {
            CausalLM<Backend> lm(m.plain, cp);
            score(lm);
            return;
          }
          LoopRunSpec spec = a->loop.spec;
          spec.loops = b;
          spec.cache = a->cache;
          with_looped_model<Backend>(m.looped, spec, cp, score);
        });
        progress.end();
        for (const auto& r : eval::task_metrics(prep, scores, m.looped ? b : 1))
          rows.push_back(row_json(r, prep.requests.size(), seconds, work));
      };
      if (!m.looped) run(1);
      else if (loops.empty()) run(a->loop.spec.loops);
      else
        for (const int b : loops) run(b);
    }

    if (!a->svg.empty()) {
      std::map<std::string, analysis::Series> by_metric;
      for (const auto& r : rows) {
        if (!r["value"].is_number()) continue;
        auto& s = by_metric[r["task"].get<std::string>() + " " + r["metric"].get<std::string>()];
        s.label = r["task"].get<std::string>() + " " + r["metric"].get<std::string>();
        s.x.push_back(r["loops"].get<double>());
        s.y.push_back(r["value"].get<double>());
      }
      std::vector<analysis::Series> acc_series;
      for (auto& [k, s] : by_metric)
        if (k.find("perplexity") == std::string::npos && k.find("bits_per_byte") == std::string::npos)
          acc_series.push_back(s);
      analysis::PlotSpec ps;
      ps.title = "lm-eval metrics against the loop budget";
      ps.x_label = "loop budget B";
      ps.y_label = "accuracy";
      io::write_file_atomic(a->svg, analysis::svg_line_chart(acc_series, ps));
    }

    if (a->json) {
      std::printf("%s\n", nlohmann::json(rows).dump().c_str());
      return;
    }
    std::vector<nlohmann::json> base;
    if (!a->baseline.empty()) {
      const auto j = nlohmann::json::parse(read_file_bytes(a->baseline, "baseline results"), nullptr, false);
      if (!j.is_array()) throw FormatError(a->baseline + ": not a JSON array of result rows (loopus eval --json)");
      for (const auto& r : j) {
        if (!r.is_object() || !r.contains("task") || !r.contains("metric") || !r.contains("value") ||
            !r.contains("loops"))
          throw FormatError(a->baseline + ": each row needs task, metric, value and loops");
        base.push_back(r);
      }
    }
    std::printf("| task | metric | B | value | stderr | n | mean loops |\n|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows)
      std::printf("| %s | %s | %d | %.4f | %.4f | %zu | %.2f |\n", r["task"].get<std::string>().c_str(),
                  r["metric"].get<std::string>().c_str(), r["loops"].get<int>(),
                  r["value"].is_number() ? r["value"].get<double>() : NAN,
                  r["stderr"].is_number() ? r["stderr"].get<double>() : NAN, r["n"].get<size_t>(),
                  r["mean_loops"].get<double>());
    std::printf("%s", markdown_tables(rows, base).c_str());
  });
}

}  // namespace loopus::cli
