// LoopedModel<Backend, Gate, Cache>: encoder -> (reasoning block, gate) x B -> decoder, with halting.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_weights.hpp"
#include "loopus/model/transformer.hpp"
#include "loopus/ops/concept.hpp"
#include "loopus/policies/cache/no_cache.hpp"
#include "loopus/policies/cache/per_depth_cache.hpp"
#include "loopus/policies/cache/shared_cache.hpp"
#include "loopus/policies/concepts.hpp"
#include "loopus/policies/gate/selective_gate.hpp"
#include "loopus/policies/halting/halting.hpp"

namespace loopus {

/// The rows one loop iteration reports (host copies): the call's last n
/// tokens, each array [n, d] row-major (q: [n]).
struct LoopRows {
  int64_t n = 0;
  const float* h_in = nullptr;  ///< the state entering the iteration (before the gate)
  const float* p = nullptr;     ///< the reasoning block's proposal M(h_in)
  const float* h = nullptr;     ///< the state after the gate
  const float* a = nullptr;     ///< the gate's per-channel coefficient a (share of p: h = a p + (1 - a) h_in)
  const float* q = nullptr;     ///< the confidence head's q (NaN without a q head)
};

/// What an observer sees after each loop iteration of a call (for latent
/// trajectories, gate dynamics and thinking traces). h, p, h_in, a, q are the
/// call's last token's (pos); `rows` holds every token the observer asked for.
struct LoopEvent {
  int64_t pos = 0;           ///< position of the last token of the call
  int loop = 0;              ///< 0-based iteration just finished
  const float* h = nullptr;  ///< last token's state after the gate [d]
  const float* p = nullptr;  ///< its proposal [d]
  int64_t d = 0;
  float alpha = 0;              ///< mean gate coefficient a over the call's tokens
  float halt_value = NAN;       ///< what the halting rule read this loop (q, ||dh||, KL), NaN if unchecked
  const float* h_in = nullptr;  ///< last token's state before the gate [d]
  const float* a = nullptr;     ///< its per-channel gate coefficients [d]
  float q = NAN;                ///< its confidence q (NaN without a q head)
  /// log-softmax of the decoder and head run on the last token's state after
  /// this iteration [n_vocab] (what the model would say if it stopped here),
  /// when LoopObserveOptions::decode; else nullptr.
  const float* logprobs = nullptr;
  int64_t n_vocab = 0;
  LoopRows rows;  ///< the last rows.n tokens of the call (1, or all with LoopObserveOptions::all_rows)
};

/// What an observer asks the model to compute for it (only while it is set).
struct LoopObserveOptions {
  bool all_rows = false;  ///< report every token of a call, not just the last
  bool decode = false;    ///< decode the last token's state after every iteration (LoopEvent::logprobs)
};

/// Receives every loop iteration (LoopedModel::set_observer). Costs nothing
/// while none is set: the loop tests one pointer per iteration.
struct LoopObserver {
  virtual ~LoopObserver() = default;
  virtual LoopObserveOptions wants() const { return {}; }
  virtual void on_loop(const LoopEvent& e) = 0;
};

struct LoopParams {
  HaltingParams halting;  ///< halting.max_loops is B
};

/// A pretrained model run as a looped latent-refinement model (LoopUS).
/// One sequence; eval() appends tokens like CausalLM::eval. Every activation
/// and cache lives in Backend's memory and is touched only through
/// Ops<Backend> (ops/concept.hpp), the gate and the cache policy.
/// @tparam Backend a backend tag with Ops<Backend> (Reference, Cpu).
/// @tparam Gate a GatePolicy (NoGate, FixedMixGate, SelectiveGate).
/// @tparam Cache a CachePolicy (PerDepthCache, SharedCache, NoCache).
template <class Backend, class Gate = SelectiveGate, class Cache = PerDepthCache>
class LoopedModel {
  static_assert(OpsBackend<Backend>,
                "Backend needs an Ops<Backend> with every operation of ops/concept.hpp (include its ops header)");
  static_assert(GatePolicy<Gate, Backend>,
                "Gate must provide kName, Weights, template<class Backend> reserve(T, d) and blend(p, h, T); "
                "see include/loopus/policies/concepts.hpp");
  static_assert(CachePolicy<Cache, Backend>,
                "Cache must provide kName, kRecompute, reasoning_slots(n_reason, n_loop), slot(j, r, n_reason) and "
                "after_exit(kv, loops, n_loop, n_reason, pos0, T); see include/loopus/policies/concepts.hpp");
  using K = Ops<Backend>;
  using S = Span<Backend>;
  using CS = CSpan<Backend>;

