// Windowed and streamed perplexity: token counts, window restarts, exact NLL of known distributions, progress.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <span>
#include <vector>

#include "loopus/eval/perplexity.hpp"
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
