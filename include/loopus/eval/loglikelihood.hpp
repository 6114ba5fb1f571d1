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
  /// Batched scoring (models with eval_runs, sharing contexts, fixed loops): the requests of
  /// several contexts go through the model together, up to this many tokens per forward pass
  /// (and at most the model's n_batch() and n_ctx()). 0: one context at a time.
  int64_t batch_tokens = 512;
};

/// The most logits one batched forward pass writes (floats): 128 MiB of them.
inline constexpr int64_t kMaxBatchLogits = int64_t(1) << 25;

struct ScoreProgress {
  size_t done = 0, total = 0;
  double seconds = 0;
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
  auto score_rows = [&](size_t i, const float* first_row, const float* rest, double loops) {
    const auto& cont = reqs[i].continuation;
    Loglik r;
    r.greedy = true;
    for (size_t t = 0; t < cont.size(); ++t) {
      bool am = false;
      r.ll += detail::token_logprob(t == 0 ? first_row : rest + (t - 1) * size_t(V), V, cont[t], am);
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
  auto report = [&] {
    if (progress) progress({done, reqs.size(), std::chrono::duration<double>(clock::now() - t0).count()});
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
          for (size_t k = g; k < g_end; ++k) {
            const size_t i = order[k];
            const size_t rest = in[i].tokens.size() - in[i].prefix;
            m.rewind(int64_t(in[i].prefix));
            double loops = prefix_loops;
            if (rest > 0) {
              detail::eval_tail(m, std::span<const int32_t>(in[i].tokens).subspan(in[i].prefix), logits, int64_t(rest),
                                scratch);
              loops = 0.5 * (prefix_loops + loops_of());
            }
            score_rows(i, first.data(), logits.data(), loops);
            ++done;
          }
        }
      }
    }
    if (!shared) {
      for (size_t k = g; k < g_end; ++k) {
        const size_t i = order[k];
        const size_t cont = reqs[i].continuation.size();
        m.reset();
        // One call over the whole input; the last `cont` rows' logits are the ones scored.
        detail::eval_tail(m, std::span<const int32_t>(in[i].tokens), logits, int64_t(cont), scratch);
        score_rows(i, logits.data(), logits.data() + size_t(V), loops_of());
        ++done;
      }
    }
  };

  std::vector<std::pair<size_t, size_t>> groups;
  for (size_t g = 0; g < order.size();) {
    size_t g_end = g + 1;
    while (g_end < order.size() && std::ranges::equal(prefix_of(order[g]), prefix_of(order[g_end]))) ++g_end;
    groups.emplace_back(g, g_end);
    g = g_end;
  }

  // Batched: several groups per forward pass. Each group gets its own range of cache rows: its
  // context as one run (the logits of its last token), then each continuation as a run at the
  // rows right after the context (they reuse those rows one after the other).
  int64_t cap_tokens = 0;
  if constexpr (BatchScorable<Model>) {
    if (o.share_context && !detail::halts_early(m) && o.batch_tokens > 0)
      cap_tokens = std::min({o.batch_tokens, m.n_batch(), m.n_ctx()});
  }
  const int64_t cap_logit_rows = std::max<int64_t>(1, kMaxBatchLogits / V);
  struct GroupSize {
    int64_t tokens = 0, rows = 0, logit_rows = 0;
  };
  auto size_of = [&](size_t gi) {
    GroupSize z;
    const auto [g, g_end] = groups[gi];
    const int64_t p = int64_t(in[order[g]].prefix);
    int64_t widest = 0;
    z.tokens = p;
    z.logit_rows = 1;
    for (size_t k = g; k < g_end; ++k) {
      const int64_t rest = int64_t(in[order[k]].tokens.size()) - p;
      z.tokens += rest;
      z.logit_rows += rest;
      widest = std::max(widest, rest);
    }
    z.rows = p + widest;
    return z;
  };
  std::vector<int32_t> batch_ids;
  std::vector<TokenRun> runs;
  std::vector<float> batch_logits;
  struct RowJob {
    size_t i;
    const float* first;
    const float* rest;
  };
  std::vector<RowJob> jobs;
  for (size_t gi = 0; gi < groups.size();) {
    const GroupSize z0 = size_of(gi);
    if (cap_tokens == 0 || z0.tokens > cap_tokens || z0.logit_rows > cap_logit_rows) {
      score_group(groups[gi].first, groups[gi].second);  // a group too big for a batch: on its own
      report();
      ++gi;
      continue;
    }
    if constexpr (BatchScorable<Model>) {
      // the groups that fit one pass, contexts first (their rows come before the continuations')
      size_t ge = gi;
      GroupSize sum;
      while (ge < groups.size()) {
        const GroupSize z = size_of(ge);
        if (sum.tokens + z.tokens > cap_tokens || sum.rows + z.rows > cap_tokens ||
            sum.logit_rows + z.logit_rows > cap_logit_rows)
          break;
        sum.tokens += z.tokens;
        sum.rows += z.rows;
        sum.logit_rows += z.logit_rows;
        ++ge;
      }
      batch_ids.clear();
      runs.clear();
      int64_t region = 0;
      for (size_t b = gi; b < ge; ++b) {
        const size_t i0 = order[groups[b].first];
        const int64_t p = int64_t(in[i0].prefix);
        batch_ids.insert(batch_ids.end(), in[i0].tokens.begin(), in[i0].tokens.begin() + p);
        runs.push_back({p, 0, region, region, 1});
        region += size_of(b).rows;
      }
      region = 0;
      for (size_t b = gi; b < ge; ++b) {
        const int64_t p = int64_t(in[order[groups[b].first]].prefix);
        for (size_t k = groups[b].first; k < groups[b].second; ++k) {
          const auto& toks = in[order[k]].tokens;
          const int64_t rest = int64_t(toks.size()) - p;
          if (rest == 0) continue;
          batch_ids.insert(batch_ids.end(), toks.begin() + p, toks.end());
          runs.push_back({rest, p, region + p, region, rest});
        }
        region += size_of(b).rows;
      }
      batch_logits.resize(size_t(sum.logit_rows) * size_t(V));
      m.eval_runs(batch_ids, runs, batch_logits.data());
      const double loops = loops_of();
      // logit rows: one per group (its context's last token), then the continuations' in order
      jobs.clear();
      const float* ctx_row = batch_logits.data();
      const float* cont_rows = batch_logits.data() + (ge - gi) * size_t(V);
      for (size_t b = gi; b < ge; ++b, ctx_row += V)
        for (size_t k = groups[b].first; k < groups[b].second; ++k) {
          const size_t i = order[k];
          jobs.push_back({i, ctx_row, cont_rows});
          cont_rows += (in[i].tokens.size() - in[i].prefix) * size_t(V);
        }
      // the log-softmaxes of the batch's rows, on every thread
      std::exception_ptr failed;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
      for (std::ptrdiff_t j = 0; j < std::ptrdiff_t(jobs.size()); ++j) {
        try {
          score_rows(jobs[size_t(j)].i, jobs[size_t(j)].first, jobs[size_t(j)].rest, loops);
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
      gi = ge;
    }
  }
  return out;
}

}  // namespace loopus::eval
