// Concurrency: one loaded model (weights, tokenizer) shared read-only by several threads, each with its own
// model object (KV caches, scratch, gate scratch, sampler), gives bit for bit the serial outputs. Threads start
// together (a latch) and each runs a different prompt. scripts/test_tsan.sh runs these under ThreadSanitizer.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstring>
#include <exception>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/selective_gate.hpp"
#include "loopus/sample/sampler.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/load.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

constexpr int kThreads = 4;

/// What one session produced: ids, every logit it saw (prefill rows and each decode step), loops per call.
struct SessionRun {
  std::vector<int32_t> ids;
  std::vector<float> logits;
  std::vector<int> loops;
};

bool bit_equal(const SessionRun& a, const SessionRun& b) {
  return a.ids == b.ids && a.loops == b.loops && a.logits.size() == b.logits.size() &&
         std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)) == 0;
}

/// Runs f(0..kThreads-1) one after the other, then all at once on kThreads threads released together, and
/// checks each concurrent result equals its serial one bit for bit. f must build its own session. Returns the
/// serial results.
template <class R, class F>
std::vector<R> serial_equals_concurrent(F&& f, bool (*equal)(const R&, const R&)) {
  std::vector<R> serial(kThreads), conc(kThreads);
  for (int i = 0; i < kThreads; ++i) serial[size_t(i)] = f(i);
  // Each thread's input differs: a session that read another's state would change its output.
  for (int i = 1; i < kThreads; ++i) REQUIRE_FALSE(equal(serial[0], serial[size_t(i)]));

  std::latch start(kThreads);
  std::vector<std::exception_ptr> err(kThreads);
  std::vector<std::thread> th;
  for (int i = 0; i < kThreads; ++i)
    th.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        conc[size_t(i)] = f(i);
      } catch (...) {
        err[size_t(i)] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  for (int i = 0; i < kThreads; ++i) {
    if (err[size_t(i)]) std::rethrow_exception(err[size_t(i)]);
    INFO("thread " << i);
    CHECK(equal(serial[size_t(i)], conc[size_t(i)]));
  }
  return serial;
}

const std::string& stories_path() {
  static const std::string p = test::data_file("models/stories260K/stories260K.gguf");
  return p;
}

std::shared_ptr<const ModelWeights> stories_weights() {
  static const auto w = load_weights(stories_path());
  return w;
}

const Tokenizer& stories_tokenizer() {
  static const auto t = load_tokenizer_from_gguf_meta(io::open_any(stories_path()).meta, stories_path());
  return *t;
}

/// kThreads different stories from the TinyStories sample (split at <|endoftext|>).
std::vector<std::string> stories_texts() {
  const std::string all = test::read_text(test::data_file("text/tinystories/tinystoriesv2_sample.txt"));
  std::vector<std::string> out;
  const std::string sep = "<|endoftext|>";
  for (size_t b = 0; out.size() < size_t(kThreads);) {
    const size_t e = all.find(sep, b);
    REQUIRE_MESSAGE(e != std::string::npos, "tinystoriesv2_sample.txt has fewer than " << kThreads << " stories");
    out.push_back(all.substr(b, e - b));
    b = e + sep.size();
  }
  return out;
}

/// Prompt i: the first 80 tokens of story i (80 > Tuning::kBlasMinRows and kAttnBlockMinT: the prefill runs
/// the GEMM and blocked-attention paths; decode runs the GEMV and token attention).
std::vector<int32_t> prompt(int i) {
  static const std::vector<std::vector<int32_t>> prompts = [] {
    std::vector<std::vector<int32_t>> p;
    for (const std::string& s : stories_texts()) {
      auto ids = stories_tokenizer().encode(s);
      REQUIRE_GE(ids.size(), size_t{80});
      ids.resize(80);
      p.push_back(ids);
    }
    return p;
  }();
  return prompts[size_t(i)];
}

/// Prefill the prompt (every row's logits), then n greedy steps; every logit is kept.
template <class Model>
SessionRun greedy_run(Model& m, const std::vector<int32_t>& p, int n) {
  SessionRun r;
  const size_t V = size_t(m.n_vocab());
  r.logits.resize(p.size() * V);
  m.eval(p, r.logits.data(), /*all_logits=*/true);
  std::vector<float> step(r.logits.end() - std::ptrdiff_t(V), r.logits.end());
  Sampler greedy(SamplerParams{.temperature = 0.f});
  std::vector<int32_t> history = p;
  auto loops = [&] {
    if constexpr (requires { m.last_loops(); }) r.loops.push_back(m.last_loops());
  };
  loops();
  for (int k = 0; k < n; ++k) {
    const int32_t id = greedy.sample(step.data(), int(V), history);
    r.ids.push_back(id);
    history.push_back(id);
    m.eval(std::span<const int32_t>(&r.ids.back(), 1), step.data());
    loops();
    r.logits.insert(r.logits.end(), step.begin(), step.end());
  }
  return r;
}

