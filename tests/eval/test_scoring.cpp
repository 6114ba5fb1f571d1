// lm-eval's request encoding, rolling windows, metrics and the scorer (shared context prefill vs one call
// per request, plain and looped, against hand-computed and brute-force values).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <set>
#include <span>
#include <vector>

#include "loopus/eval/harness.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "test_util.hpp"

using namespace loopus;
using namespace loopus::eval;

namespace {

/// A character tokenizer: one token per byte (id = byte + 2), BOS = 1 prepended when add_special,
/// EOS = 0. Enough to pin the encoding rules without a real vocabulary.
struct CharTok final : Tokenizer {
  bool bos = true;
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool = false) const override {
    std::vector<int32_t> v;
    if (add_special && bos) v.push_back(1);
    for (const char c : text) v.push_back(int32_t(static_cast<unsigned char>(c)) + 2);
    return v;
  }
  std::string token_to_piece(int32_t id, int32_t = -1) const override { return std::string(1, char(id - 2)); }
  std::string decode(const std::vector<int32_t>& ids, bool = false) const override {
    std::string s;
    for (const auto i : ids) s += char(i - 2);
    return s;
  }
  int32_t n_vocab() const override { return 258; }
  int32_t bos_id() const override { return bos ? 1 : -1; }
  int32_t eos_id() const override { return 0; }
  bool add_bos() const override { return bos; }
  std::string_view kind() const override { return "char"; }
};

std::vector<int32_t> iota_tokens(size_t n, int32_t from = 10) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

}  // namespace

TEST_CASE("[loopus] eval: a context's trailing spaces move to the continuation, BOS as the tokenizer adds it") {
  CharTok tok;
  const TokenRequest r = encode_request(tok, {"Question: x\nAnswer: ", "yes"});
  CHECK_EQ(r.context, tok.encode("Question: x\nAnswer:"));
  CHECK_EQ(r.continuation, tok.encode(" yes", false));
  const TokenRequest sep = encode_request(tok, {"ab ", "c"}, PairEncoding::kSeparate);
  CHECK_EQ(sep.context, tok.encode("ab ", false));
  CHECK_EQ(sep.continuation, tok.encode("c", false));
  // An empty context: the prefix token (BOS when the tokenizer has one, else EOS).
  CHECK_EQ(encode_request(tok, {"", "hi"}).context, std::vector<int32_t>{1});
  tok.bos = false;
  CHECK_EQ(encode_request(tok, {"", "hi"}).context, std::vector<int32_t>{0});
  CHECK_EQ(encode_request(tok, {"a", "b"}).context, std::vector<int32_t>{'a' + 2});
}

