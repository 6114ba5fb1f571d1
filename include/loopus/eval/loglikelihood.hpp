// Scores log-likelihood requests with any LanguageModel: the sum of the continuation's token
// log-probabilities and whether greedy decoding would have produced it (lm-eval's loglikelihood).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <numeric>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/eval/request.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/model/language_model.hpp"
#include "loopus/ops/cpu/simd.hpp"

namespace loopus::eval {

/// The score of one request.
struct Loglik {
  double ll = 0;        ///< sum of log P(continuation token | everything before it), nats
  bool greedy = false;  ///< every continuation token was the argmax of its logits
  double loops = 1;     ///< loops the model ran for it (mean over its calls; 1 for a plain model)
};

struct ScoreOptions {
  int64_t max_length = 2048;  ///< lm-eval's max_length: inputs are cut to their last max_length + 1 tokens
  /// Requests whose context tokens are equal (the choices of one question) share one prefill of the
  /// context: the model runs it once, then rewinds to it for each continuation (Rewindable models).
  /// Exact for plain models and looped models with fixed loops. Off, or for a model that halts
  /// early, every request is one eval() call over its whole input: one halting decision, on its
  /// last token, for all of its tokens (the official LoopUS evaluation).
  bool share_context = true;
  /// Batched scoring (models with eval_runs, sharing contexts, fixed loops): many requests go
  /// through the model together, up to this many tokens per forward pass (and at most the
  /// model's n_batch() and n_ctx()), and every token prefix that requests share is run once:
  /// a question's context, and also the words before WinoGrande's blank, the first words of two
  /// PIQA solutions, a continuation that is the start of another (see loglikelihood()). 0: one
  /// context at a time.
  int64_t batch_tokens = 512;
};

/// The most logits one batched forward pass writes (floats): 128 MiB of them.
inline constexpr int64_t kMaxBatchLogits = int64_t(1) << 25;

struct ScoreProgress {
  size_t done = 0, total = 0;
  double seconds = 0;
  int64_t tokens = 0;      ///< tokens the model has run so far (shared prefixes once)
  int64_t logit_rows = 0;  ///< logit rows it has computed so far
};
using ScoreCallback = std::function<void(const ScoreProgress&)>;

namespace detail {
/// log softmax(logits)[target], and whether target is the argmax (the first maximum, as
/// torch.argmax). The maximum is exact; the normaliser sums e^(x - max) (float SIMD exp, about
/// 2 ulp) in double over blocks of float partial sums.
inline double token_logprob(const float* logits, int64_t V, int32_t target, bool& is_argmax) {
  namespace s = cpu::simd;
  constexpr int64_t W = s::kLanes;
  const int64_t Vw = V - V % W;
  s::VecF vm = s::VecF::set1(-INFINITY);
  for (int64_t i = 0; i < Vw; i += W) vm = s::max(vm, s::VecF::load(logits + i));
  float mx = Vw > 0 ? s::hmax(vm) : -INFINITY;
  for (int64_t i = Vw; i < V; ++i) mx = std::max(mx, logits[i]);
  int64_t arg = 0;
  while (arg < V && !(logits[arg] == mx)) ++arg;
  double z = 0;
  const s::VecF vmx = s::VecF::set1(mx);
  for (int64_t i = 0; i < Vw;) {
    s::VecF acc = s::VecF::zero();
    for (const int64_t end = std::min(Vw, i + 64 * W); i < end; i += W)
      acc = acc + s::exp(s::VecF::load(logits + i) - vmx);
    z += s::hsum_double(acc);
  }
  for (int64_t i = Vw; i < V; ++i) z += std::exp(double(logits[i]) - double(mx));
  const double lp = double(logits[target]) - double(mx) - std::log(z);
  if (!std::isfinite(lp)) throw FormatError("the model's logits are not finite (its weights hold NaN or Inf values)");
  is_argmax = arg == int64_t(target);
  return lp;
}

/// Models that run a variable number of loops per call (a looped model with a halting rule).
template <class M>
concept HaltsEarly = requires(const M& m) {
  { m.halts_early() } -> std::convertible_to<bool>;
};

template <class M>
bool halts_early(const M& m) {
  if constexpr (HaltsEarly<M>) return m.halts_early();
  return false;
}

/// Appends ids and writes the last k tokens' logits to out[k, V] (eval_tail when the model has it).
template <class M>
void eval_tail(M& m, std::span<const int32_t> ids, std::vector<float>& out, int64_t k, std::vector<float>& all) {
  if constexpr (requires { m.eval_tail(ids, out.data(), k); }) {
    m.eval_tail(ids, out.data(), k);
  } else {
    const size_t V = size_t(m.n_vocab());
    all.resize(V * ids.size());
    m.eval(ids, all.data(), /*all_logits=*/true);
    std::copy(all.end() - std::ptrdiff_t(V * size_t(k)), all.end(), out.begin());
  }
}
}  // namespace detail

/// Scores every request (in any order internally; results in request order).
template <LanguageModel Model>
std::vector<Loglik> loglikelihood(Model& m, std::span<const TokenRequest> reqs, const ScoreOptions& o = {},
                                  const ScoreCallback& progress = {}) {
  using clock = std::chrono::steady_clock;
  const int64_t V = m.n_vocab();
  std::vector<ModelInput> in(reqs.size());
  size_t longest = 1;
  for (size_t i = 0; i < reqs.size(); ++i) {
    in[i] = model_input(reqs[i], o.max_length);
    for (const int32_t t : reqs[i].context)
      if (t < 0 || t >= V)
        throw UsageError("request " + std::to_string(i) + ": token id " + std::to_string(t) +
                         " is outside the model's vocabulary");
    for (const int32_t t : reqs[i].continuation)
      if (t < 0 || t >= V)
        throw UsageError("request " + std::to_string(i) + ": token id " + std::to_string(t) +
                         " is outside the model's vocabulary");
    if (int64_t(in[i].tokens.size()) > m.n_ctx())
      throw UsageError("request " + std::to_string(i) + " needs " + std::to_string(in[i].tokens.size()) +
                       " tokens of context; the model has " + std::to_string(m.n_ctx()));
    longest = std::max(longest, reqs[i].continuation.size());
  }
  check_memory(4.0 * double(V) * double(longest), "scoring: the logits of the longest continuation");
  std::vector<float> logits(size_t(V) * longest), first(static_cast<size_t>(V)), scratch;

  // Group requests with equal context tokens (lexicographic order keeps equal prefixes adjacent;
  // longer inputs first inside a group).
  std::vector<size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), size_t(0));
  auto prefix_of = [&](size_t i) { return std::span<const int32_t>(in[i].tokens.data(), in[i].prefix); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto pa = prefix_of(a), pb = prefix_of(b);
    if (!std::equal(pa.begin(), pa.end(), pb.begin(), pb.end()))
      return std::lexicographical_compare(pa.begin(), pa.end(), pb.begin(), pb.end());
    return in[a].tokens.size() > in[b].tokens.size();
  });

  std::vector<Loglik> out(reqs.size());
  // Scores request i from row(t), the logits that predict its continuation token t.
  auto score_rows = [&](size_t i, auto&& row, double loops) {
    const auto& cont = reqs[i].continuation;
    Loglik r;
    r.greedy = true;
    for (size_t t = 0; t < cont.size(); ++t) {
      bool am = false;
      r.ll += detail::token_logprob(row(t), V, cont[t], am);
      r.greedy = r.greedy && am;
    }
    r.loops = loops;
    out[i] = r;
  };
  auto loops_of = [&] {
    if constexpr (ReportsLoops<Model>) return double(m.last_loops());
    return 1.0;
  };

  const auto t0 = clock::now();
  size_t done = 0;
  int64_t tokens_run = 0, logit_rows_run = 0;
  auto report = [&] {
    if (progress)
      progress(
          {done, reqs.size(), std::chrono::duration<double>(clock::now() - t0).count(), tokens_run, logit_rows_run});
  };
  // One request on its own: one call over its whole input; the last `cont` rows' logits are the ones scored.
  auto score_alone = [&](size_t i) {
    const size_t cont = reqs[i].continuation.size();
    m.reset();
    detail::eval_tail(m, std::span<const int32_t>(in[i].tokens), logits, int64_t(cont), scratch);
    score_rows(
        i, [&](size_t t) { return logits.data() + t * size_t(V); }, loops_of());
    tokens_run += int64_t(in[i].tokens.size());
    logit_rows_run += int64_t(cont);
    ++done;
  };
  // One group (requests with equal context tokens) at a time: prefill the context once and rewind
  // to it for each continuation; or, without sharing, one call per request.
  auto score_group = [&](size_t g, size_t g_end) {
    bool shared = false;
    if constexpr (Rewindable<Model>) {
      if (o.share_context && !detail::halts_early(m)) {
        const size_t i0 = order[g];
        m.reset();
        m.eval(prefix_of(i0), first.data());
        const double prefix_loops = loops_of();
        shared = m.can_rewind();
        if (shared) {
          tokens_run += int64_t(in[i0].prefix);
          logit_rows_run += 1;
          for (size_t k = g; k < g_end; ++k) {
            const size_t i = order[k];
            const size_t rest = in[i].tokens.size() - in[i].prefix;
            m.rewind(int64_t(in[i].prefix));
            double loops = prefix_loops;
            if (rest > 0) {
              detail::eval_tail(m, std::span<const int32_t>(in[i].tokens).subspan(in[i].prefix), logits, int64_t(rest),
                                scratch);
              loops = 0.5 * (prefix_loops + loops_of());
              tokens_run += int64_t(rest);
              logit_rows_run += int64_t(rest);
            }
            score_rows(
                i, [&](size_t t) { return t == 0 ? first.data() : logits.data() + (t - 1) * size_t(V); }, loops);
            ++done;
          }
        }
      }
    }
    if (!shared)
      for (size_t k = g; k < g_end; ++k) score_alone(order[k]);
  };

  int64_t cap_tokens = 0;
  if constexpr (BatchScorable<Model>) {
    if (o.share_context && !detail::halts_early(m) && o.batch_tokens > 0)
      cap_tokens = std::min({o.batch_tokens, m.n_batch(), m.n_ctx()});
  }
  if (cap_tokens == 0) {
    for (size_t g = 0; g < order.size();) {
      size_t g_end = g + 1;
      while (g_end < order.size() && std::ranges::equal(prefix_of(order[g]), prefix_of(order[g_end]))) ++g_end;
      score_group(g, g_end);
      report();
      g = g_end;
    }
    return out;
  }

  if constexpr (BatchScorable<Model>) {
    // Batched: many requests per forward pass, every shared token prefix run once. In
    // lexicographic order of their inputs, request k shares its first lcp_k tokens with request
    // k - 1, and its run feeds only its tokens lcp_k .. len_k - 1. All runs of a pass use one
    // range of cache rows with row = position: run k writes rows lcp_k .. len_k - 1 and attends
    // to rows 0 .. lcp_k - 1 as the runs before it left them. Those hold request k's own first
    // lcp_k tokens: the lexicographic order makes every run between the last writer of a row
    // and k agree with k on that row's token, and runs are processed in order. Request k scores
    // the logits of its last C_k positions (C_k: its continuation's length), each taken from
    // the run that wrote that row last; each run computes the logits of its positions from the
    // first one any request needs on. A question's choices share their context this way, but
    // so do the words before WinoGrande's blank, the first words of two PIQA solutions, and
    // single-token answers (whose inputs are equal: one run serves them all).
    std::vector<size_t> lex = order;
    std::sort(lex.begin(), lex.end(),
              [&](size_t a, size_t b) { return std::ranges::lexicographical_compare(in[a].tokens, in[b].tokens); });
    auto common = [&](size_t a, size_t b) {
      const auto& x = in[a].tokens;
      const auto& y = in[b].tokens;
      return int64_t(std::ranges::mismatch(x, y).in1 - x.begin());
    };
    const int64_t cap_logit_rows = std::max<int64_t>(1, kMaxBatchLogits / V);
    struct Run {
      size_t i;            // the request whose tokens it feeds
      int64_t lcp, len;    // its positions (= cache rows) lcp .. len - 1
      int64_t need;        // its first position whose logits are wanted (len: none)
      int64_t offset = 0;  // its first row in batch_logits
    };
    struct Job {
      size_t i;      // request
      size_t src0;   // its first entry in src
      int64_t need;  // position of its first scored logit row
    };
    std::vector<Run> plan;
    std::vector<int32_t> writer(size_t(m.n_ctx()), -1);  // per cache row: the run that wrote it last
    std::vector<int32_t> src;                            // per scored position of the pass: its run
    std::vector<std::pair<int32_t, int64_t>> touched;    // (earlier run, first position wanted of it)
    std::vector<Job> jobs;
    std::vector<int32_t> batch_ids;
    std::vector<TokenRun> runs;
    std::vector<float> batch_logits;
    for (size_t k0 = 0; k0 < lex.size();) {
      plan.clear();
      src.clear();
      jobs.clear();
      int64_t tokens = 0, logit_rows = 0;
      size_t k = k0;
      for (; k < lex.size(); ++k) {
        const size_t i = lex[k];
        const int64_t len = int64_t(in[i].tokens.size());
        const int64_t need = len - int64_t(reqs[i].continuation.size());
        const int64_t shared = k == k0 ? 0 : common(lex[k - 1], i);
        // Its cost: its own run's tokens and logit rows, and the rows that earlier runs must now
        // compute further back for it.
        const int64_t own_rows = shared < len ? len - std::max(need, shared) : 0;
        int64_t add_rows = own_rows;
        touched.clear();
        for (int64_t p = need; p < shared; ++p) {
          const int32_t w = writer[size_t(p)];
          if (std::ranges::find(touched, w, &std::pair<int32_t, int64_t>::first) == touched.end())
            touched.emplace_back(w, p);
        }
        for (const auto& [w, p] : touched) add_rows += std::max<int64_t>(0, plan[size_t(w)].need - p);
        if (tokens + (len - shared) > cap_tokens || logit_rows + add_rows > cap_logit_rows) {
          if (k > k0) break;  // the pass is full
          score_alone(i);     // too big for any pass: on its own
          report();
          ++k;
          break;
        }
        for (const auto& [w, p] : touched) plan[size_t(w)].need = std::min(plan[size_t(w)].need, p);
        if (shared < len) {
          std::fill(writer.begin() + shared, writer.begin() + len, int32_t(plan.size()));
          plan.push_back({i, shared, len, std::max(need, shared)});
        }
        tokens += len - shared;
        logit_rows += add_rows;
        jobs.push_back({i, src.size(), need});
        for (int64_t p = need; p < len; ++p) src.push_back(writer[size_t(p)]);
      }
      if (!jobs.empty() && !plan.empty()) {
        batch_ids.clear();
        runs.clear();
        int64_t off = 0;
        for (Run& r : plan) {
          const auto& toks = in[r.i].tokens;
          batch_ids.insert(batch_ids.end(), toks.begin() + r.lcp, toks.begin() + r.len);
          runs.push_back({r.len - r.lcp, r.lcp, r.lcp, 0, r.len - r.need});
          r.offset = off;
          off += r.len - r.need;
        }
        LOOPUS_ASSERT(off == logit_rows && int64_t(batch_ids.size()) == tokens);
        batch_logits.resize(size_t(logit_rows) * size_t(V));
        m.eval_runs(batch_ids, runs, batch_logits.data());
        tokens_run += tokens;
        logit_rows_run += logit_rows;
        const double loops = loops_of();
        // the log-softmaxes of the pass's rows, on every thread
        std::exception_ptr failed;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
        for (std::ptrdiff_t j = 0; j < std::ptrdiff_t(jobs.size()); ++j) {
          const Job& job = jobs[size_t(j)];
          try {
            score_rows(
                job.i,
                [&](size_t t) {
                  const Run& r = plan[size_t(src[job.src0 + t])];
                  return batch_logits.data() + size_t(r.offset + job.need + int64_t(t) - r.need) * size_t(V);
                },
                loops);
          } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(loopus_score_error)
#endif
            if (!failed) failed = std::current_exception();
          }
        }
        if (failed) std::rethrow_exception(failed);
        done += jobs.size();
        report();
      }
      k0 = k;
    }
  }
  return out;
}

}  // namespace loopus::eval