 public:
  LoopedModel(std::shared_ptr<const LoopedWeights> w, LoopParams lp, ContextParams cp = {}, Gate gate = {},
              Cache cache = {})
      : w_(std::move(w)), lp_(lp), cp_(cp), gate_(std::move(gate)), cache_(cache),
        tf_(w_->base, std::min(cp.n_batch, cp.n_ctx)), halter_(lp.halting) {
    const HParams& hp = tf_.hp();
    const LayerSplit& s = w_->split;
    if (s.n_layer() != hp.n_layer || s.reasoning.empty())
      throw UsageError("layer split " + s.text() + " does not cover the model's " + std::to_string(hp.n_layer) +
                       " layers");
    const int B = lp_.halting.max_loops;
    if (B < 1 || B > 1024) throw UsageError("max_loops (B) must be in 1..1024, got " + std::to_string(B));
    if (lp_.halting.needs_q() && !w_->q_head)
      throw UsageError("halting rule " + lp_.halting.text() + " needs a confidence head (q_head); this model has none");
    const int64_t Tmax = tf_.max_tokens(), d = hp.n_embd;
    const int nE = int(s.encoder.size()), nM = int(s.reasoning.size()), nD = int(s.decoder.size());
    const int n_rea = cache_.reasoning_slots(nM, B);
    detail::check_context(hp, cp_, int64_t(nE) + n_rea + nD,
                          double(Cache::kRecompute ? cp_.n_ctx : Tmax) * double(d) * 2 + double(Tmax) * double(d),
                          std::to_string(nE + n_rea + nD) + " layer slots: " + std::to_string(n_rea) +
                              " for the reasoning block with " + std::to_string(B) + " loops and the " +
                              std::string(Cache::kName) + " cache");
    enc_.allocate(nE, cp_.n_ctx, hp.kv_dim());
    rea_.allocate(n_rea, cp_.n_ctx, hp.kv_dim());
    dec_.allocate(nD, cp_.n_ctx, hp.kv_dim());
    h_.reshape({Cache::kRecompute ? cp_.n_ctx : Tmax, d});
    p_.reshape({Cache::kRecompute ? cp_.n_ctx : Tmax, d});
    probe_.reshape({Tmax, d});
    last_in_.reshape({d});
    q_in_.reshape({d});
    if (lp_.halting.needs_decode()) {
      logp_prev_.reshape({hp.n_vocab});
      logp_cur_.reshape({hp.n_vocab});
    }
    if constexpr (Cache::kRecompute) history_.reserve(size_t(cp_.n_ctx));
    gate_.template reserve<Backend>(Tmax, d);
    tf_.reserve_context(cp_.n_ctx);
  }

