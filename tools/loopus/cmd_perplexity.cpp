// loopus perplexity: held-out perplexity of a plain or looped model on a text file (teacher-forced; loopus's
// windows, or llama.cpp's llama-perplexity chunks).
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
  std::string chunking = "windows";
  int n_ctx = 512;
  int chunks = -1;
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
  auto* window = sub->add_option("--window", a->window,
                                 "tokens per scored window (each window restarts the context; its KV cache and "
                                 "logits must fit in memory)")
                     ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--chunking", a->chunking,
                  "windows: back-to-back windows of --window tokens, every token but each window's first scored; "
                  "llama: llama.cpp's llama-perplexity: whole chunks of --ctx-size tokens (at most --chunks), each "
                  "from a fresh context with its first token replaced by BOS when the vocabulary adds BOS, the "
                  "second half of each scored (positions n/2+1..n-1); the file is read as llama-perplexity -f reads "
                  "it (one trailing newline dropped, special-token text not parsed) and must give >= 2 chunks")
      ->check(CLI::IsMember({"windows", "llama"}))
      ->capture_default_str();
  auto* ctx = sub->add_option("-c,--ctx-size", a->n_ctx, "--chunking llama: tokens per chunk (llama-perplexity's -c)")
                  ->check(CLI::Range(3, 1 << 20))
                  ->capture_default_str();
  auto* chunks = sub->add_option("--chunks", a->chunks,
                                 "--chunking llama: score at most this many chunks (llama-perplexity's --chunks; "
                                 "-1: all)")
                     ->check(CLI::Range(-1, 1 << 30))
                     ->capture_default_str();
  sub->add_option("--max-tokens", a->max_tokens, "score at most this many tokens (0: all)");
  sub->add_flag("--stream", a->stream,
                "feed one token per call, as in decoding (cache policies and per-token early exit then matter)");
  a->backend.add_to(*sub);
  sub->add_flag("--json", a->json, "print one JSON object");
  sub->callback([a, window, ctx, chunks] {
    const bool llama = a->chunking == "llama";
    if (llama && window->count() > 0)
      throw UsageError("--window is for --chunking windows; llama chunks are --ctx-size");
    if (!llama && (ctx->count() > 0 || chunks->count() > 0))
      throw UsageError("--ctx-size and --chunks are for --chunking llama");
    if (chunks->count() > 0 && a->chunks == 0) throw UsageError("--chunks must be at least 1 (or -1: all)");
    a->model.apply_threads();
    auto m = open_runnable(a->model, a->loop);
    std::string text = read_file_bytes(a->file, "text to score");
    std::vector<int32_t> toks;
    eval::PerplexityOptions po;
    ContextParams cp;
    if (llama) {
      // As llama-perplexity: -f drops one trailing newline; the text is tokenized whole with the
      // vocabulary's own special tokens (BOS when it adds one), special-token text not parsed.
      if (!text.empty() && text.back() == '\n') text.pop_back();
      if (m.tok->eos_id() >= 0) {
        const auto probe = m.tok->encode("a", /*add_special=*/true, /*parse_special=*/false);
        if (!probe.empty() && probe.back() == m.tok->eos_id())
          throw UsageError("--chunking llama: the tokenizer appends EOS, which llama-perplexity refuses");
      }
      toks = m.tok->encode(text, /*add_special=*/true, /*parse_special=*/false);
      po.chunking = eval::Chunking::kLlama;
      po.n_ctx = a->n_ctx;
      po.chunks = a->chunks;
      po.chunk_bos = m.tok->add_bos() ? m.tok->bos_id() : -1;
      cp.n_ctx = a->n_ctx;
    } else {
      toks = m.tok->encode(text, /*add_special=*/true);
      po.window = a->window;
      cp.n_ctx = a->window;
    }
    if (a->max_tokens > 0 && int64_t(toks.size()) > a->max_tokens) toks.resize(size_t(a->max_tokens));
    if (toks.size() < 2) throw UsageError(a->file + ": fewer than 2 tokens to score");
    po.stream = a->stream;
    eval::PerplexityResult r;
    nlohmann::json j = {{"file", a->file}, {"stream", a->stream}};
    if (llama) {
      j["chunking"] = "llama";
      j["ctx_size"] = a->n_ctx;
      j["bos"] = po.chunk_bos;
    } else {
      j["window"] = a->window;
    }
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
    if (llama) {
      j["ppl_stderr"] = r.ppl_stderr();
      j["chunks"] = r.windows;
      j["text_tokens"] = toks.size();
    }
    j["seconds"] = r.seconds;
    if (a->json) std::printf("%s\n", j.dump().c_str());
    else if (llama)
      std::printf("ppl %.4f +/- %.5f over %lld tokens in %lld chunks of %d (llama-perplexity chunking, %.1f s)\n",
                  r.ppl(), r.ppl_stderr(), (long long)r.tokens, (long long)r.windows, a->n_ctx, r.seconds);
    else std::printf("ppl %.4f over %lld tokens (%.1f s)\n", r.ppl(), (long long)r.tokens, r.seconds);
  });
}

}  // namespace loopus::cli
