// Windowed and streamed perplexity: token counts, window restarts, exact NLL of known distributions, progress;
// llama-perplexity's chunking against the rule computed by hand (a toy model, a synthetic one, stories260K via the CLI).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/eval/perplexity.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;

namespace {

/// A model whose next-token distribution is known: logit `a` on (last fed id + 1) % V, 0 elsewhere.
/// It records what reset() and eval() were asked.
struct SuccessorModel {
  int V = 10;
  float a = 2.f;
  int64_t ctx = 64;
  int64_t past = 0;
  int resets = 0, calls = 0;
  std::vector<int32_t> fed;
  void reset() {
    past = 0;
    ++resets;
  }
  int n_vocab() const { return V; }
  int64_t n_ctx() const { return ctx; }
  void eval(std::span<const int32_t> ids, float* logits, bool all = false) {
    REQUIRE(past + int64_t(ids.size()) <= ctx);
    ++calls;
    const size_t rows = all ? ids.size() : 1;
    for (size_t r = 0; r < rows; ++r) {
      const int32_t last = all ? ids[r] : ids.back();
      float* row = logits + r * size_t(V);
      for (int i = 0; i < V; ++i) row[i] = 0.f;
      row[(last + 1) % V] = a;
    }
    fed.insert(fed.end(), ids.begin(), ids.end());
    past += int64_t(ids.size());
  }
};

/// The same, reporting a fixed loop count (as looped models do).
struct LoopingSuccessor : SuccessorModel {
  int last_loops() const { return 3; }
};

}  // namespace

TEST_CASE("[loopus] eval: token_nll is -log softmax") {
  const float lg[3] = {1.f, 2.f, 3.f};
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  CHECK(eval::token_nll(lg, 3, 0) == doctest::Approx(-std::log(std::exp(1.0) / z)).epsilon(1e-12));
  CHECK(eval::token_nll(lg, 3, 2) == doctest::Approx(-std::log(std::exp(3.0) / z)).epsilon(1e-12));
  // large logits do not overflow
  const float big[2] = {1000.f, 1000.f};
  CHECK(eval::token_nll(big, 2, 1) == doctest::Approx(std::log(2.0)).epsilon(1e-12));
}

TEST_CASE("[loopus] eval: windows cut the stream and score all tokens but each window's first") {
  // 10 tokens, windows of 4: [0..3] [4..7] [8..9] -> 3 + 3 + 1 scored
  std::vector<int32_t> toks(10);
  std::iota(toks.begin(), toks.end(), 0);  // every next token is the successor: p = e^a / (e^a + V - 1)
  SuccessorModel m;
  eval::PerplexityOptions o;
  o.window = 4;
  auto r = eval::perplexity(m, toks, o);
  CHECK(r.tokens == 7);
  CHECK(r.windows == 3);
  CHECK(r.calls == 3);
  CHECK(m.resets == 3);
  CHECK(r.mean_loops == 1);
  // a window's last token is never fed
  CHECK(m.fed == std::vector<int32_t>{0, 1, 2, 4, 5, 6, 8});
  const double p = std::exp(2.0) / (std::exp(2.0) + 9.0);
  CHECK(r.nll() == doctest::Approx(-std::log(p)).epsilon(1e-9));
  CHECK(r.ppl() == doctest::Approx(1.0 / p).epsilon(1e-9));

  // 9 tokens: the last window would hold one token and scores nothing
  auto r9 = eval::perplexity(m, std::span<const int32_t>(toks.data(), 9), o);
  CHECK(r9.tokens == 6);
  CHECK(r9.windows == 2);

  // a stream the model always gets wrong: p(target) = 1 / (e^a + V - 1)
  std::vector<int32_t> same(9, 5);
  auto rw = eval::perplexity(m, same, o);
  CHECK(rw.nll() == doctest::Approx(std::log(std::exp(2.0) + 9.0)).epsilon(1e-9));
}

TEST_CASE("[loopus] eval: streaming feeds one token per call and scores the same tokens") {
  std::vector<int32_t> toks(10);
  std::iota(toks.begin(), toks.end(), 0);
  LoopingSuccessor m;
  eval::PerplexityOptions o;
  o.window = 4;
  o.stream = true;
  auto r = eval::perplexity(m, toks, o);
  CHECK(r.tokens == 7);
  CHECK(r.windows == 3);
  CHECK(r.calls == 7);
  CHECK(m.resets == 3);
  CHECK(r.mean_loops == 3);
  CHECK(m.fed == std::vector<int32_t>{0, 1, 2, 4, 5, 6, 8});
  const double p = std::exp(2.0) / (std::exp(2.0) + 9.0);
  CHECK(r.ppl() == doctest::Approx(1.0 / p).epsilon(1e-9));
}

