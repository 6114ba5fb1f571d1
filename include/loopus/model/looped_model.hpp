// LoopedModel<Backend, Gate, Cache>: encoder -> (reasoning block, gate) x B -> decoder, with halting.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_weights.hpp"
#include "loopus/model/transformer.hpp"
#include "loopus/policies/cache/no_cache.hpp"
#include "loopus/policies/cache/per_depth_cache.hpp"
#include "loopus/policies/cache/shared_cache.hpp"
#include "loopus/policies/concepts.hpp"
#include "loopus/policies/gate/selective_gate.hpp"
#include "loopus/policies/halting/halting.hpp"

namespace loopus {

/// What an observer sees after each loop iteration (for trajectories and
/// thinking traces). h and p are the last token's state after the gate and
/// the proposal, both [d].
struct LoopEvent {
  int64_t pos = 0;   ///< position of the last token of the call
  int loop = 0;      ///< 0-based iteration just finished
  const float* h = nullptr;
  const float* p = nullptr;
  int64_t d = 0;
  float alpha = 0;   ///< mean gate coefficient a over the call's tokens
  float halt_value = NAN;  ///< what the halting rule read this loop (q, ||dh||, KL), NaN if unchecked
};
struct LoopObserver {
  virtual ~LoopObserver() = default;
  virtual void on_loop(const LoopEvent& e) = 0;
};

struct LoopParams {
  HaltingParams halting;  ///< halting.max_loops is B
};

/// A pretrained model run as a looped latent-refinement model (LoopUS).
/// One sequence; eval() appends tokens like CausalLM::eval.
/// @tparam Backend a backend tag with Ops<Backend> (Reference, Cpu).
/// @tparam Gate a GatePolicy (NoGate, FixedMixGate, SelectiveGate).
/// @tparam Cache a CachePolicy (PerDepthCache, SharedCache, NoCache).
template <class Backend, class Gate = SelectiveGate, class Cache = PerDepthCache>
class LoopedModel {
  static_assert(GatePolicy<Gate, Backend>,
                "Gate must provide kName, reserve(T, d) and template<class Backend> blend(p, h, T); "
                "see include/loopus/policies/concepts.hpp");
  static_assert(CachePolicy<Cache>,
                "Cache must provide kName, kRecompute, reasoning_slots(n_reason, n_loop) and slot(j, r, n_reason); "
                "see include/loopus/policies/concepts.hpp");

 public:
  LoopedModel(std::shared_ptr<const LoopedWeights> w, LoopParams lp, ContextParams cp = {}, Gate gate = {},
              Cache cache = {})
      : w_(std::move(w)), lp_(lp), cp_(cp), gate_(std::move(gate)), cache_(cache),
        tf_(w_->base, std::min(cp.n_batch, cp.n_ctx)), halter_(lp.halting) {
    const HParams& hp = tf_.hp();
    const LayerSplit& s = w_->split;
    if (s.n_layer() != hp.n_layer || s.reasoning.empty())
      throw Error("layer split " + s.text() + " does not cover the model's " + std::to_string(hp.n_layer) + " layers");
    const int B = lp_.halting.max_loops;
    if (B < 1 || B > 1024) throw Error("--loops must be in 1..1024, got " + std::to_string(B));
    if (lp_.halting.needs_q() && !w_->q_head)
      throw Error("--halt " + lp_.halting.text() + " needs a confidence head (q_head); this model has none");
    const int64_t Tmax = tf_.max_tokens(), d = hp.n_embd;
    const int nE = int(s.encoder.size()), nM = int(s.reasoning.size()), nD = int(s.decoder.size());
    enc_.allocate(nE, cp_.n_ctx, hp.kv_dim());
    rea_.allocate(cache_.reasoning_slots(nM, B), cp_.n_ctx, hp.kv_dim());
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
    gate_.reserve(Tmax, d);
    tf_.reserve_context(cp_.n_ctx);
  }

  void reset() {
    n_past_ = 0;
    history_.clear();
    for (int i = 0; i < rea_.n_slot(); ++i) rea_.set_begin(i, 0);
  }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cp_.n_ctx; }
  int n_vocab() const { return tf_.hp().n_vocab; }
  const HParams& hp() const { return tf_.hp(); }
  int n_loops_max() const { return lp_.halting.max_loops; }
  /// Loop iterations the last eval() ran (for its last token).
  int last_loops() const { return last_loops_; }
  /// Bytes held by all KV caches (encoder + reasoning depths + decoder).
  size_t cache_bytes() const { return enc_.bytes() + rea_.bytes() + dec_.bytes(); }
  /// Bytes of KV cache one token occupies.
  size_t cache_bytes_per_token() const {
    return enc_.bytes_per_token() + rea_.bytes_per_token() + dec_.bytes_per_token();
  }
  void set_observer(LoopObserver* o) { observer_ = o; }
  Gate& gate() { return gate_; }

