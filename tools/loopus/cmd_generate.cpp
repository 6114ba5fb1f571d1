// loopus generate: stream a continuation of a prompt (greedy or sampled, plain or looped), or print it as JSON.
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"

namespace loopus::cli {

namespace {

struct GenArgs {
  ModelArgs model;
  LoopArgs loop;
  std::string prompt;
  int n_predict = 128;
  SamplerParams sp;
  bool json = false;
  bool ignore_eos = false;
  bool show_loops = false;
  int64_t n_ctx = 0;
  BackendArgs backend;
};

std::vector<int32_t> prompt_ids_for(const GenArgs& a, const Tokenizer& tok) {
  if (a.prompt.empty()) {
    if (tok.bos_id() < 0) throw UsageError("empty prompt and the vocabulary has no BOS token; pass -p TEXT");
    return {tok.bos_id()};
  }
  auto ids = tok.encode(a.prompt, /*add_special=*/true);
  if (ids.empty()) throw UsageError("the prompt encodes to no tokens");
  return ids;
}

template <class Model>
void run_model(const GenArgs& a, Model& lm, const Tokenizer& tok, const std::vector<int32_t>& prompt_ids,
               nlohmann::json extra) {
  Sampler sampler(a.sp);
  GenerateParams gp;
  gp.n_predict = a.n_predict;
  gp.stop_id = a.ignore_eos ? -1 : tok.eos_id();
  std::string text;
  int32_t prev = prompt_ids.back();
  if (!a.json) {
    std::string shown;
    for (size_t i = 0; i < prompt_ids.size(); ++i) shown += tok.token_to_piece(prompt_ids[i], i ? prompt_ids[i - 1] : -1);
    std::fputs(shown.c_str(), stdout);
    std::fflush(stdout);
  }
  auto res = generate(lm, prompt_ids, gp, sampler, [&](int32_t id) {
    std::string piece = tok.token_to_piece(id, prev);
    prev = id;
    text += piece;
    if (a.json) return;
    if constexpr (ReportsLoops<Model>) {
      if (a.show_loops) piece += "[" + std::to_string(lm.last_loops()) + "]";
    }
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
  });
  if (a.json) {
    nlohmann::json j = {{"ids", res.ids},
                        {"text", text},
                        {"prompt_ids", prompt_ids},
                        {"n_prompt", prompt_ids.size()},
                        {"n_generated", res.ids.size()},
                        {"ms_per_token", res.ms_per_token()},
                        {"prompt_ms", res.prompt_ms},
                        {"prompt_tokens_per_s", res.prompt_tokens_per_s(prompt_ids.size())},
                        {"tokens_per_s", res.ms_per_token() > 0 ? 1e3 / res.ms_per_token() : 0.0}};
    if constexpr (ReportsLoops<Model>) j["loops_per_token"] = res.loops_per_token;
    for (auto& [k, v] : extra.items()) j[k] = v;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::fprintf(stderr, "\n\nprompt: %zu tokens, %.2f ms (%.1f tok/s) | generated: %zu tokens, %.3f ms/token (%.1f tok/s)",
               prompt_ids.size(), res.prompt_ms, res.prompt_tokens_per_s(prompt_ids.size()), res.ids.size(),
               res.ms_per_token(), res.ms_per_token() > 0 ? 1e3 / res.ms_per_token() : 0.0);
  if constexpr (ReportsLoops<Model>) {
    double mean = 0;
    for (int l : res.loops_per_token) mean += l;
    if (!res.loops_per_token.empty()) mean /= double(res.loops_per_token.size());
    std::fprintf(stderr, " | loops/token %.2f (max %d)", mean, lm.n_loops_max());
  }
  std::fprintf(stderr, "\n");
}

template <class Backend>
void run_generate(const GenArgs& a, const RunnableModel& m) {
  const auto prompt_ids = prompt_ids_for(a, *m.tok);
  ContextParams cp;
  cp.n_ctx = a.n_ctx > 0 ? a.n_ctx : int64_t(prompt_ids.size()) + a.n_predict;
  if (!m.looped) {
    CausalLM<Backend> lm(m.plain, cp);
    run_model(a, lm, *m.tok, prompt_ids, {});
    return;
  }
  with_looped_model<Backend>(m.looped, a.loop.spec, cp, [&](auto& lm) {
    nlohmann::json extra = {{"split", m.looped->split.text()},
                            {"loops", lm.n_loops_max()},
                            {"cache_bytes", lm.cache_bytes()}};
    run_model(a, lm, *m.tok, prompt_ids, extra);
  });
}

}  // namespace

void register_generate(CLI::App& app) {
  auto* sub = app.add_subcommand("generate",
                                 "generate text from a prompt, plain or looped (streams to stdout; --json for one JSON object)");
  auto a = std::make_shared<GenArgs>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub);
  sub->add_option("-p,--prompt", a->prompt, "prompt text (empty: start from BOS)");
  sub->add_option("-n,--n-predict", a->n_predict,
                  "tokens to generate (at most 2^20; the KV cache of prompt + n tokens must fit in memory, see "
                  "docs/security.md)")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--temp", a->sp.temperature, "temperature; 0 = greedy")->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-k", a->sp.top_k, "keep the k most likely tokens (<= 0: off)");
  sub->add_option("--top-p", a->sp.top_p, "nucleus sampling: keep the smallest set with probability >= p (1: off)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--min-p", a->sp.min_p, "drop tokens with p < min_p * p_max (0: off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--repeat-penalty", a->sp.repeat_penalty, "CTRL repetition penalty (1: off)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--repeat-last-n", a->sp.repeat_last_n,
                  "how many previous tokens the penalty looks at (0: off, -1: all)")
      ->check(CLI::Range(-1, 1 << 30));
  sub->add_option("-s,--seed", a->sp.seed, "RNG seed");
  sub->add_option("-c,--ctx-size", a->n_ctx,
                  "KV cache size in tokens (default: prompt + n; at most 2^24, and the cache must fit in memory)")
      ->check(CLI::Range(int64_t(0), kMaxContext));
  sub->add_flag("--ignore-eos", a->ignore_eos, "keep generating after the end-of-sequence token");
  sub->add_flag("--show-loops", a->show_loops, "print each token followed by [loops it used] (looped models)");
  a->backend.add_to(*sub);
  sub->add_flag("--json", a->json,
                "print one JSON object: ids, text, prompt_ids, ms_per_token (+ loops_per_token when looped)");
  sub->callback([a] {
    a->model.apply_threads();
    auto m = open_runnable(a->model, a->loop);
    a->backend.dispatch([&]<class Backend>() { run_generate<Backend>(*a, m); });
  });
}

}  // namespace loopus::cli