TEST_CASE("[loopus] eval: progress, and a context shorter than a window") {
  std::vector<int32_t> toks(100);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(i % 10);  // ids of the model's 10-token vocabulary
  SuccessorModel m;
  eval::PerplexityOptions o;
  o.window = 10;
  o.report_every = 20;
  std::vector<int64_t> seen;
  auto r = eval::perplexity(m, toks, o, [&](const eval::PerplexityProgress& p) {
    CHECK(p.total == 100);
    CHECK(p.ppl() == doctest::Approx(std::exp(p.nll_sum / double(p.scored))));
    seen.push_back(p.scored);
  });
  // 9 scored per window; a report once 20 more are scored than at the last one
  CHECK(seen == std::vector<int64_t>{27, 54, 81});
  CHECK(r.reported);
  CHECK(r.tokens == 90);
  CHECK_FALSE(eval::perplexity(m, toks, o).reported);  // no callback

  SuccessorModel small;
  small.ctx = 8;
  CHECK_THROWS_AS(eval::perplexity(small, toks, o), Error);
  o.window = 9;  // 8 tokens fed per window: fits
  CHECK(eval::perplexity(small, toks, o).tokens == 88);
}

TEST_CASE("[loopus] eval: windowed and streamed perplexity agree on a causal model") {
  auto w = synth_weights(test::tiny_params(7, Arch::kLlama, 48));
  const auto toks = test::random_ids(70, 48, 11);
  ContextParams cp;
  cp.n_ctx = 16;
  eval::PerplexityOptions o;
  o.window = 16;
  CausalLM<Cpu> lm(w, cp);
  const auto win = eval::perplexity(lm, toks, o);
  o.stream = true;
  const auto str = eval::perplexity(lm, toks, o);
  CHECK(win.tokens == 15 * 4 + 5);  // windows at 0, 16, 32, 48 and a last one of 6 tokens
  CHECK(str.tokens == win.tokens);
  CHECK(str.ppl() == doctest::Approx(win.ppl()).epsilon(1e-4));
  CHECK(win.ppl() > 1.0);

  // a looped model with fixed loops reports them as its mean
  LoopRunSpec spec;
  spec.loops = 3;
  spec.halt = "fixed";
  spec.gate = "none";
  with_looped_model<Cpu>(recast(w, LayerSplit::from_specs("0..0", "3..3", 4)), spec, cp, [&](auto& lm2) {
    const auto r = eval::perplexity(lm2, toks, o);
    CHECK(r.mean_loops == 3);
    CHECK(r.tokens == win.tokens);
  });
}

TEST_CASE("[loopus] eval: a token id outside the vocabulary is an error naming it, not a read past the logits") {
  SuccessorModel m;  // V = 10
  eval::PerplexityOptions o;
  o.window = 4;
  std::vector<int32_t> toks = {1, 2, 3, 12, 4};
  CHECK_THROWS_WITH_AS(eval::perplexity(m, toks, o), doctest::Contains("token 3 has id 12"), Error);
  toks[3] = -1;
  CHECK_THROWS_WITH_AS(eval::perplexity(m, toks, o), doctest::Contains("outside the model's vocabulary (0..9"), Error);
  CHECK_EQ(m.calls, 0);  // refused before any evaluation
}

namespace {

/// llama-perplexity's rule, computed by hand from every position's logits: whole chunks of n_ctx
/// tokens (at most max_chunks), the first replaced by bos, all n_ctx fed from a fresh context as
/// llama.cpp feeds them, the NLLs of the tokens after positions n_ctx/2 .. n_ctx-2 summed.
struct LlamaRuleByHand {
  double nll = 0, nll2 = 0;
  int64_t n = 0, chunks = 0;
  double ppl() const { return std::exp(nll / double(n)); }
  double ppl_stderr() const {
    const double m = nll / double(n);
    return std::sqrt((nll2 / double(n) - m * m) / double(n - 1)) * ppl();
  }
};

template <class LM>
LlamaRuleByHand llama_rule_by_hand(LM& lm, const std::vector<int32_t>& toks, int64_t n_ctx, int64_t max_chunks,
                                   int32_t bos) {
  LlamaRuleByHand h;
  const int64_t V = lm.n_vocab();
  h.chunks = int64_t(toks.size()) / n_ctx;
  if (max_chunks > 0) h.chunks = std::min(h.chunks, max_chunks);
  std::vector<float> lg(size_t(n_ctx * V));
  for (int64_t c = 0; c < h.chunks; ++c) {
    std::vector<int32_t> in(toks.begin() + c * n_ctx, toks.begin() + (c + 1) * n_ctx);
    if (bos >= 0) in[0] = bos;
    lm.reset();
    lm.eval(in, lg.data(), /*all_logits=*/true);
    for (int64_t t = n_ctx / 2; t + 1 < n_ctx; ++t) {
      const double v = eval::token_nll(lg.data() + t * V, V, in[size_t(t + 1)]);
      h.nll += v;
      h.nll2 += v * v;
      ++h.n;
    }
  }
  return h;
}

}  // namespace

