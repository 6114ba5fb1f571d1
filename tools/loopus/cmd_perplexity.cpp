// loopus perplexity: held-out perplexity of a plain or looped model on a text file (windowed, teacher-forced).
// SPDX-License-Identifier: MIT
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/ops/cpu/ops.hpp"

namespace loopus::cli {

namespace {

struct PplArgs {
  ModelArgs model;
  LoopArgs loop;
  std::string file;
  int window = 256;
  int64_t max_tokens = 0;
  bool stream = false, json = false;
};

struct PplResult {
  double nll = 0;
  int64_t n = 0;
  double mean_loops = 0;
  double seconds = 0;
};

/// Scores every token but the first of each window: windows of `window`
/// tokens, BOS-free continuation of the token stream. In stream mode each
/// token is its own eval() call (so cache policies matter, as in decoding).
template <class Model>
PplResult score(Model& m, const std::vector<int32_t>& toks, int window, bool stream) {
  PplResult r;
  const int64_t V = m.n_vocab();
  std::vector<float> logits(static_cast<size_t>(V) * size_t(stream ? 1 : window));
  double loops = 0;
  int64_t calls = 0;
  auto t0 = std::chrono::steady_clock::now();
  int64_t last_report = 0;
  for (size_t w0 = 0; w0 + 1 < toks.size(); w0 += size_t(window)) {
    const size_t n = std::min(toks.size() - w0, size_t(window));
    if (n < 2) break;
    m.reset();
    auto nll_at = [&](const float* lg, int32_t target) {
      double mx = -INFINITY, z = 0;
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(lg[i]));
      for (int64_t i = 0; i < V; ++i) z += std::exp(double(lg[i]) - mx);
      return mx + std::log(z) - double(lg[target]);
    };
    if (stream) {
      for (size_t t = 0; t + 1 < n; ++t) {
        m.eval(std::span<const int32_t>(&toks[w0 + t], 1), logits.data());
        if constexpr (ReportsLoops<Model>) loops += m.last_loops();
        ++calls;
        r.nll += nll_at(logits.data(), toks[w0 + t + 1]);
        ++r.n;
      }
    } else {
      m.eval(std::span<const int32_t>(&toks[w0], n - 1), logits.data(), /*all_logits=*/true);
      if constexpr (ReportsLoops<Model>) loops += m.last_loops();
      ++calls;
      for (size_t t = 0; t + 1 < n; ++t) r.nll += nll_at(logits.data() + t * size_t(V), toks[w0 + t + 1]);
      r.n += int64_t(n - 1);
    }
    if (r.n - last_report >= 2048) {
      last_report = r.n;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\r[%lld/%zu tokens] ppl %.4f, %.0f tok/s, ETA %.0f s   ", (long long)r.n, toks.size(),
                   std::exp(r.nll / double(r.n)), double(r.n) / s, double(toks.size() - size_t(r.n)) * s / double(r.n));
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.mean_loops = calls ? loops / double(calls) : 1.0;
  if (last_report) std::fprintf(stderr, "\n");
  return r;
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto* sub = app.add_subcommand("perplexity", "perplexity of a plain or looped model on a text file");
  auto a = std::make_shared<PplArgs>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub);
  sub->add_option("-f,--file", a->file, "UTF-8 text file")->required();
  sub->add_option("--window", a->window, "tokens per scored window (each window restarts the context)")
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--max-tokens", a->max_tokens, "score at most this many tokens (0: all)");
  sub->add_flag("--stream", a->stream,
                "feed one token per call, as in decoding (cache policies and per-token early exit then matter)");
  sub->add_flag("--json", a->json, "print one JSON object");
  sub->callback([a] {
    a->model.apply_threads();
    auto m = open_runnable(a->model, a->loop);
    std::ifstream in(a->file, std::ios::binary);
    if (!in) throw Error(a->file + ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    std::vector<int32_t> toks = m.tok->encode(ss.str(), /*add_special=*/true);
    if (a->max_tokens > 0 && int64_t(toks.size()) > a->max_tokens) toks.resize(size_t(a->max_tokens));
    if (toks.size() < 2) throw Error(a->file + ": fewer than 2 tokens to score");
    ContextParams cp;
    cp.n_ctx = a->window;
    PplResult r;
    nlohmann::json j = {{"file", a->file}, {"window", a->window}, {"stream", a->stream}};
    if (!m.looped) {
      CausalLM<Cpu> lm(m.plain, cp);
      r = score(lm, toks, a->window, a->stream);
    } else {
      with_looped_model<Cpu>(m.looped, a->loop.spec, cp, [&](auto& lm) {
        r = score(lm, toks, a->window, a->stream);
        j["loops"] = lm.n_loops_max();
        j["split"] = m.looped->split.text();
        j["cache"] = a->loop.spec.cache;
      });
      j["mean_loops"] = r.mean_loops;
    }
    j["tokens"] = r.n;
    j["nll"] = r.nll / double(r.n);
    j["ppl"] = std::exp(r.nll / double(r.n));
    j["seconds"] = r.seconds;
    if (a->json) std::printf("%s\n", j.dump().c_str());
    else std::printf("ppl %.4f over %lld tokens (%.1f s)\n", j["ppl"].get<double>(), (long long)r.n, r.seconds);
  });
}

}  // namespace loopus::cli
