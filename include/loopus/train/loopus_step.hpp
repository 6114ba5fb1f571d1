// LoopusTrainer: random deep supervision (method spec section 5): encoder without grad, sampled supervised loop steps, losses, backward.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/random.hpp"
#include "loopus/train/blocks.hpp"
#include "loopus/train/params.hpp"

namespace loopus::train {

/// Settings of the method (defaults: the official ones).
struct StepConfig {
  int n_steps = 20;        ///< n_reasoning_steps: loop indices per batch
  int n_supervision = 5;   ///< of which this many (sampled) are supervised
  int n_apply = 2;         ///< block applications per supervised step (official: 2, run_final_with_q)
  double beta = 1.0;       ///< weight of the monotonicity term SiLU(L_LM − L_prev)

  void check() const {
    if (n_steps < 1) throw Error("StepConfig::n_steps must be >= 1, got " + std::to_string(n_steps));
    if (n_supervision < 1 || n_supervision > n_steps)
      throw Error("StepConfig::n_supervision must be in 1..StepConfig::n_steps (" + std::to_string(n_steps) +
                  "), got " + std::to_string(n_supervision));
    if (n_apply < 1 || n_apply > 16)
      throw Error("StepConfig::n_apply must be in 1..16, got " + std::to_string(n_apply));
  }
};

/// The loss parts of one supervised step (or of one plain fine-tune step).
struct StepLosses {
  double loss = 0;       ///< L_LM + beta·L_mono + L_Q
  double lm = 0;         ///< L_LM, token-mean cross-entropy after this step
  double prev = 0;       ///< L_prev, the same on the step's input state (no grad)
  double mono = 0;       ///< SiLU(L_LM − L_prev)
  double q = 0;          ///< L_Q, BCE-with-logits of the q head vs per-sample token accuracy
  double q_prob = 0;     ///< mean sigmoid(q logit)
  double token_acc = 0;  ///< token accuracy of argmax over all counted tokens
  int64_t tokens = 0;    ///< counted (non-ignored) target tokens
  int loop_index = -1;   ///< which of the n_steps loop indices this was (-1: plain step)
};

/// Trains a TrainModel with random deep supervision. Owns every activation
/// buffer, sized once for `batch` sequences of `seq_len` tokens: no allocation
/// per step. Memory is one supervised step's tapes (n_apply·|M| + |D| layer
/// tapes): each supervised step detaches its input, so neither the number of
/// loop steps nor the number of supervised steps changes it.
template <class S>
class LoopusTrainer {
 public:
  /// training = false allocates no tapes (evaluation only: encode, apply_block, decode, eval_batch).
  LoopusTrainer(TrainModel<S>& m, int64_t batch, int64_t seq_len, StepConfig cfg = {}, bool training = true)
      : m_(m), cfg_(cfg), D_(Dims::of(m.hp(), batch, seq_len)), training_(training) {
    cfg_.check();
    if (batch < 1 || seq_len < 2) throw Error("training needs batch >= 1 and seq_len >= 2");
    if (const int w = m.hp().sliding_window; w > 0 && seq_len > w)  // no window mask: see docs/architecture.md
      throw Error("training sequences of " + std::to_string(seq_len) + " tokens exceed the model's sliding window of " +
                  std::to_string(w) +
                  " tokens (sliding-window attention is not implemented); use seq_len <= " + std::to_string(w));
    const LayerSplit& s = m_.split();
    nM_ = int(s.reasoning.size());
    nD_ = int(s.decoder.size());
    const int64_t N = D_.N, d = D_.d;
    ws_.allocate(D_, m_.gate().r);
    if (training_) {
      tapes_.resize(size_t(cfg_.n_apply * nM_ + nD_));
      for (auto& t : tapes_) t.allocate(D_);
      gtapes_.resize(size_t(cfg_.n_apply));
      for (auto& t : gtapes_) t.allocate(D_, m_.gate().r);
      qtape_.allocate(D_);
    }
    htape_.allocate(D_);
    scratch_tape_.allocate(D_);
    scratch_gate_.allocate(D_, m_.gate().r);
    h_old_.resize(N * d);
    cur_.resize(N * d);
    nxt_.resize(N * d);
    y_.resize(N * d);
    dh_.resize(N * d);
    dp_.resize(N * d);
    dh_in_.resize(N * d);
    pooled_.resize(D_.B * d);
    dpooled_.resize(D_.B * d);
    dlogit_.resize(D_.B);
    logits_.resize(N * D_.V);
    batch_h_.resize(N * d);
    row_loss_.resize(N);
    targets_.resize(size_t(N));
    argmax_.resize(size_t(N));
    last_.assign(size_t(D_.B), D_.T - 1);
  }
  LoopusTrainer(const LoopusTrainer&) = delete;
  LoopusTrainer& operator=(const LoopusTrainer&) = delete;