TEST_CASE("[loopus] eval: llama-perplexity chunking feeds whole chunks with BOS first and scores their second half") {
  // 29 tokens, chunks of 8: [0..7] [8..15] [16..23], the partial [24..28] dropped; positions 4..6 of
  // each chunk predict its tokens 5..7 (3 per chunk).
  std::vector<int32_t> toks(29);
  for (size_t i = 0; i < toks.size(); ++i)
    toks[i] = int32_t((i + i / 3) % 10);  // the successor, but every third step skips one
  SuccessorModel m;
  eval::PerplexityOptions o;
  o.chunking = eval::Chunking::kLlama;
  o.n_ctx = 8;
  o.chunk_bos = 9;
  o.window = 2;  // ignored by kLlama
  auto r = eval::perplexity(m, toks, o);
  CHECK(r.windows == 3);
  CHECK(r.tokens == 9);
  CHECK(r.calls == 3);
  CHECK(m.resets == 3);
  // each chunk's first token is BOS; its last is never fed
  std::vector<int32_t> fed;
  for (size_t c = 0; c < 3; ++c) {
    fed.push_back(9);
    fed.insert(fed.end(), toks.begin() + std::ptrdiff_t(c * 8 + 1), toks.begin() + std::ptrdiff_t(c * 8 + 7));
  }
  CHECK(m.fed == fed);
  // the successor model's NLL of each scored token, by hand
  const double right = std::log(std::exp(2.0) + 9.0) - 2.0, wrong = std::log(std::exp(2.0) + 9.0);
  double s = 0, s2 = 0;
  int n_right = 0;
  for (size_t c = 0; c < 3; ++c)
    for (size_t t = 4; t < 7; ++t) {
      const bool ok = toks[c * 8 + t + 1] == (toks[c * 8 + t] + 1) % 10;
      n_right += ok;
      const double v = ok ? right : wrong;
      s += v;
      s2 += v * v;
    }
  REQUIRE(n_right > 0);
  REQUIRE(n_right < 9);  // both kinds, so the NLLs vary
  CHECK(r.nll_sum == doctest::Approx(s).epsilon(1e-12));
  CHECK(r.ppl() == doctest::Approx(std::exp(s / 9)).epsilon(1e-12));
  const double mean = s / 9, sd_err = std::sqrt((s2 / 9 - mean * mean) / 8);
  CHECK(r.ppl_stderr() == doctest::Approx(sd_err * std::exp(mean)).epsilon(1e-9));

  // --chunks; streaming scores the same tokens; no BOS keeps the chunk's own first token
  o.chunks = 2;
  o.stream = true;
  SuccessorModel ms;
  auto r2 = eval::perplexity(ms, toks, o);
  CHECK(r2.windows == 2);
  CHECK(r2.tokens == 6);
  CHECK(r2.calls == 14);
  CHECK(ms.fed == std::vector<int32_t>(fed.begin(), fed.begin() + 14));
  o.stream = false;
  o.chunk_bos = -1;
  SuccessorModel mn;
  eval::perplexity(mn, toks, o);
  std::vector<int32_t> own(toks.begin(), toks.begin() + 7);
  own.insert(own.end(), toks.begin() + 8, toks.begin() + 15);
  CHECK(mn.fed == own);

  // llama-perplexity's limits: at least 2 chunks of text; chunks >= 1; a chunk of at least 3 tokens
  o.n_ctx = 15;  // 29 < 2 * 15
  CHECK_THROWS_WITH_AS(eval::perplexity(m, toks, o), doctest::Contains("at least 2 * n_ctx = 30 tokens"), Error);
  o.n_ctx = 8;
  o.chunks = 0;
  CHECK_THROWS_AS(eval::perplexity(m, toks, o), Error);
  o.chunks = -1;
  o.n_ctx = 2;
  CHECK_THROWS_AS(eval::perplexity(m, toks, o), Error);
  o.n_ctx = 8;
  o.chunk_bos = 10;  // outside the vocabulary
  CHECK_THROWS_AS(eval::perplexity(m, toks, o), Error);
  SuccessorModel small;
  small.ctx = 6;  // a chunk feeds 7 tokens
  o.chunk_bos = 9;
  CHECK_THROWS_AS(eval::perplexity(small, toks, o), Error);
  small.ctx = 7;
  CHECK(eval::perplexity(small, toks, o).tokens == 9);
}