/// A looped stories260K with an official-init selective gate and a random q head, shared by all sessions.
std::shared_ptr<const LoopedWeights> looped_stories() {
  static const std::shared_ptr<const LoopedWeights> lw = [] {
    auto w = recast(stories_weights(), LayerSplit::from_specs("0..0", "4..4", 5));
    synth_loop_parts(*w, 7);
    return std::shared_ptr<const LoopedWeights>(w);
  }();
  return lw;
}

template <class Cache>
void check_looped(const std::string& halting, Cache cache = {}) {
  const auto lw = looped_stories();
  LoopParams lp;
  lp.halting = HaltingParams::parse(halting, 6);
  const auto serial = serial_equals_concurrent<SessionRun>(
      [&](int i) {
        LoopedModel<Cpu, SelectiveGate, Cache> m(lw, lp, {.n_ctx = 160}, SelectiveGate(lw->gate), cache);
        return greedy_run(m, prompt(i), 24);
      },
      bit_equal);
  // The halting rule did stop some tokens early: the exit paths ran concurrently too.
  int early = 0;
  for (const SessionRun& r : serial)
    for (int l : r.loops) early += l < lp.halting.max_loops;
  CHECK_GT(early, 0);
}

}  // namespace

TEST_CASE("[loopus] concurrency: CausalLM greedy generation on shared weights equals the serial runs") {
  const auto w = stories_weights();
  serial_equals_concurrent<SessionRun>(
      [&](int i) {
        CausalLM<Cpu> lm(w, {.n_ctx = 160});
        return greedy_run(lm, prompt(i), 48);
      },
      bit_equal);
}

TEST_CASE("[loopus] concurrency: LoopedModel, SelectiveGate + PerDepthCache, q halting: equals the serial runs") {
  check_looped<PerDepthCache>("q:0.6");
}

TEST_CASE("[loopus] concurrency: LoopedModel, SelectiveGate + SharedCache, conv halting: equals the serial runs") {
  check_looped<SharedCache>("conv:4");
}

TEST_CASE("[loopus] concurrency: LoopedModel, SelectiveGate + NoCache, KL halting: equals the serial runs") {
  check_looped<NoCache>("kl:0.1");
}

TEST_CASE("[loopus] concurrency: a shared tokenizer encodes and decodes as it does serially") {
  using Ids = std::vector<int32_t>;
  using Coded = std::pair<Ids, std::string>;  // ids, and their decode
  const std::string text = test::read_text(test::data_file("text/public_domain/sherlock_holmes_adventures_pg1661.txt"));
  // Thread i encodes its own 20 kB slice (cut on a line break: valid UTF-8).
  auto slice = [&](int i) {
    size_t b = text.find('\n', size_t(i) * 40000) + 1, e = text.find('\n', b + 20000);
    return std::string_view(text).substr(b, e - b);
  };
  auto ids_equal = +[](const Ids& a, const Ids& b) { return a == b; };
  auto coded_equal = +[](const Coded& a, const Coded& b) { return a == b; };

  SUBCASE("SentencePiece (stories260K)") {
    const Tokenizer& t = stories_tokenizer();
    serial_equals_concurrent<Ids>([&](int i) { return t.encode(slice(i)); }, ids_equal);
  }
  SUBCASE("byte-level BPE (Qwen3) with its shared word cache") {
    auto q = BpeTokenizer::from_json_file(test::data_file("tokenizers/qwen3/tokenizer.json"));
    for (size_t cap : {BpeTokenizer::kDefaultCacheCapacity, size_t{64}}) {  // 64: the cache keeps emptying itself
      INFO("cache capacity " << cap);
      q.set_cache_capacity(cap);
      const auto serial = serial_equals_concurrent<Coded>(
          [&](int i) {
            Ids ids = q.encode(slice(i), false);
            return Coded(ids, q.decode(ids));
          },
          coded_equal);
      for (int i = 0; i < kThreads; ++i) CHECK_EQ(serial[size_t(i)].second, slice(i));
    }
    CHECK_GT(q.cache_size(), size_t{0});
  }
}