  void reset() {
    n_past_ = 0;
    history_.clear();
    for (int i = 0; i < rea_.n_slot(); ++i) rea_.set_begin(i, 0);
  }
  /// Keeps the first n tokens (Rewindable). Exact while every reasoning depth
  /// cache still holds all tokens: always with fixed loops, and after early
  /// exits with ExitFill::kLatest or the shared cache; an exit that dropped
  /// deeper caches (PerDepthCache, kDrop) cannot be undone (can_rewind()).
  void rewind(int64_t n) {
    if (n < 0 || n > n_past_)
      throw UsageError("rewind: " + std::to_string(n) + " is outside 0.." + std::to_string(n_past_));
    if (!can_rewind())
      throw UsageError("rewind: an early exit dropped deeper reasoning caches; reset() and feed the prefix again");
    n_past_ = n;
    if constexpr (Cache::kRecompute) history_.resize(size_t(n));
  }
  bool can_rewind() const {
    for (int i = 0; i < rea_.n_slot(); ++i)
      if (rea_.begin(i) != 0) return false;
    return true;
  }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cp_.n_ctx; }
  /// The most tokens one forward pass takes (ContextParams::n_batch, at most n_ctx).
  int64_t n_batch() const { return tf_.max_tokens(); }
  int n_vocab() const { return tf_.hp().n_vocab; }
  const HParams& hp() const { return tf_.hp(); }
  int n_loops_max() const { return lp_.halting.max_loops; }
  /// Whether a call may stop before max_loops (a halting rule other than fixed).
  bool halts_early() const { return lp_.halting.rule != HaltRule::kFixed && lp_.halting.max_loops > 1; }
  /// Loop iterations the last eval() ran (for its last token).
  int last_loops() const { return last_loops_; }
  /// Bytes held by all KV caches (encoder + reasoning depths + decoder).
  size_t cache_bytes() const { return enc_.bytes() + rea_.bytes() + dec_.bytes(); }
  /// Bytes of KV cache one token occupies.
  size_t cache_bytes_per_token() const {
    return enc_.bytes_per_token() + rea_.bytes_per_token() + dec_.bytes_per_token();
  }
  /// Receives every loop iteration of eval() (states copied to the host only
  /// while one is set; eval_runs() reports nothing). nullptr removes it.
  void set_observer(LoopObserver* o) {
    observer_ = o;
    if (o && obs_in_.numel() == 0) {
      obs_in_.reshape({h_.dim(0), hp().n_embd});
      obs_qin_.reshape({hp().n_embd});
      obs_logits_.reshape({hp().n_vocab});
    }
  }
  Gate& gate() { return gate_; }

  /// Appends ids; writes the last token's logits to logits[V] (or all appended
  /// tokens' to logits[n, V] when all_logits), in host memory.
  void eval(std::span<const int32_t> ids, float* logits, bool all_logits = false) {
    eval_tail(ids, logits, all_logits ? int64_t(ids.size()) : 1);
  }
  /// Appends ids; writes the logits of the last k of them to logits[k, V]. One
  /// call of at most ContextParams::n_batch tokens loops once for all of them:
  /// with halting, the exit is decided on its last token.
  void eval_tail(std::span<const int32_t> ids, float* logits, int64_t k) {
    const int64_t n = int64_t(ids.size());
    if (n_past_ + n > cp_.n_ctx)
      throw LimitError("context full: " + std::to_string(n_past_ + n) + " tokens > n_ctx " + std::to_string(cp_.n_ctx));
    if (n > 0 && (k < 1 || k > n))
      throw UsageError("eval_tail: k = " + std::to_string(k) + " must be in 1.." + std::to_string(n));
    if constexpr (Cache::kRecompute) {
      history_.insert(history_.end(), ids.begin(), ids.end());
      eval_recompute(k, logits);
      n_past_ += n;
    } else {
      const int64_t first = n - k;
      for (int64_t t0 = 0; t0 < n; t0 += tf_.max_tokens()) {
        const int64_t T = std::min(tf_.max_tokens(), n - t0);
        const int64_t r0 = std::clamp<int64_t>(first - t0, 0, T);
        eval_cached(ids.data() + t0, T, r0, logits + std::max<int64_t>(t0 + r0 - first, 0) * n_vocab());
        n_past_ += T;
      }
    }
  }