TEST_CASE("[loopus] eval: llama-perplexity chunking on a causal model equals the rule computed by hand") {
  auto w = synth_weights(test::tiny_params(5, Arch::kLlama, 48));
  const auto toks = test::random_ids(75, 48, 3);  // 4 chunks of 16 and 11 tokens left over
  ContextParams cp;
  cp.n_ctx = 16;
  CausalLM<Cpu> lm(w, cp);
  eval::PerplexityOptions o;
  o.chunking = eval::Chunking::kLlama;
  o.n_ctx = 16;
  o.chunk_bos = 1;
  for (const int64_t chunks : {int64_t(-1), int64_t(3)}) {
    CAPTURE(chunks);
    o.chunks = chunks;
    const auto hand = llama_rule_by_hand(lm, toks, 16, chunks, 1);
    const auto r = eval::perplexity(lm, toks, o);
    CHECK(r.windows == hand.chunks);
    CHECK(r.tokens == hand.n);
    CHECK(r.tokens == hand.chunks * 7);
    CHECK(r.ppl() == doctest::Approx(hand.ppl()).epsilon(1e-5));
    CHECK(r.ppl_stderr() == doctest::Approx(hand.ppl_stderr()).epsilon(1e-4));
    o.stream = true;
    CHECK(eval::perplexity(lm, toks, o).ppl() == doctest::Approx(hand.ppl()).epsilon(1e-4));
    o.stream = false;
  }
  // the rule is not loopus's windows, nor chunks without the BOS
  o.chunks = -1;
  const double llama = eval::perplexity(lm, toks, o).ppl();
  o.chunk_bos = -1;
  CHECK(eval::perplexity(lm, toks, o).ppl() != doctest::Approx(llama).epsilon(1e-5));
  eval::PerplexityOptions wo;
  wo.window = 16;
  CHECK(eval::perplexity(lm, toks, wo).ppl() != doctest::Approx(llama).epsilon(1e-5));
}

TEST_CASE("[loopus] eval: loopus perplexity --chunking llama on stories260K and WikiText equals the rule by hand") {
  const std::string model = test::data_file("models/stories260K/stories260K.gguf");
  const std::string cli = test::cli_path();
  if (cli.empty()) return;
  // The first 8 KB of WikiText-2 test (CRLF lines), cut after a line, with its newline.
  std::string text = test::read_text(test::data_file("eval/wikitext-2-raw/wiki.test.raw")).substr(0, 8192);
  text.resize(text.rfind('\n') + 1);
  const auto dir = test::temp_dir("ppl_llama_chunking");
  test::write_bytes(dir / "wiki.txt", text);

  auto om = io::open_model(model);
  REQUIRE(om.tok->add_bos());  // SentencePiece: the chunks start with BOS
  // llama-perplexity -f drops one trailing newline and tokenizes with BOS, special-token text not parsed
  const auto toks = om.tok->encode(std::string_view(text).substr(0, text.size() - 1), true, false);
  ContextParams cp;
  cp.n_ctx = 64;
  CausalLM<Cpu> lm(om.plain, cp);
  const auto hand = llama_rule_by_hand(lm, toks, 64, 5, om.tok->bos_id());
  REQUIRE(hand.chunks == 5);

  const auto run = test::run_cli(cli, {"perplexity", "-m", model, "-f", (dir / "wiki.txt").string(), "--chunking",
                                       "llama", "-c", "64", "--chunks", "5", "-t", "1", "--json"});
  CAPTURE(run.err);
  REQUIRE(run.code == 0);
  const auto j = nlohmann::json::parse(run.out);
  CHECK(j["chunking"] == "llama");
  CHECK(j["ctx_size"] == 64);
  CHECK(j["chunks"] == 5);
  CHECK(j["bos"] == om.tok->bos_id());
  CHECK(j["text_tokens"] == toks.size());
  CHECK(j["tokens"] == hand.n);
  CHECK(j["tokens"] == 5 * 31);
  CHECK(j["ppl"].get<double>() == doctest::Approx(hand.ppl()).epsilon(1e-5));
  CHECK(j["ppl_stderr"].get<double>() == doctest::Approx(hand.ppl_stderr()).epsilon(1e-4));
  CHECK(j["ppl_stderr"].get<double>() > 0);
  std::filesystem::remove_all(dir);
}