TEST_CASE("[loopus] eval: model_input cuts to the last max_length + 1 tokens and drops the final one") {
  const TokenRequest r{iota_tokens(6, 0), iota_tokens(3, 6)};  // 0..5 | 6 7 8
  ModelInput in = model_input(r, 100);
  CHECK_EQ(in.tokens, std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK_EQ(in.prefix, 6u);
  in = model_input(r, 5);  // (all)[-6:][:-1] = 3 4 5 6 7
  CHECK_EQ(in.tokens, std::vector<int32_t>{3, 4, 5, 6, 7});
  CHECK_EQ(in.prefix, 3u);
  CHECK_THROWS_AS((void)model_input(r, 2), LimitError);  // the continuation alone does not fit
}

TEST_CASE("[loopus] eval: lm-eval rolling windows score every token exactly once, each from at most max_length") {
  for (const size_t n : {1u, 5u, 8u, 9u, 17u, 40u})
    for (const int64_t L : {1, 2, 4, 8}) {
      CAPTURE(n);
      CAPTURE(L);
      const auto toks = iota_tokens(n);
      const auto w = rolling_windows(toks, 7, L);
      std::vector<int32_t> scored;
      for (const auto& x : w) {
        const ModelInput in = model_input(x, L);
        CHECK_LE(int64_t(in.tokens.size()), L);
        // what the model sees before each target is exactly the text before it (prefix for the first)
        std::vector<int32_t> all(x.context);
        all.insert(all.end(), x.continuation.begin(), x.continuation.end());
        CHECK_EQ(in.tokens.size() + 1, all.size());
        scored.insert(scored.end(), x.continuation.begin(), x.continuation.end());
        if (&x != &w.front()) {
          const auto pos = std::find(toks.begin(), toks.end(), x.continuation.front()) - toks.begin();
          CHECK_EQ(x.context.back(), toks[size_t(pos) - 1]);
        }
      }
      CHECK_EQ(scored, toks);
      CHECK_EQ(w.front().context, std::vector<int32_t>{7});
    }
  // The lm-eval example: 10 tokens, max_length 4: predicted 0-3 | 4-7 from 3 | 8-9 from 5-7.
  const auto w = rolling_windows(iota_tokens(10, 0), -1, 4);
  REQUIRE_EQ(w.size(), 3u);
  CHECK_EQ(w[1].context, std::vector<int32_t>{3});
  CHECK_EQ(w[1].continuation, std::vector<int32_t>{4, 5, 6, 7});
  CHECK_EQ(w[2].context, std::vector<int32_t>{5, 6, 7});
  CHECK_EQ(w[2].continuation, std::vector<int32_t>{8, 9});
}

TEST_CASE("[loopus] eval: official strided windows score tokens 1.. once, later windows their last stride") {
  const auto toks = iota_tokens(2500, 0);
  const auto w = strided_windows(toks, 1024, 512);
  std::vector<int32_t> scored;
  for (const auto& x : w) {
    CHECK_LE(x.context.size() + x.continuation.size(), 1024u);
    scored.insert(scored.end(), x.continuation.begin(), x.continuation.end());
  }
  CHECK_EQ(scored, std::vector<int32_t>(toks.begin() + 1, toks.end()));
  REQUIRE_GE(w.size(), 3u);
  CHECK_EQ(w[0].continuation.size(), 1023u);
  CHECK_EQ(w[1].context.size(), 512u);
  CHECK_EQ(w[1].continuation.size(), 512u);
}

TEST_CASE("[loopus] eval: acc_norm divides by characters and can pick what per-token log-likelihood does not") {
  // choice 0: short, ll -3 (-3 per char); choice 1: long, ll -4 (-0.4 per char). acc picks 0, acc_norm 1.
  ChoiceScores s{{-3.0, -4.0}, {"abc", "abcdefghij"}, 1};
  CHECK_EQ(acc(s), 0.0);
  CHECK_EQ(acc_norm(s), 1.0);
  // characters are code points: "é" is one
  ChoiceScores u{{-2.0, -2.2}, {"\xc3\xa9\xc3\xa9", "abc"}, 1};  // -1/char vs -0.733/char
  CHECK_EQ(acc_norm(u), 1.0);
  // ties go to the first (numpy.argmax)
  ChoiceScores t{{-1.0, -1.0}, {"a", "b"}, 1};
  CHECK_EQ(acc(t), 0.0);
}

TEST_CASE("[loopus] eval: perplexities and bits per byte from known log-likelihoods") {
  const std::vector<Weighted> docs = {{-10.0, 5}, {-30.0, 15}};  // 40 nats over 20 words
  CHECK(weighted_perplexity(docs) == doctest::Approx(std::exp(2.0)));
  CHECK(bits_per_byte(docs) == doctest::Approx(2.0 / std::log(2.0)));
  const std::vector<double> ll = {-1.0, -3.0};
  CHECK(perplexity(ll) == doctest::Approx(std::exp(2.0)));
  const std::vector<double> a = {1, 0, 1, 1};
  CHECK(mean(a) == doctest::Approx(0.75));
  CHECK(mean_stderr(a) == doctest::Approx(0.25));  // sample sd sqrt(0.75 / 3) = 0.5, / sqrt(4)
  // pooled over subtasks (lm-eval's MMLU group): sizes 3 and 3, stderrs 0 and 1/3
  const std::vector<double> ses = {0.0, 1.0 / 3.0}, ns = {3, 3};
  CHECK(pooled_stderr(ses, ns) == doctest::Approx(std::sqrt((2.0 * 3.0 / 9.0) / 4.0 / 6.0)));
}

TEST_CASE("[loopus] eval: the bootstrap draws Python's random.Random(seed) sequence") {
  // python3 -c "import random; r = random.Random(); r.seed(0); print([r.random() for _ in range(3)])"
  eval::detail::PyRandom r0(0);
  CHECK_EQ(r0.random(), 0.8444218515250481);
  CHECK_EQ(r0.random(), 0.7579544029403025);
  CHECK_EQ(r0.random(), 0.420571580830845);
  CHECK_EQ(eval::detail::PyRandom(5).random(), 0.6229016948897019);
  // constant log-likelihoods: every resample gives the same perplexity, stderr 0
  const std::vector<double> same(50, -2.0);
  CHECK(perplexity_stderr(same, 2000) < 1e-9);
}

TEST_CASE("[loopus] eval: wikitext detokenizer and word count, hellaswag preprocessing, CSV") {
  CHECK_EQ(text::wikitext_detokenize(" = Title = \n The 1 @,@ 000 men 's ( big ) \" x \" . \n"),
           " = Title =\nThe 1,000 men's (big) \"x\".\n");
  CHECK_EQ(text::split_whitespace_count(" a  b\nc "), 5u);  // '', a, b, c, ''
  CHECK_EQ(text::hellaswag_preprocess("  How to x [title] Do y [step] now  ok "), "How to x. Do y now ok");
  const auto rows = text::parse_csv("q1,a,\"b, c\",d,e,A\r\n\"multi\nline \"\"q\"\"\",1,2,3,4,D\n", "t.csv");
  REQUIRE_EQ(rows.size(), 2u);
  CHECK_EQ(rows[0][2], "b, c");
  CHECK_EQ(rows[1][0], "multi\nline \"q\"");
  CHECK_EQ(rows[1][5], "D");
  CHECK_THROWS_AS((void)text::parse_csv("\"open", "t.csv"), FormatError);
}

TEST_CASE("[loopus] eval: sharing a context prefill gives the one-call-per-request scores (plain and looped)") {
  const auto path = test::data_file("models/stories260K/stories260K.gguf");
  io::OpenModelOptions oo;
  auto m = io::open_model(path, oo);
  // Several questions with 2-4 choices; the brute force: log softmax over every position by hand.
  std::vector<Request> reqs;
  for (const char* ctx : {"Once upon a time", "The cat sat on the", "Lily and Ben"})
    for (const char* cont : {" there was a girl", " mat", " went to the park.", " x"}) reqs.push_back({ctx, cont});
  std::vector<TokenRequest> toks;
  for (const auto& r : reqs) toks.push_back(encode_request(*m.tok, r));
  ContextParams cp;
  cp.n_ctx = 64;
  cp.n_batch = 64;
  CausalLM<Cpu> lm(m.plain, cp);
  ScoreOptions so;
  so.max_length = 64;
  so.batch_tokens = 0;  // sharing alone (batching: tests/eval/test_loglikelihood.cpp)
  const auto shared = loglikelihood(lm, toks, so);
  so.share_context = false;
  const auto whole = loglikelihood(lm, toks, so);
  // brute force for each request: all logits of the full input, in double
  const int64_t V = lm.n_vocab();
  for (size_t i = 0; i < toks.size(); ++i) {
    CAPTURE(i);
    CHECK(shared[i].ll == doctest::Approx(whole[i].ll).epsilon(1e-6));
    CHECK_EQ(shared[i].greedy, whole[i].greedy);
    const ModelInput in = model_input(toks[i], 64);
    std::vector<float> all(size_t(V) * in.tokens.size());
    lm.reset();
    lm.eval(in.tokens, all.data(), true);
    double ll = 0;
    bool greedy = true;
    const size_t c = toks[i].continuation.size();
    for (size_t t = 0; t < c; ++t) {
      const float* row = all.data() + (in.tokens.size() - c + t) * size_t(V);
      double mx = -INFINITY, z = 0;
      int64_t arg = 0;
      for (int64_t v = 0; v < V; ++v)
        if (row[v] > mx) mx = row[v], arg = v;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      ll += row[toks[i].continuation[t]] - mx - std::log(z);
      greedy = greedy && arg == toks[i].continuation[t];
    }
    CHECK(whole[i].ll == doctest::Approx(ll).epsilon(1e-6));
    CHECK_EQ(whole[i].greedy, greedy);
    CHECK(whole[i].ll < 0);
  }
  // A looped recast with fixed loops: per-depth caches make the shared prefill exact too.
  io::OpenModelOptions ro;
  ro.recast = true;
  ro.encoder_layers = "0..0";
  ro.decoder_layers = "4..4";
  auto rm = io::open_model(path, ro);
  LoopRunSpec spec;
  spec.loops = 3;
  spec.halt = "fixed";
  with_looped_model<Cpu>(rm.looped, spec, cp, [&](auto& looped) {
    ScoreOptions o2;
    o2.max_length = 64;
    const auto a = loglikelihood(looped, toks, o2);
    o2.share_context = false;
    const auto b = loglikelihood(looped, toks, o2);
    for (size_t i = 0; i < toks.size(); ++i) {
      CHECK(a[i].ll == doctest::Approx(b[i].ll).epsilon(1e-5));
      CHECK_EQ(a[i].loops, 3.0);
      CHECK_NE(a[i].ll, doctest::Approx(shared[i].ll).epsilon(1e-9));  // looping changes the scores
    }
  });
}

TEST_CASE("[loopus] eval: the tasks read the shared data with lm-eval's templates") {
  TaskOptions o;
  o.data_dir = test::data_dir() / "eval";
  REQUIRE_MESSAGE(std::filesystem::is_directory(o.data_dir), "missing " << o.data_dir.string());
  struct Want {
    const char* name;
    size_t docs;
  };
  for (const Want w : {Want{"arc_easy", 2376},
                       {"arc_challenge", 1172},
                       {"openbookqa", 500},
                       {"piqa", 1838},
                       {"hellaswag", 10042},
                       {"winogrande", 1267},
                       {"copa", 100},
                       {"wsc273", 273},
                       {"lambada_openai", 5153}}) {
    CAPTURE(w.name);
    const Task t = load_task(w.name, o);
    CHECK_EQ(t.docs.size(), w.docs);
    for (const auto& d : t.docs) {
      REQUIRE_FALSE(d.requests.empty());
      for (const auto& r : d.requests) CHECK_FALSE(r.continuation.empty());
    }
  }
  const Task arc = load_task("arc_easy", o);
  CHECK(arc.docs[0].requests[0].context.starts_with("Question: Which statement best explains why photosynthesis"));
  CHECK(arc.docs[0].requests[0].context.ends_with("?\nAnswer:"));
  CHECK_EQ(arc.docs[0].requests[0].continuation, " Sunlight is the source of energy for nearly all ecosystems.");
  CHECK_EQ(arc.docs[0].gold, 0u);
  const Task hs = load_task("hellaswag", o);
  CHECK_EQ(hs.docs[0].requests[0].context, "Roof shingle removal: A man is sitting on a roof. He");
  CHECK_EQ(hs.docs[0].requests[3].continuation, " starts pulling up roofing on a roof.");
  CHECK_EQ(hs.docs[0].gold, 3u);
  const Task copa = load_task("copa", o);
  CHECK_EQ(copa.docs[0].requests[1].context, "The man turned on the faucet therefore");
  CHECK_EQ(copa.docs[0].requests[1].continuation, "  water flowed from the spout.");
  const Task lam = load_task("lambada_openai", o);
  CHECK_EQ(lam.docs[0].requests[0].continuation.find(' '), 0u);
  CHECK_EQ(lam.docs[0].requests[0].continuation.find(' ', 1), std::string::npos);
  const Task wiki = load_task("wikitext", o);
  CHECK_GT(wiki.docs.size(), 50u);
  CHECK(wiki.docs[0].text.starts_with(" = Robert Boulter =\n"));
  double words = 0;
  for (const auto& d : wiki.docs) words += d.words;
  CHECK_GT(words, 240000);
  CHECK_THROWS_AS((void)load_task("nope", o), UsageError);
  CHECK_THROWS_AS((void)load_task("mmlu", o), UsageError);  // needs --mmlu-dir
  o.limit = 7;
  CHECK_EQ(load_task("piqa", o).docs.size(), 7u);
}