  /// Appends ids; writes the last token's logits to logits[V] (or all appended
  /// tokens' to logits[n, V] when all_logits).
  void eval(std::span<const int32_t> ids, float* logits, bool all_logits = false) {
    const int64_t n = int64_t(ids.size());
    if (n_past_ + n > cp_.n_ctx)
      throw Error("context full: " + std::to_string(n_past_ + n) + " tokens > n_ctx " + std::to_string(cp_.n_ctx));
    if constexpr (Cache::kRecompute) {
      history_.insert(history_.end(), ids.begin(), ids.end());
      eval_recompute(n, logits, all_logits);
      n_past_ += n;
    } else {
      for (int64_t t0 = 0; t0 < n; t0 += tf_.max_tokens()) {
        const int64_t T = std::min(tf_.max_tokens(), n - t0);
        eval_cached(ids.data() + t0, T, logits, all_logits ? logits + t0 * n_vocab() : nullptr, t0 + T == n);
        n_past_ += T;
      }
    }
  }

 private:
  // ---- the encoder -> loop -> decoder path, with KV caches kept across calls ----
  void eval_cached(const int32_t* ids, int64_t T, float* last_logits, float* all_logits, bool is_last) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, pos0 = n_past_;
    const int nM = int(s.reasoning.size());
    float* h = h_.data();

    tf_.embed(ids, T, h);  // [T, d]
    for (size_t i = 0; i < s.encoder.size(); ++i) tf_.layer(s.encoder[i], h, T, pos0, enc_.slot(int(i)));

    const int loops = run_loops(h, T, pos0, T, [&](int r, float* p) {
      for (int j = 0; j < nM; ++j) tf_.layer(s.reasoning[size_t(j)], p, T, pos0, rea_.slot(cache_.slot(j, r, nM)));
    });
    after_exit(loops, pos0, T);

