// Batched scoring (TokenRun, eval_runs, loglikelihood's batches): equal to scoring one request
// group at a time and to one call per request, for the plain model and looped models with each
// cache policy that keeps caches; bad runs are refused with a clear error.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/random.hpp"
#include "loopus/eval/harness.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "test_util.hpp"

using namespace loopus;
using namespace loopus::eval;

namespace {

/// Real requests of several shapes: 4-way choices with long shared contexts (hellaswag),
/// short ones (arc_easy), 2-way (piqa), one request per context with 1-token continuations
/// (lambada), and winogrande's partial scoring (different contexts, one continuation).
std::vector<TokenRequest> mixed_requests(const Tokenizer& tok) {
  TaskOptions to;
  to.data_dir = test::data_dir() / "eval";
  to.limit = 6;
  std::vector<TokenRequest> out;
  for (const char* name : {"hellaswag", "arc_easy", "piqa", "lambada_openai", "winogrande"}) {
    const Task t = load_task(name, to);
    for (const auto& d : t.docs)
      for (const auto& r : d.requests) out.push_back(encode_request(tok, r));
  }
  return out;
}

template <class M>
std::vector<Loglik> score_with(M& m, std::span<const TokenRequest> reqs, int64_t batch_tokens, bool share) {
  ScoreOptions so;
  so.max_length = 256;
  so.batch_tokens = batch_tokens;
  so.share_context = share;
  return loglikelihood(m, reqs, so);
}

void check_same(const std::vector<Loglik>& a, const std::vector<Loglik>& b, double tol) {
  REQUIRE_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(a[i].ll - b[i].ll) <= tol * std::max(1.0, std::abs(b[i].ll)));
    CHECK_EQ(a[i].greedy, b[i].greedy);
    CHECK_EQ(a[i].loops, b[i].loops);
  }
}

}  // namespace

TEST_CASE("[loopus] eval: batched scoring equals one group at a time and one call per request (plain model)") {
  auto m = io::open_model(test::data_file("models/stories260K/stories260K.gguf"), io::OpenModelOptions{});
  const auto reqs = mixed_requests(*m.tok);
  REQUIRE_GT(reqs.size(), 60u);
  ContextParams cp;
  cp.n_ctx = 512;
  cp.n_batch = 512;
  CausalLM<Cpu> lm(m.plain, cp);
  const auto one_by_one = score_with(lm, reqs, 0, false);
  const auto grouped = score_with(lm, reqs, 0, true);
  check_same(grouped, one_by_one, 1e-5);
  // 512: many groups per pass; 40: some groups alone, some too big for a batch (scored unbatched)
  for (const int64_t cap : {512, 40}) {
    CAPTURE(cap);
    check_same(score_with(lm, reqs, cap, true), one_by_one, 1e-5);
  }
  // the model may hold fewer tokens per pass than asked for: its n_batch bounds the batches
  ContextParams small;
  small.n_ctx = 256;
  small.n_batch = 96;
  CausalLM<Cpu> lm_small(m.plain, small);
  CHECK_EQ(lm_small.n_batch(), 96);
  check_same(score_with(lm_small, reqs, 4096, true), one_by_one, 1e-5);
}