  const Dims& dims() const { return D_; }
  const StepConfig& config() const { return cfg_; }
  TrainModel<S>& model() { return m_; }
  /// Bytes of activation memory (tapes, workspace, logits) this trainer holds.
  int64_t activation_bytes() const {
    int64_t n = 0;
    for (const auto& t : tapes_) n += t.bytes();
    n += scratch_tape_.bytes();
    n += int64_t(sizeof(S)) * (logits_.size() + 8 * D_.N * D_.d);
    return n;
  }

  /// The sorted supervised loop indices: n_sup distinct values of 0..n_steps-1,
  /// drawn by a partial Fisher–Yates shuffle from rng (deterministic for a seed).
  static std::vector<int> sample_supervised(SplitMix64& rng, int n_steps, int n_sup) {
    std::vector<int> idx(static_cast<size_t>(n_steps));
    for (int i = 0; i < n_steps; ++i) idx[size_t(i)] = i;
    for (int i = 0; i < n_sup; ++i) {
      const int j = i + int(rng.next() % uint64_t(n_steps - i));
      std::swap(idx[size_t(i)], idx[size_t(j)]);
    }
    idx.resize(size_t(n_sup));
    std::sort(idx.begin(), idx.end());
    return idx;
  }

  /// Sets the targets of the batch: row b·T + t predicts labels[b·T + t + 1]
  /// (the last row of each sequence, and labels < 0, are ignored: the shifted
  /// token-mean cross-entropy with ignore_index −100).
  /// Also sets each sequence's last valid position, which the q head reads: the
  /// last t with a label (the official mask.sum() - 1 under right padding).
  void set_labels(const int32_t* labels) {
    const int64_t B = D_.B, T = D_.T;
    for (int64_t b = 0; b < B; ++b) {
      last_[size_t(b)] = T - 1;
      while (last_[size_t(b)] > 0 && labels[b * T + last_[size_t(b)]] < 0) --last_[size_t(b)];
      for (int64_t t = 0; t < T; ++t)
        targets_[size_t(b * T + t)] = t + 1 < T ? std::max<int32_t>(labels[b * T + t + 1], -1) : -1;
    }
  }

  /// h[N, d] = encoder(embed(ids)), without gradients.
  void encode(const int32_t* ids, S* h) {
    m_.embed(ids, D_.N, h);
    for (int l : m_.split().encoder) layer_fwd(m_.layer(l), D_, ws_, h, scratch_tape_);
  }

  /// h <- G(M(h), h), or h <- M(h) when gate is false; no gradients.
  void apply_block(S* h, bool gate = true) {
    std::memcpy(nxt_.data(), h, size_t(D_.N * D_.d) * sizeof(S));
    for (int l : m_.split().reasoning) layer_fwd(m_.layer(l), D_, ws_, nxt_.data(), scratch_tape_);
    if (gate) gate_fwd(m_.gate(), D_, nxt_.data(), h, h, scratch_gate_);
    else std::memcpy(h, nxt_.data(), size_t(D_.N * D_.d) * sizeof(S));
  }

