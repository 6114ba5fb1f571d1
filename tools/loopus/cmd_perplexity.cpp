// loopus perplexity: held-out perplexity of a plain or looped model on a text file (windowed, teacher-forced).
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/eval/perplexity.hpp"
#include "loopus/model/causal_lm.hpp"

namespace loopus::cli {

namespace {

struct PplArgs {
  ModelArgs model;
  LoopArgs loop;
  std::string file;
  int window = 256;
  int64_t max_tokens = 0;
  bool stream = false, json = false;
  BackendArgs backend;
};

/// The progress line on stderr, redrawn in place.
void print_progress(const eval::PerplexityProgress& p) {
  std::fprintf(stderr, "\r[%lld/%lld tokens] ppl %.4f, %.0f tok/s, ETA %.0f s   ", (long long)p.scored,
               (long long)p.total, p.ppl(), double(p.scored) / p.seconds,
               double(p.total - p.scored) * p.seconds / double(p.scored));
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto* sub = app.add_subcommand("perplexity", "perplexity of a plain or looped model on a text file");
  auto a = std::make_shared<PplArgs>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub);
  sub->add_option("-f,--file", a->file, "UTF-8 text file")->required();
  sub->add_option(
         "--window", a->window,
         "tokens per scored window (each window restarts the context; its KV cache and logits must fit in memory)")
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--max-tokens", a->max_tokens, "score at most this many tokens (0: all)");
  sub->add_flag("--stream", a->stream,
                "feed one token per call, as in decoding (cache policies and per-token early exit then matter)");
  a->backend.add_to(*sub);
  sub->add_flag("--json", a->json, "print one JSON object");
  sub->callback([a] {
    a->model.apply_threads();
    auto m = open_runnable(a->model, a->loop);
    std::vector<int32_t> toks = m.tok->encode(read_file_bytes(a->file, "text to score"), /*add_special=*/true);
    if (a->max_tokens > 0 && int64_t(toks.size()) > a->max_tokens) toks.resize(size_t(a->max_tokens));
    if (toks.size() < 2) throw UsageError(a->file + ": fewer than 2 tokens to score");
    ContextParams cp;
    cp.n_ctx = a->window;
    eval::PerplexityOptions po;
    po.window = a->window;
    po.stream = a->stream;
    eval::PerplexityResult r;
    nlohmann::json j = {{"file", a->file}, {"window", a->window}, {"stream", a->stream}};
    a->backend.dispatch([&]<class Backend>() {
      if (!m.looped) {
        CausalLM<Backend> lm(m.plain, cp);
        r = eval::perplexity(lm, toks, po, print_progress);
        return;
      }
      with_looped_model<Backend>(m.looped, a->loop.spec, cp, [&](auto& lm) {
        r = eval::perplexity(lm, toks, po, print_progress);
        j["loops"] = lm.n_loops_max();
        j["split"] = m.looped->split.text();
        j["cache"] = a->loop.spec.cache;
      });
      j["mean_loops"] = r.mean_loops;
    });
    if (r.reported) std::fprintf(stderr, "\n");
    j["tokens"] = r.tokens;
    j["nll"] = r.nll();
    j["ppl"] = r.ppl();
    j["seconds"] = r.seconds;
    if (a->json) std::printf("%s\n", j.dump().c_str());
    else std::printf("ppl %.4f over %lld tokens (%.1f s)\n", r.ppl(), (long long)r.tokens, r.seconds);
  });
}

}  // namespace loopus::cli