TEST_CASE("[loopus] eval: batched scoring runs every shared token prefix once, and equals one call per request") {
  auto m = io::open_model(test::data_file("models/stories260K/stories260K.gguf"), io::OpenModelOptions{});
  // Token-level shapes the passes must lay out right: a question's choices (one of them the start
  // of another, two single-token answers whose inputs are equal), WinoGrande's different
  // contexts with one continuation, PIQA's solutions sharing their first words, an input that is
  // the start of another's, an exact duplicate, and unrelated requests.
  const std::vector<TokenRequest> reqs = {
      {{1, 10, 11, 12}, {20}},
      {{1, 10, 11, 12}, {21}},
      {{1, 10, 11, 12}, {22, 23}},
      {{1, 10, 11, 12}, {20, 24}},
      {{1, 30, 31, 40}, {50, 51, 52}},
      {{1, 30, 31, 41}, {50, 51, 52}},
      {{1, 60, 61}, {62, 63, 64}},
      {{1, 60, 61, 62, 63, 64, 65}, {66}},
      {{1, 70}, {71, 72, 73, 74}},
      {{1, 70}, {71, 72, 75}},
      {{1, 70}, {71, 72, 73, 74}},
      {{2, 5}, {6, 7, 8, 9, 10, 11, 12, 13}},
      {{3}, {4}},
      {{1, 10, 11}, {12, 20, 25}},
  };
  ContextParams cp;
  cp.n_ctx = 64;
  cp.n_batch = 64;
  CausalLM<Cpu> lm(m.plain, cp);
  const auto one_by_one = score_with(lm, reqs, 0, false);
  // The trie of all inputs: the tokens a pass that holds every request must run.
  std::set<std::vector<int32_t>> nodes;
  int64_t scored = 0;
  for (const auto& r : reqs) {
    const ModelInput mi = model_input(r, 256);
    for (size_t n = 1; n <= mi.tokens.size(); ++n)
      nodes.emplace(mi.tokens.begin(), mi.tokens.begin() + std::ptrdiff_t(n));
    scored += int64_t(r.continuation.size());
  }
  for (const int64_t cap : {64, 9, 4, 1}) {
    CAPTURE(cap);
    ScoreOptions so;
    so.max_length = 256;
    so.batch_tokens = cap;
    ScoreProgress last;
    const auto got = loglikelihood(lm, std::span<const TokenRequest>(reqs), so,
                                   [&](const ScoreProgress& p) { last = p; });
    check_same(got, one_by_one, 1e-5);
    CHECK_EQ(last.done, reqs.size());
    if (cap == 64) {
      CHECK_EQ(last.tokens, int64_t(nodes.size()));  // one pass: every distinct prefix once
      CHECK_LE(last.logit_rows, last.tokens);
      CHECK_LT(last.logit_rows, scored);  // the shared rows are computed once
    }
  }
}

TEST_CASE("[loopus] eval: batched scoring of looped models (per-depth and shared caches, fixed loops)") {
  io::OpenModelOptions ro;
  ro.recast = true;
  ro.encoder_layers = "0..0";
  ro.decoder_layers = "4..4";
  auto rm = io::open_model(test::data_file("models/stories260K/stories260K.gguf"), ro);
  const auto reqs = mixed_requests(*rm.tok);
  ContextParams cp;
  cp.n_ctx = 384;
  cp.n_batch = 384;
  LoopParams lp;
  lp.halting.max_loops = 3;
  {
    SplitMix64 rng(7);
    auto gw = std::make_shared<SelectiveGateWeights>(
        SelectiveGateWeights::official_init(rm.looped->base->hp.n_embd, [&] { return rng.uniform(); }));
    LoopedModel<Cpu, SelectiveGate, PerDepthCache> lm(rm.looped, lp, cp, SelectiveGate(gw));
    const auto a = score_with(lm, reqs, 0, false);
    check_same(score_with(lm, reqs, 384, true), a, 1e-5);
    check_same(score_with(lm, reqs, 50, true), a, 1e-5);
    for (const auto& s : a) CHECK_EQ(s.loops, 3.0);
  }
  {
    LoopedModel<Cpu, FixedMixGate, SharedCache> lm(rm.looped, lp, cp, FixedMixGate(0.5f));
    check_same(score_with(lm, reqs, 384, true), score_with(lm, reqs, 0, false), 1e-5);
  }
}