  /// logits[N, V] of the decoder on h (no gradients); returns them (trainer-owned).
  const S* decode(const S* h) {
    std::memcpy(y_.data(), h, size_t(D_.N * D_.d) * sizeof(S));
    for (int l : m_.split().decoder) layer_fwd(m_.layer(l), D_, ws_, y_.data(), scratch_tape_);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, y_.data(), logits_.data(), htape_);
    return logits_.data();
  }

  /// Token-mean cross-entropy of the decoder on h against the current targets (no gradients).
  double decode_loss(const S* h, int64_t* counted = nullptr) {
    decode(h);
    int64_t n = 0;
    const double sum = kern::cross_entropy(logits_.data(), targets_.data(), D_.N, D_.V, 0.0, nullptr,
                                           row_loss_.data(), &n);
    if (counted) *counted = n;
    return n ? sum / double(n) : 0.0;
  }

  /// One supervised step on the current targets. h holds h_old on entry and
  /// h_new (detached) on exit. Adds grad_scale·dL/dθ to every trainable
  /// parameter's gradient (grad_scale = 1/accumulation, as Accelerate scales
  /// the loss). fixed_prev, when given, replaces L_prev (tests use it to hold
  /// the no-grad term constant under finite differences).
  StepLosses supervised_step(S* h, double grad_scale = 1.0, const double* fixed_prev = nullptr) {
    if (!training_) throw Error("LoopusTrainer: built for evaluation only (training = false)");
    const int64_t N = D_.N, d = D_.d, B = D_.B, T = D_.T;
    const size_t bytes = size_t(N * d) * sizeof(S);
    StepLosses L;
    std::memcpy(h_old_.data(), h, bytes);
    L.prev = fixed_prev ? *fixed_prev : decode_loss(h_old_.data());

    // ---- forward with tapes: n_apply applications of the block
    std::memcpy(cur_.data(), h_old_.data(), bytes);
    for (int a = 0; a < cfg_.n_apply; ++a) {
      std::memcpy(nxt_.data(), cur_.data(), bytes);
      for (int j = 0; j < nM_; ++j)
        layer_fwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, nxt_.data(), tapes_[size_t(a * nM_ + j)]);
      if (a + 1 == cfg_.n_apply) {  // q head on the pre-gate delta p − h at the last valid token (training path)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < d; ++i) {
            const int64_t row = (b * T + last_[size_t(b)]) * d + i;
            pooled_[b * d + i] = nxt_[row] - cur_[row];
          }
        qhead_fwd(m_.q_head(), D_, pooled_.data(), qtape_);
      }
      gate_fwd(m_.gate(), D_, nxt_.data(), cur_.data(), cur_.data(), gtapes_[size_t(a)]);
    }
    // cur_ = h_new
    std::memcpy(y_.data(), cur_.data(), bytes);
    for (int i = 0; i < nD_; ++i)
      layer_fwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, y_.data(), tapes_[size_t(cfg_.n_apply * nM_ + i)]);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, y_.data(), logits_.data(), htape_);

    // ---- losses; the CE pass turns logits into dL_LM/dlogits·n (scaled below)
    int64_t n = 0;
    for (int64_t r = 0; r < N; ++r) n += targets_[size_t(r)] >= 0;
    L.tokens = n;
    const double inv_n = n ? 1.0 / double(n) : 0.0;
    const double sum = kern::cross_entropy(logits_.data(), targets_.data(), N, D_.V, n ? inv_n : 0.0, argmax_.data(),
                                           row_loss_.data(), &n);
    L.lm = sum * inv_n;
    L.mono = kern::silu(L.lm - L.prev);
    int64_t correct_all = 0;
    double lq = 0, qp = 0;
    for (int64_t b = 0; b < B; ++b) {
      int64_t valid = 0, correct = 0;
      for (int64_t t = 0; t < T; ++t) {
        const int32_t y = targets_[size_t(b * T + t)];
        if (y < 0) continue;
        ++valid;
        correct += argmax_[size_t(b * T + t)] == y;
      }
      correct_all += correct;
      const double target = double(correct) / double(std::max<int64_t>(valid, 1));
      const double x = double(qtape_.logit[b]);
      lq += kern::bce_with_logits(x, target);
      qp += 1.0 / (1.0 + std::exp(-x));
      dlogit_[b] = S(kern::bce_with_logits_grad(x, target) / double(B) * grad_scale);
    }
    L.q = lq / double(B);
    L.q_prob = qp / double(B);
    L.token_acc = n ? double(correct_all) / double(n) : 0.0;
    L.loss = L.lm + cfg_.beta * L.mono + L.q;

    // ---- backward. dL/dL_LM = 1 + beta·SiLU'(L_LM − L_prev) (L_prev is a constant).
    const S lm_scale = S((1.0 + cfg_.beta * kern::silu_grad(L.lm - L.prev)) * grad_scale);
    S* dl = logits_.data();
    if (n)
      for (int64_t i = 0; i < N * D_.V; ++i) dl[i] *= lm_scale;
    else
      std::fill(dl, dl + N * D_.V, S(0));
    head_bwd(m_.out_norm(), m_.lm_head(), D_, ws_, htape_, dl, dh_.data());
    for (int i = nD_ - 1; i >= 0; --i)
      layer_bwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, tapes_[size_t(cfg_.n_apply * nM_ + i)], dh_.data());
    // dh_ = dL/dh_new
    for (int a = cfg_.n_apply - 1; a >= 0; --a) {
      gate_bwd(m_.gate(), D_, ws_, gtapes_[size_t(a)], dh_.data(), dp_.data(), dh_in_.data());
      if (a + 1 == cfg_.n_apply) {
        qhead_bwd(m_.q_head(), D_, ws_, qtape_, dlogit_.data(), dpooled_.data());
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < d; ++i) {
            const int64_t row = (b * T + last_[size_t(b)]) * d + i;
            dp_[row] += dpooled_[b * d + i];
            dh_in_[row] -= dpooled_[b * d + i];
          }
      }
      for (int j = nM_ - 1; j >= 0; --j)
        layer_bwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, tapes_[size_t(a * nM_ + j)], dp_.data());
      if (a > 0)  // a == 0: the gradient reaching h_old is dropped (detach)
        for (int64_t i = 0; i < N * d; ++i) dh_[i] = dh_in_[i] + dp_[i];
    }
    std::memcpy(h, cur_.data(), bytes);
    return L;
  }

  /// One batch of random deep supervision: h0 = E(ids) without grad; for each
  /// loop index s < n_steps, a supervised step when s is in `supervised`
  /// (sorted), else h <- G(M(h), h) without grad. on_micro(const StepLosses&)
  /// runs after each supervised step's backward (the optimizer micro-step).
  template <class OnMicro>
  void train_batch(const int32_t* ids, const int32_t* labels, std::span<const int> supervised, double grad_scale,
                   OnMicro&& on_micro) {
    set_labels(labels ? labels : ids);
    S* h = batch_h();
    encode(ids, h);
    size_t k = 0;
    for (int s = 0; s < cfg_.n_steps; ++s) {
      if (k < supervised.size() && supervised[k] == s) {
        StepLosses L = supervised_step(h, grad_scale);
        L.loop_index = s;
        on_micro(L);
        ++k;
      } else {
        apply_block(h);
      }
    }
  }

  /// The control: a plain fine-tune step on the same parameters. h = E(ids)
  /// (no grad), one pass of the reasoning layers without gate, decoder, CE;
  /// backward adds grad_scale·dL/dθ.
  StepLosses plain_step(const int32_t* ids, const int32_t* labels, double grad_scale = 1.0) {
    if (!training_) throw Error("LoopusTrainer: built for evaluation only (training = false)");
    const int64_t N = D_.N, d = D_.d;
    set_labels(labels ? labels : ids);
    S* x = batch_h();
    encode(ids, x);
    for (int j = 0; j < nM_; ++j) layer_fwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, x, tapes_[size_t(j)]);
    for (int i = 0; i < nD_; ++i)
      layer_fwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, x, tapes_[size_t(cfg_.n_apply * nM_ + i)]);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, x, logits_.data(), htape_);
    StepLosses L;
    int64_t n = 0;
    for (int64_t r = 0; r < N; ++r) n += targets_[size_t(r)] >= 0;
    const double inv_n = n ? 1.0 / double(n) : 0.0;
    const double sum = kern::cross_entropy(logits_.data(), targets_.data(), N, D_.V, inv_n * grad_scale,
                                           argmax_.data(), row_loss_.data(), &n);
    int64_t correct = 0;
    for (int64_t r = 0; r < N; ++r) correct += targets_[size_t(r)] >= 0 && argmax_[size_t(r)] == targets_[size_t(r)];
    L.lm = L.loss = sum * inv_n;
    L.tokens = n;
    L.token_acc = n ? double(correct) / double(n) : 0.0;
    // No counted label (or grad_scale 0): cross_entropy left softmax values and raw logits in the buffer,
    // which are no gradient. The gradient of this batch is zero.
    if (inv_n * grad_scale == 0) std::fill(logits_.data(), logits_.data() + N * D_.V, S(0));
    head_bwd(m_.out_norm(), m_.lm_head(), D_, ws_, htape_, logits_.data(), dh_.data());
    for (int i = nD_ - 1; i >= 0; --i)
      layer_bwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, tapes_[size_t(cfg_.n_apply * nM_ + i)], dh_.data());
    for (int j = nM_ - 1; j >= 0; --j)
      layer_bwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, tapes_[size_t(j)], dh_.data());
    (void)d;
    return L;
  }

  /// Held-out loss of the current parameters on one batch: E, then `loops`
  /// block applications (with the gate unless plain), D; returns the summed
  /// token losses and adds the counted tokens to *counted. labels as in
  /// set_labels (null: the ids themselves).
  double eval_batch(const int32_t* ids, const int32_t* labels, int loops, bool gate, int64_t* counted) {
    set_labels(labels ? labels : ids);
    S* h = batch_h();
    encode(ids, h);
    for (int r = 0; r < loops; ++r) apply_block(h, gate);
    decode(h);
    int64_t n = 0;
    const double sum =
        kern::cross_entropy(logits_.data(), targets_.data(), D_.N, D_.V, 0.0, nullptr, row_loss_.data(), &n);
    if (counted) *counted += n;
    return sum;
  }

  /// The trainer's state buffer for a batch (h_old_ is free outside supervised_step).
  S* batch_h() { return batch_h_.data(); }
  const S* logits() const { return logits_.data(); }

 private:
  TrainModel<S>& m_;
  StepConfig cfg_;
  Dims D_;
  bool training_ = true;
  int nM_ = 0, nD_ = 0;
  Workspace<S> ws_;
  std::vector<LayerTape<S>> tapes_;
  std::vector<GateTape<S>> gtapes_;
  QTape<S> qtape_;
  HeadTape<S> htape_;
  LayerTape<S> scratch_tape_;
  GateTape<S> scratch_gate_;
  Buf<S> h_old_, cur_, nxt_, y_, dh_, dp_, dh_in_, pooled_, dpooled_, dlogit_, logits_, batch_h_;
  Buf<double> row_loss_;
  std::vector<int32_t> targets_, argmax_;
  std::vector<int64_t> last_;  ///< per sequence: the position the q head reads
};

}  // namespace loopus::train
