// loopus trace: record what a looped model does at every loop iteration (Fig. 4 and Fig. 5 views).
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <string>
#include <type_traits>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/trace.hpp"
#include "loopus/analysis/trace_report.hpp"

namespace loopus::cli {

namespace {

struct TraceArgs {
  ModelArgs model;
  LoopArgs loop;
  std::string prompt, out, panels;
  int n_predict = 16;
  int top_k = 5;
  bool ignore_eos = false;
  BackendArgs backend;
};

}  // namespace

void register_trace(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "trace",
      "record a looped model's thinking: per generated token and loop iteration the state, gate, distances, q and what "
      "the decoder would say; writes trace.json, states and SVG/HTML views to --out");
  auto a = std::make_shared<TraceArgs>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub);
  sub->add_option("-p,--prompt", a->prompt, "prompt text")->required();
  sub->add_option("-n,--n-predict", a->n_predict, "tokens to generate, greedily (default 16)")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--top-k", a->top_k,
                  "candidates kept per iteration in the thinking trace (default 5; 0: do not decode)")
      ->check(CLI::Range(0, 100));
  sub->add_option(
      "--panels", a->panels,
      "generated tokens (0-based, comma list) with a trajectory panel in trajectory.svg (default: the first 6)");
  sub->add_flag("--ignore-eos", a->ignore_eos, "keep generating after the end-of-sequence token");
  sub->add_option("--out", a->out, "output folder (created)")->required();
  a->backend.add_to(*sub);
  sub->callback([a] {
    a->model.apply_threads();
    auto m = open_runnable(a->model, a->loop);
    if (!m.looped)
      throw UsageError(a->model.model +
                       " is a plain model: give a split to recast it (--encoder-layers A --decoder-layers B; "
                       "`loopus split` suggests one) or pass a LoopUS checkpoint");
    const std::vector<int32_t> prompt = m.tok->encode(a->prompt, /*add_special=*/true);
    if (prompt.empty()) throw UsageError("the prompt encodes to no tokens");
    analysis::TraceParams tp;
    tp.n_predict = a->n_predict;
    tp.top_k = a->top_k;
    tp.stop_at_eos = !a->ignore_eos;
    analysis::TraceInfo info;
    info.model = a->model.model;
    info.prompt = a->prompt;
    info.split = m.looped->split.text();
    info.cache = a->loop.spec.cache;
    if (!a->panels.empty())
      info.panel_tokens = parse_int_list(a->panels, "--panels", 0, a->n_predict - 1, "a generated token index");
    ContextParams cp;
    cp.n_ctx = int64_t(prompt.size()) + a->n_predict;
    a->backend.dispatch([&]<class Backend>() {
      with_looped_model<Backend>(m.looped, a->loop.spec, cp, [&](auto& lm) {
        info.halting = a->loop.spec.halting(*m.looped).text();
        info.gate = std::string(std::remove_reference_t<decltype(lm.gate())>::kName);  // "auto" resolved
        const analysis::Trace t = analysis::record_trace(lm, *m.tok, prompt, tp);
        std::erase_if(info.panel_tokens, [&](int i) {
          const bool gone = size_t(i) >= t.tokens.size();
          if (gone) std::fprintf(stderr, "note: --panels %d: only %zu tokens were generated\n", i, t.tokens.size());
          return gone;
        });
        const auto files = analysis::write_trace_report(a->out, t, *m.tok, info);
        std::string text;
        int32_t prev = prompt.back();
        double loops = 0;
        for (const auto& k : t.tokens) {
          text += m.tok->token_to_piece(k.id, prev);
          prev = k.id;
          loops += k.loops;
        }
        std::printf("%s%s\n", a->prompt.c_str(), text.c_str());
        std::printf("traced %zu tokens, %.2f loops/token (max %d), split %s; wrote", t.tokens.size(),
                    t.tokens.empty() ? 0.0 : loops / double(t.tokens.size()), t.max_loops, info.split.c_str());
        for (const auto& f : files) std::printf(" %s", f.c_str());
        std::printf(" to %s\n", a->out.c_str());
      });
    });
  });
}

}  // namespace loopus::cli