TEST_CASE("[loopus] eval: eval_runs refuses bad runs, early-halting and no-cache models") {
  auto m = io::open_model(test::data_file("models/stories260K/stories260K.gguf"), io::OpenModelOptions{});
  ContextParams cp;
  cp.n_ctx = 32;
  cp.n_batch = 16;
  CausalLM<Cpu> lm(m.plain, cp);
  std::vector<float> logits(size_t(lm.n_vocab()) * 16);
  const std::vector<int32_t> ids(8, 1);
  auto runs_of = [](std::initializer_list<TokenRun> r) { return std::vector<TokenRun>(r); };
  // the runs must hold exactly the ids
  CHECK_THROWS_AS(lm.eval_runs(ids, runs_of({{4, 0, 0, 0, 1}}), logits.data()), UsageError);
  // positions count from the range's first row
  CHECK_THROWS_AS(lm.eval_runs(ids, runs_of({{8, 0, 4, 0, 1}}), logits.data()), UsageError);
  CHECK_THROWS_AS(lm.eval_runs(ids, runs_of({{0, 0, 0, 0, 0}, {8, 0, 0, 0, 1}}), logits.data()), UsageError);
  // past the cache, more logit rows than tokens, more tokens than n_batch
  CHECK_THROWS_AS(lm.eval_runs(ids, runs_of({{8, 0, 28, 28, 1}}), logits.data()), LimitError);
  CHECK_THROWS_AS(lm.eval_runs(ids, runs_of({{8, 0, 0, 0, 9}}), logits.data()), UsageError);
  const std::vector<int32_t> many(20, 1);
  CHECK_THROWS_AS(lm.eval_runs(many, runs_of({{20, 0, 0, 0, 1}}), logits.data()), LimitError);
  // two sequences in separate row ranges == each on its own
  lm.eval_runs(ids, runs_of({{5, 0, 0, 0, 1}, {3, 0, 10, 10, 3}}), logits.data());
  CHECK_EQ(lm.n_past(), 0);
  std::vector<float> a(size_t(lm.n_vocab())), b(size_t(lm.n_vocab()) * 3);
  lm.eval(std::span<const int32_t>(ids).first(5), a.data());
  lm.reset();
  lm.eval(std::span<const int32_t>(ids).first(3), b.data(), true);
  for (size_t v = 0; v < a.size(); ++v) CHECK(logits[v] == doctest::Approx(a[v]).epsilon(1e-5));
  for (size_t v = 0; v < b.size(); ++v) CHECK(logits[a.size() + v] == doctest::Approx(b[v]).epsilon(1e-5));

  io::OpenModelOptions ro;
  ro.recast = true;
  ro.encoder_layers = "0..0";
  ro.decoder_layers = "4..4";
  auto rm = io::open_model(test::data_file("models/stories260K/stories260K.gguf"), ro);
  LoopParams lp;
  lp.halting.max_loops = 2;
  LoopedModel<Cpu, FixedMixGate, NoCache> nc(rm.looped, lp, cp, FixedMixGate(0.5f));
  CHECK_THROWS_WITH_AS(nc.eval_runs(ids, runs_of({{8, 0, 0, 0, 1}}), logits.data()),
                       doctest::Contains("reruns the whole sequence"), UsageError);
  lp.halting.rule = HaltRule::kConvergence;
  LoopedModel<Cpu, FixedMixGate, PerDepthCache> halting(rm.looped, lp, cp, FixedMixGate(0.5f));
  CHECK_THROWS_WITH_AS(halting.eval_runs(ids, runs_of({{8, 0, 0, 0, 1}}), logits.data()),
                       doctest::Contains("batched scoring needs fixed loops"), UsageError);
  // the scorer goes around it: one call per request, one halting decision each
  std::vector<TokenRequest> reqs{{{1, 20, 30}, {40, 50}}, {{1, 20, 30}, {41}}};
  ScoreOptions so;
  so.max_length = 32;
  const auto s = loglikelihood(halting, reqs, so);
  CHECK(std::isfinite(s[0].ll));
  CHECK(std::isfinite(s[1].ll));
}
