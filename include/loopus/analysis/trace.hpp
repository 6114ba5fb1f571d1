// Thinking traces: what a looped model does at every loop iteration of every generated token.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "loopus/analysis/stats.hpp"
#include "loopus/core/error.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/sample/sampler.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::analysis {

/// One candidate of a thinking trace: a token and its probability.
struct TopToken {
  int32_t id = -1;
  float p = 0;
};

/// One state of a token's trajectory. r = 0 is the encoder's output (the loop's
/// input); r >= 1 the state after iteration r's gate.
struct TraceIteration {
  int r = 0;
  double norm = NAN;          ///< ||h_r||
  double delta = NAN;         ///< ||h_r - h_{r-1}|| (r >= 1)
  double delta_rel = NAN;     ///< delta / ||h_{r-1}||
  double cos_final = NAN;     ///< cos(h_r, h_final)
  Summary alpha;              ///< the gate's coefficient a over channels (r >= 1)
  double q = NAN;             ///< the confidence head's q (r >= 1; NaN without a q head)
  double halt_value = NAN;    ///< what the halting rule read (NaN where it did not look)
  std::vector<TopToken> top;  ///< the decoder's top tokens from h_r (r >= 1, when decoded)
};

/// One generated token: the states its loop went through and what each iteration would have said.
struct TraceToken {
  int64_t pos = 0;  ///< position of the token whose state was looped (the chosen token comes after it)
  int32_t id = -1;  ///< the token chosen from the final logits
  int loops = 0;    ///< iterations run
  std::vector<TraceIteration> iters;  ///< r = 0..loops
  std::vector<float> states;          ///< [loops + 1, d] h_0..h_loops
  std::vector<float> alpha;           ///< [loops, d] the gate's per-channel a at iterations 1..loops
};

/// A recorded generation.
struct Trace {
  int64_t d = 0;
  int max_loops = 0;
  int top_k = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<TraceToken> tokens;
};

/// A LoopObserver that collects, call by call, the last token's states, gate
/// coefficients, q and decoded top-k; finish(id) closes the call as a
/// generated token. A call split into several forward passes (a long prompt)
/// keeps only its last pass.
class TraceRecorder : public LoopObserver {
 public:
  explicit TraceRecorder(int top_k = 5) : top_k_(top_k) {
    if (top_k < 0 || top_k > 100) throw UsageError("trace: top-k must be in 0..100, got " + std::to_string(top_k));
  }
  LoopObserveOptions wants() const override { return {.all_rows = false, .decode = top_k_ > 0}; }

  void on_loop(const LoopEvent& e) override {
    if (e.loop == 0) {  // a new forward pass: start again
      cur_ = {};
      d_ = e.d;
      cur_.pos = e.pos;
      cur_.states.assign(e.h_in, e.h_in + e.d);
      cur_.iters.push_back({});
    }
    if (e.d != d_ || e.loop != cur_.loops) throw UsageError("TraceRecorder: loop events out of order");
    cur_.states.insert(cur_.states.end(), e.h, e.h + e.d);
    cur_.alpha.insert(cur_.alpha.end(), e.a, e.a + e.d);
    TraceIteration it;
    it.r = e.loop + 1;
    it.alpha = summarize(std::span<const float>(e.a, size_t(e.d)));
    it.q = e.q;
    it.halt_value = e.halt_value;
    if (e.logprobs) it.top = top_tokens(std::span<const float>(e.logprobs, size_t(e.n_vocab)), top_k_);
    cur_.iters.push_back(std::move(it));
    cur_.loops = e.loop + 1;
  }

  /// Closes the current call: `id` is the token chosen from its final logits.
  void finish(int32_t id) {
    if (cur_.iters.empty()) throw UsageError("TraceRecorder::finish: no loop was observed (is the model looped?)");
    cur_.id = id;
    fill_geometry(cur_, d_);
    tokens_.push_back(std::move(cur_));
    cur_ = {};
  }

  int64_t d() const { return d_; }
  int top_k() const { return top_k_; }
  std::vector<TraceToken>& tokens() { return tokens_; }

  /// The k most likely tokens of a log-softmax, by falling probability (ties: lower id).
  static std::vector<TopToken> top_tokens(std::span<const float> logp, int k) {
    std::vector<int32_t> idx(logp.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t kk = std::min(size_t(std::max(k, 0)), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(kk), idx.end(), [&](int32_t a, int32_t b) {
      return logp[size_t(a)] > logp[size_t(b)] || (logp[size_t(a)] == logp[size_t(b)] && a < b);
    });
    std::vector<TopToken> out;
    for (size_t i = 0; i < kk; ++i) out.push_back({idx[i], std::exp(logp[size_t(idx[i])])});
    return out;
  }

  /// Norms, successive distances and cosines to the final state, from t.states.
  static void fill_geometry(TraceToken& t, int64_t d) {
    const auto row = [&](int r) { return std::span<const float>(t.states.data() + size_t(r) * size_t(d), size_t(d)); };
    const auto fin = row(t.loops);
    for (int r = 0; r <= t.loops; ++r) {
      TraceIteration& it = t.iters[size_t(r)];
      it.r = r;
      it.norm = l2_norm(row(r));
      it.cos_final = cosine(row(r), fin);
      if (r > 0) {
        it.delta = l2_distance(row(r), row(r - 1));
        const double prev = l2_norm(row(r - 1));
        it.delta_rel = prev > 0 ? it.delta / prev : NAN;
      }
    }
  }

 private:
  int top_k_;
  int64_t d_ = 0;
  TraceToken cur_;
  std::vector<TraceToken> tokens_;
};

struct TraceParams {
  int n_predict = 16;
  int top_k = 5;
  bool stop_at_eos = true;
  SamplerParams sampler{.temperature = 0.f};  ///< default: greedy
};

/// Generates from `prompt` with `model` (a LoopedModel), recording every
/// loop iteration of every generated token. The model is reset first and the
/// observer removed afterwards.
template <class Model>
Trace record_trace(Model& model, const Tokenizer& tok, std::span<const int32_t> prompt, const TraceParams& tp) {
  if (prompt.empty()) throw UsageError("trace: the prompt has no tokens");
  TraceRecorder rec(tp.top_k);
  struct Detach {
    Model& m;
    ~Detach() { m.set_observer(nullptr); }
  } detach{model};
  model.set_observer(&rec);
  Sampler sampler(tp.sampler);
  GenerateParams gp;
  gp.n_predict = tp.n_predict;
  gp.stop_id = tp.stop_at_eos ? tok.eos_id() : -1;
  generate(model, prompt, gp, sampler, [&](int32_t id) { rec.finish(id); });
  Trace t;
  t.d = rec.d();
  t.max_loops = model.n_loops_max();
  t.top_k = tp.top_k;
  t.prompt_ids.assign(prompt.begin(), prompt.end());
  t.tokens = std::move(rec.tokens());
  return t;
}

}  // namespace loopus::analysis