    for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], h, T, pos0, dec_.slot(int(i)));
    if (all_logits) tf_.head(h, T, all_logits);
    else if (is_last) tf_.head(h + (T - 1) * d, 1, last_logits);
  }

  /// Per-depth caches after a token halted after `loops` < B iterations.
  void after_exit(int loops, int64_t pos0, int64_t T) {
    if constexpr (std::is_same_v<Cache, PerDepthCache>) {
      const int B = lp_.halting.max_loops, nM = int(w_->split.reasoning.size());
      if (loops >= B) return;
      const size_t row = size_t(hp().kv_dim()), bytes = size_t(T) * row * sizeof(float);
      for (int r = loops; r < B; ++r)
        for (int j = 0; j < nM; ++j) {
          const int dst = cache_.slot(j, r, nM);
          if (cache_.exit_fill == ExitFill::kDrop) {
            rea_.set_begin(dst, pos0 + T);  // official: deeper caches thrown away
          } else {                          // latest available depth: copy from depth loops-1
            LayerKv src = rea_.slot(cache_.slot(j, loops - 1, nM)), out = rea_.slot(dst);
            std::memcpy(out.k + pos0 * int64_t(row), src.k + pos0 * int64_t(row), bytes);
            std::memcpy(out.v + pos0 * int64_t(row), src.v + pos0 * int64_t(row), bytes);
          }
        }
    }
  }

  // ---- no cache: rerun the whole sequence every call ----
  void eval_recompute(int64_t n_new, float* logits, bool all_logits) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, N = int64_t(history_.size()), Tb = tf_.max_tokens();
    const int nM = int(s.reasoning.size());
    float* h = h_.data();  // [N, d]
    for (int64_t c = 0; c < N; c += Tb) {
      const int64_t T = std::min(Tb, N - c);
      tf_.embed(history_.data() + c, T, h + c * d);
      for (size_t i = 0; i < s.encoder.size(); ++i) tf_.layer(s.encoder[i], h + c * d, T, c, enc_.slot(int(i)));
    }
    run_loops(h, N, 0, Tb, [&](int, float* p_all) {
      // p_all holds the proposal for all N rows (it is h_ copied in chunks below)
      for (int64_t c = 0; c < N; c += Tb) {
        const int64_t T = std::min(Tb, N - c);
        for (int j = 0; j < nM; ++j) tf_.layer(s.reasoning[size_t(j)], p_all + c * d, T, c, rea_.slot(j));
      }
    });
    for (int64_t c = 0; c < N; c += Tb) {
      const int64_t T = std::min(Tb, N - c);
      for (size_t i = 0; i < s.decoder.size(); ++i) tf_.layer(s.decoder[i], h + c * d, T, c, dec_.slot(int(i)));
    }
    if (all_logits) tf_.head(h + (N - n_new) * d, n_new, logits);
    else tf_.head(h + (N - 1) * d, 1, logits);
  }

  /// The loop itself, over rows [0, n) of h (the chunk, or the whole sequence
  /// for NoCache). block(r, p) runs the reasoning layers at depth r on p in
  /// place. Returns the iterations run.
  template <class Block>
  int run_loops(float* h, int64_t n, int64_t pos0, int64_t chunk, Block&& block) {
    const int64_t d = hp().n_embd;
    const int B = lp_.halting.max_loops;
    const HaltingParams& hpar = lp_.halting;
    halter_.begin();
    have_prev_ = false;
    int loops = 0;
    for (int r = 0; r < B; ++r) {
      float* p = proposal_rows(n);  // p <- M(h)
      std::memcpy(p, h, size_t(n * d) * sizeof(float));
      block(r, p);
      const float* p_last = p + (n - 1) * d;
      float* h_last = h + (n - 1) * d;
      const bool check = halter_.checks_at(r) && r + 1 < B;
      // KL needs a decoded distribution every loop, also where it does not yet decide
      const bool measure = check || (hpar.needs_decode() && r + 1 < B);
      if (measure || observer_) std::memcpy(last_in_.data(), h_last, size_t(d) * sizeof(float));
      if (check && hpar.needs_q() && hpar.q_input == QInput::kDelta)
        for (int64_t i = 0; i < d; ++i) q_in_[i] = p_last[i] - last_in_[i];
      blend_rows(p, h, n, chunk);
      loops = r + 1;
      const float value = measure ? halt_value(h, n, pos0, h_last) : NAN;
      if (observer_) observer_->on_loop({pos0 + n - 1, r, h_last, p_last, d, gate_.last_mean_alpha(), value});
      if (check && halter_.decide(value)) break;
    }
    last_loops_ = loops;
    return loops;
  }

  float* proposal_rows(int64_t n) {
    LOOPUS_ASSERT(n <= p_.dim(0));
    return p_.data();
  }

  void blend_rows(const float* p, float* h, int64_t n, int64_t chunk) {
    const int64_t d = hp().n_embd;
    for (int64_t c = 0; c < n; c += chunk) {
      const int64_t T = std::min(chunk, n - c);
      gate_.template blend<Backend>(p + c * d, h + c * d, T);
    }
  }

  float halt_value(const float* h, int64_t n, int64_t pos0, const float* h_last) {
    const int64_t d = hp().n_embd;
    switch (lp_.halting.rule) {
      case HaltRule::kThreshold:
      case HaltRule::kCdf:
        return w_->q_head->prob(lp_.halting.q_input == QInput::kDelta ? q_in_.data() : h_last);
      case HaltRule::kConvergence: {
        double ss = 0;
        for (int64_t i = 0; i < d; ++i) ss += double(h_last[i] - last_in_[i]) * (h_last[i] - last_in_[i]);
        return float(std::sqrt(ss));
      }
      case HaltRule::kKl: return decoded_kl(h, n, pos0);
      case HaltRule::kFixed: break;
    }
    return NAN;
  }

  /// KL(p_prev || p_cur) of the decoder's next-token distribution for the last
  /// row, decoding a copy of the state (the decoder cache rows it writes are
  /// rewritten by the final decode).
  float decoded_kl(const float* h, int64_t n, int64_t pos0) {
    const LayerSplit& s = w_->split;
    const int64_t d = hp().n_embd, V = n_vocab(), Tb = tf_.max_tokens();
    // Decode rows in chunks; only the last chunk's last row is needed, but every row feeds attention.
    for (int64_t c = 0; c < n; c += Tb) {
      const int64_t T = std::min(Tb, n - c);
      std::memcpy(probe_.data(), h + c * d, size_t(T * d) * sizeof(float));
      for (size_t i = 0; i < s.decoder.size(); ++i)
        tf_.layer(s.decoder[i], probe_.data(), T, pos0 + c, dec_.slot(int(i)));
      if (c + T == n) tf_.head(probe_.data() + (T - 1) * d, 1, logp_cur_.data());
    }
    log_softmax(logp_cur_.data(), V);
    double kl = 0;
    if (have_prev_) {
      for (int64_t i = 0; i < V; ++i) kl += std::exp(double(logp_prev_[i])) * (double(logp_prev_[i]) - logp_cur_[i]);
    }
    std::swap(logp_prev_, logp_cur_);
    const bool first = !have_prev_;
    have_prev_ = true;
    return first ? INFINITY : float(std::max(0.0, kl));
  }
  static void log_softmax(float* x, int64_t n) {
    double m = -INFINITY, z = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
    for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - m);
    const double lz = m + std::log(z);
    for (int64_t i = 0; i < n; ++i) x[i] = float(double(x[i]) - lz);
  }

  std::shared_ptr<const LoopedWeights> w_;
  LoopParams lp_;
  ContextParams cp_;
  Gate gate_;
  Cache cache_;
  Transformer<Backend> tf_;
  Halter halter_;
  KvCache enc_, rea_, dec_;
  Tensor h_, p_, probe_, last_in_, q_in_, logp_prev_, logp_cur_;
  bool have_prev_ = false;
  std::vector<int32_t> history_;
  int64_t n_past_ = 0;
  int last_loops_ = 0;
  LoopObserver* observer_ = nullptr;
};

}  // namespace loopus