  /// Batched scoring, as CausalLM::eval_runs: several runs of tokens laid out
  /// in the caches by the caller (TokenRun), one forward pass of at most
  /// n_batch tokens, the logits of each run's last n_logits tokens to
  /// logits[rows, V]. Every depth of every run loops B times, so it needs fixed
  /// loops (not halts_early()) and a cache policy that keeps caches across calls.
  /// Leaves the sequence empty (n_past() == 0).
  void eval_runs(std::span<const int32_t> ids, std::span<const TokenRun> runs, float* logits) {
    if constexpr (Cache::kRecompute) {
      throw UsageError("eval_runs: the " + std::string(Cache::kName) +
                       " policy reruns the whole sequence on every call; score one request at a time");
    } else {
      if (halts_early())
        throw UsageError("eval_runs: halting rule " + lp_.halting.text() +
                         " decides per call; batched scoring needs fixed loops");
      const int64_t rows = detail::check_runs(ids, runs, tf_.max_tokens(), cp_.n_ctx);
      reset();
      const LayerSplit& s = w_->split;
      const int64_t d = hp().n_embd, T = int64_t(ids.size());
      const int nM = int(s.reasoning.size());
      if (T == 0) return;
      const S h = h_.rows(0, T);
      tf_.embed(ids.data(), T, h);
      for (size_t i = 0; i < s.encoder.size(); ++i) tf_.layer(s.encoder[i], h, runs, enc_.slot(int(i)));
      [[maybe_unused]] const int loops = run_loops(h, T, 0, T, /*observe=*/false, [&](int r, S p) {
        for (int j = 0; j < nM; ++j) tf_.layer(s.reasoning[size_t(j)], p, runs, rea_.slot(cache_.slot(j, r, nM)));
      });
      LOOPUS_ASSERT(loops == lp_.halting.max_loops);  // fixed loops: no cache to fill after an exit
      for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], h, runs, dec_.slot(int(i)));
      if (rows > 0) tf_.head_to_host(detail::gather_logit_rows(h, runs, d, y_), rows, logits);
    }
  }

 private:
  // ---- the encoder -> loop -> decoder path, with KV caches kept across calls ----
  /// Runs T tokens; writes the logits of rows [r0, T) to logits (none when r0 == T).
  void eval_cached(const int32_t* ids, int64_t T, int64_t r0, float* logits) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, pos0 = n_past_;
    const int nM = int(s.reasoning.size());
    const S h = h_.rows(0, T);

    tf_.embed(ids, T, h);  // [T, d]
    for (size_t i = 0; i < s.encoder.size(); ++i) tf_.layer(s.encoder[i], h, T, pos0, enc_.slot(int(i)));

    const int loops = run_loops(h, T, pos0, T, true, [&](int r, S p) {
      for (int j = 0; j < nM; ++j) tf_.layer(s.reasoning[size_t(j)], p, T, pos0, rea_.slot(cache_.slot(j, r, nM)));
    });
    cache_.after_exit(rea_, loops, lp_.halting.max_loops, nM, pos0, T);

    for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], h, T, pos0, dec_.slot(int(i)));
    if (r0 < T) tf_.head_to_host(h.rows(r0, T - r0, d), T - r0, logits);
  }

  // ---- no cache: rerun the whole sequence every call ----
  void eval_recompute(int64_t k, float* logits) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, N = int64_t(history_.size()), Tb = tf_.max_tokens();
    const int nM = int(s.reasoning.size());
    const S h = h_.rows(0, N);  // [N, d]
    for (int64_t c = 0; c < N; c += Tb) {
      const int64_t T = std::min(Tb, N - c);
      tf_.embed(history_.data() + c, T, h.rows(c, T, d));
      for (size_t i = 0; i < s.encoder.size(); ++i) tf_.layer(s.encoder[i], h.rows(c, T, d), T, c, enc_.slot(int(i)));
    }
    run_loops(h, N, 0, Tb, true, [&](int, S p_all) {
      // p_all holds the proposal for all N rows (h copied), run chunk by chunk
      for (int64_t c = 0; c < N; c += Tb) {
        const int64_t T = std::min(Tb, N - c);
        for (int j = 0; j < nM; ++j) tf_.layer(s.reasoning[size_t(j)], p_all.rows(c, T, d), T, c, rea_.slot(j));
      }
    });
    for (int64_t c = 0; c < N; c += Tb) {
      const int64_t T = std::min(Tb, N - c);
      for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], h.rows(c, T, d), T, c, dec_.slot(int(i)));
    }
    if (k > 0) tf_.head_to_host(h.rows(N - k, k, d), k, logits);
  }

  /// The loop itself, over rows [0, n) of h (the chunk, or the whole sequence
  /// for NoCache). block(r, p) runs the reasoning layers at depth r on p in
  /// place. Reports to the observer when `observe`. Returns the iterations run.
  template <class Block>
  int run_loops(S h, int64_t n, int64_t pos0, int64_t chunk, bool observe, Block&& block) {
    const int64_t d = hp().n_embd;
    const int B = lp_.halting.max_loops;
    const HaltingParams& hpar = lp_.halting;
    LOOPUS_ASSERT(n <= p_.dim(0));
    LoopObserver* const obs = observe ? observer_ : nullptr;
    const LoopObserveOptions want = obs ? obs->wants() : LoopObserveOptions{};
    const int64_t orows = obs ? (want.all_rows ? n : 1) : 0;  // the last orows rows are reported
    halter_.begin();
    have_prev_ = false;
    int loops = 0;
    const S p = p_.rows(0, n);
    const S h_last = h.rows(n - 1, 1, d);
    const CS p_last = p.rows(n - 1, 1, d);
    for (int r = 0; r < B; ++r) {
      K::copy(p, h);  // p <- M(h)
      block(r, p);
      const bool check = halter_.checks_at(r) && r + 1 < B;
      // KL needs a decoded distribution every loop, also where it does not yet decide
      const bool measure = check || (hpar.needs_decode() && r + 1 < B);
      if (measure) K::copy(last_in_.span(), h_last);
      if (check && hpar.needs_q() && hpar.q_input == QInput::kDelta) K::sub(p_last, last_in_.span(), q_in_.span());
      if (obs) K::copy(obs_in_.rows(0, orows), h.rows(n - orows, orows, d));
      blend_rows(p, h, n, chunk, orows);
      loops = r + 1;
      const float value = measure ? halt_value(h, n, pos0, h_last) : NAN;
      if (obs) report(*obs, want, h, p, n, pos0, orows, r, value);
      if (check && halter_.decide(value)) break;
    }
    last_loops_ = loops;
    return loops;
  }

  /// The gate over rows [0, n) in chunks; copies the per-channel coefficients
  /// of the last `arows` rows to obs_a_ (observers only).
  void blend_rows(CS p, S h, int64_t n, int64_t chunk, int64_t arows) {
    const int64_t d = hp().n_embd;
    if (arows > 0) obs_a_.resize(size_t(arows * d));
    for (int64_t c = 0; c < n; c += chunk) {
      const int64_t T = std::min(chunk, n - c);
      gate_.template blend<Backend>(p.rows(c, T, d), h.rows(c, T, d), T);
      const int64_t lo = std::max(c, n - arows), hi = c + T;  // reported rows in this chunk
      if (lo >= hi) continue;
      float* out = obs_a_.data() + (lo - (n - arows)) * d;
      if constexpr (requires { gate_.template alpha_rows<Backend>(int64_t{}, int64_t{}, out); })
        gate_.template alpha_rows<Backend>(lo - c, hi - lo, out);
      else std::fill(out, out + (hi - lo) * d, gate_.last_mean_alpha());
    }
  }

  /// Copies what the observer sees to the host and calls it.
  void report(LoopObserver& obs, const LoopObserveOptions& want, CS h, CS p, int64_t n, int64_t pos0, int64_t orows,
              int r, float value) {
    const int64_t d = hp().n_embd, r0 = n - orows;
    obs_hin_.resize(size_t(orows * d));
    obs_p_.resize(size_t(orows * d));
    obs_h_.resize(size_t(orows * d));
    obs_q_.assign(size_t(orows), NAN);
    K::download(obs_in_.rows(0, orows), obs_hin_.data());
    K::download(p.rows(r0, orows, d), obs_p_.data());
    K::download(h.rows(r0, orows, d), obs_h_.data());
    if (w_->q_head) {
      for (int64_t i = 0; i < orows; ++i) {
        CS x = h.rows(r0 + i, 1, d);
        if (lp_.halting.q_input == QInput::kDelta) {
          K::sub(p.rows(r0 + i, 1, d), obs_in_.rows(i, 1), obs_qin_.span());
          x = obs_qin_.span();
        }
        obs_q_[size_t(i)] = w_->q_head->template prob<Backend>(x);
      }
    }
    LoopEvent e;
    e.pos = pos0 + n - 1;
    e.loop = r;
    e.d = d;
    e.alpha = gate_.last_mean_alpha();
    e.halt_value = value;
    const size_t last = size_t((orows - 1) * d);
    e.h = obs_h_.data() + last;
    e.p = obs_p_.data() + last;
    e.h_in = obs_hin_.data() + last;
    e.a = obs_a_.data() + last;
    e.q = obs_q_.back();
    e.rows = {orows, obs_hin_.data(), obs_p_.data(), obs_h_.data(), obs_a_.data(), obs_q_.data()};
    if (want.decode) {
      decode_last(h, n, pos0, obs_logits_.span());
      K::log_softmax(obs_logits_.span());
      obs_lp_.resize(size_t(n_vocab()));
      K::download(obs_logits_.span(), obs_lp_.data());
      e.logprobs = obs_lp_.data();
      e.n_vocab = n_vocab();
    }
    obs.on_loop(e);
  }

  float halt_value(CS h, int64_t n, int64_t pos0, CS h_last) {
    switch (lp_.halting.rule) {
      case HaltRule::kThreshold:
      case HaltRule::kCdf:
        return w_->q_head->template prob<Backend>(lp_.halting.q_input == QInput::kDelta ? q_in_.span() : h_last);
      case HaltRule::kConvergence: return float(K::distance(h_last, last_in_.span()));
      case HaltRule::kKl: return decoded_kl(h, n, pos0);
      case HaltRule::kFixed: break;
    }
    return NAN;
  }

  /// The decoder and head on a copy of rows [0, n) of the state: the last
  /// row's logits to out[V]. The decoder cache rows it writes are rewritten by
  /// the call's final decode.
  void decode_last(CS h, int64_t n, int64_t pos0, S out) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, Tb = tf_.max_tokens();
    // Decode rows in chunks; only the last chunk's last row is needed, but every row feeds attention.
    for (int64_t c = 0; c < n; c += Tb) {
      const int64_t T = std::min(Tb, n - c);
      const S probe = probe_.rows(0, T);
      K::copy(probe, h.rows(c, T, d));
      for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], probe, T, pos0 + c, dec_.slot(int(i)));
      if (c + T == n) tf_.head(probe.rows(T - 1, 1, d), 1, out);
    }
  }

  /// KL(p_prev || p_cur) of the decoder's next-token distribution for the last
  /// row (decode_last), for the KL halting rule.
  float decoded_kl(CS h, int64_t n, int64_t pos0) {
    decode_last(h, n, pos0, logp_cur_.span());
    K::log_softmax(logp_cur_.span());
    const double kl = have_prev_ ? K::kl_div(logp_prev_.span(), logp_cur_.span()) : 0.0;
    std::swap(logp_prev_, logp_cur_);
    const bool first = !have_prev_;
    have_prev_ = true;
    return first ? INFINITY : float(std::max(0.0, kl));
  }

  std::shared_ptr<const LoopedWeights> w_;
  LoopParams lp_;
  ContextParams cp_;
  Gate gate_;
  Cache cache_;
  Transformer<Backend> tf_;
  Halter halter_;
  KvCache<Backend> enc_, rea_, dec_;
  Tensor<Backend> h_, p_, probe_, last_in_, q_in_, logp_prev_, logp_cur_, y_;
  Tensor<Backend> obs_in_, obs_qin_, obs_logits_;                        ///< observer scratch (sized by set_observer)
  std::vector<float> obs_hin_, obs_p_, obs_h_, obs_a_, obs_q_, obs_lp_;  ///< host copies for the observer
  bool have_prev_ = false;
  std::vector<int32_t> history_;
  int64_t n_past_ = 0;
  int last_loops_ = 0;
  LoopObserver* observer_ = nullptr;
};

}  // namespace loopus
