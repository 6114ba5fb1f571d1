// loopus split: layer-wise representation dynamics of a plain model and a suggested encoder / reasoning / decoder split.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/layer_dynamics.hpp"
#include "loopus/analysis/split_report.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/eval/perplexity.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/model/causal_lm.hpp"

namespace loopus::cli {

namespace {

struct SplitArgs {
  ModelArgs model;
  std::string data, out;
  int64_t tokens = 4096;
  int64_t window = 512;
  int min_reasoning = 0;
  bool check = false;
  int64_t check_tokens = 2048;
  int64_t check_window = 256;
  int loops = 2;
  BackendArgs backend;
};

}  // namespace

void register_split(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "split",
      "measure how hidden states change through the layers of a plain model and suggest where the encoder ends and the "
      "decoder begins (--check: rank the suggestion by the held-out perplexity of every split)");
  auto a = std::make_shared<SplitArgs>();
  a->model.add_to(*sub);
  sub->add_option("--data", a->data, "UTF-8 text to measure on (and, with --check, to score on)")->required();
  sub->add_option("--tokens", a->tokens, "tokens of --data to measure on (default 4096)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  sub->add_option("--window", a->window, "tokens per window, each from a fresh context (default 512)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 16));
  sub->add_option("--min-reasoning", a->min_reasoning,
                  "fewest layers in the reasoning block (default: a third of the layers, rounded up)")
      ->check(CLI::Range(1, 4096));
  sub->add_flag("--check", a->check,
                "score every split with a block of at least --min-reasoning layers as an untrained recast (no gate, "
                "--loops B) on the --check-tokens tokens that follow the measured ones, and rank the suggestion");
  sub->add_option("--check-tokens", a->check_tokens, "held-out tokens for --check (default 2048)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  sub->add_option("--check-window", a->check_window, "perplexity window for --check (default 256)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 16));
  sub->add_option("--loops", a->loops, "B for --check (default 2)")->check(CLI::Range(1, 64));
  sub->add_option("--out", a->out, "output folder (created): dynamics.json, dynamics.svg (+ splits.json, splits.svg)")
      ->required();
  a->backend.add_to(*sub);
  sub->callback([a] {
    a->model.apply_threads();
    auto m = open_runnable(a->model, LoopArgs{});
    if (m.looped && !m.plain)
      throw UsageError(a->model.model + " is a looped checkpoint; the advisor measures a plain model");
    std::vector<int32_t> toks = m.tok->encode(read_file_bytes(a->data, "text to measure on"), /*add_special=*/false);
    const int L = m.plain->hp.n_layer;
    const int min_r = a->min_reasoning > 0 ? a->min_reasoning : analysis::min_reasoning_layers(L);
    if (min_r > L - 2)
      throw UsageError("--min-reasoning " + std::to_string(min_r) +
                       " leaves no layer for the encoder and the decoder of a " + std::to_string(L) + "-layer model");
    const size_t n_dyn = std::min(toks.size(), size_t(a->tokens));
    if (n_dyn < 2) throw UsageError(a->data + ": fewer than 2 tokens");
    if (a->check && toks.size() < n_dyn + 2)
      throw UsageError(a->data + ": --check needs held-out tokens after the " + std::to_string(n_dyn) +
                       " measured ones (the file has " + std::to_string(toks.size()) + " tokens; lower --tokens)");
    io::make_dirs(a->out);
    a->backend.dispatch([&]<class Backend>() {
      const std::span<const int32_t> dyn_toks(toks.data(), n_dyn);
      const analysis::LayerDynamics dyn = analysis::layer_dynamics<Backend>(m.plain, dyn_toks, a->window);
      const analysis::SplitChoice s = analysis::suggest_split(dyn, min_r);
      io::write_file_atomic(a->out + "/dynamics.json", analysis::dynamics_json(dyn, s).dump(1) + "\n");
      const std::string name = std::filesystem::path(a->model.model).filename().string();
      io::write_file_atomic(a->out + "/dynamics.svg", analysis::dynamics_svg(dyn, s, name));
      std::printf("layer dynamics over %lld tokens: cos(h_in, h_out) per layer:", (long long)dyn.tokens);
      for (int l = 0; l < L; ++l) std::printf(" %.3f", dyn.cos_in_out[size_t(l)]);
      std::printf("\nsuggested split: encoder %s | reasoning %s | decoder %s\n  %s\n",
                  LayerSplit::range_text(s.split().encoder).c_str(),
                  LayerSplit::range_text(s.split().reasoning).c_str(),
                  LayerSplit::range_text(s.split().decoder).c_str(), s.flags().c_str());
      if (!a->check) {
        std::printf("wrote dynamics.json dynamics.svg to %s\n", a->out.c_str());
        return;
      }
      const size_t n_chk = std::min(toks.size() - n_dyn, size_t(a->check_tokens));
      const std::span<const int32_t> chk(toks.data() + n_dyn, n_chk);
      const bool tty = isatty(fileno(stderr));
      const auto t0 = std::chrono::steady_clock::now();
      const auto scored = analysis::score_splits<Backend>(
          m.plain, dyn, chk, std::min<int64_t>(a->check_window, int64_t(n_chk)), a->loops, min_r,
          [&](size_t done, size_t total) {
            if (!tty) return;
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "\r[%zu/%zu splits] %.2f splits/s, ETA %.0f s   ", done, total, double(done) / sec,
                         sec / double(done) * double(total - done));
          });
      if (tty) std::fprintf(stderr, "\n");
      eval::PerplexityOptions po;
      po.window = std::min<int64_t>(a->check_window, int64_t(n_chk));
      CausalLM<Backend> plain(m.plain, {.n_ctx = po.window, .n_batch = po.window});
      const double plain_ppl = eval::perplexity(plain, chk, po).ppl();
      io::write_file_atomic(a->out + "/splits.json",
                            analysis::splits_json(scored, s, a->loops, int64_t(n_chk), plain_ppl).dump(1) + "\n");
      io::write_file_atomic(a->out + "/splits.svg", analysis::splits_svg(scored, s, a->loops, name));
      const size_t rank = analysis::rank_of(scored, s);
      std::printf(
          "check: %zu splits scored on %zu held-out tokens (B = %d, no gate; the plain model: ppl %.3f); "
          "best %s ppl %.3f; the suggestion ranks %zu of %zu (ppl %.3f)\n",
          scored.size(), n_chk, a->loops, plain_ppl, scored.front().split.split().text().c_str(), scored.front().ppl,
          rank, scored.size(), rank ? scored[rank - 1].ppl : NAN);
      std::printf("wrote dynamics.json dynamics.svg splits.json splits.svg to %s\n", a->out.c_str());
    });
  });
}

}  // namespace loopus::cli
