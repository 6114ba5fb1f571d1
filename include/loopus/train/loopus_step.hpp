// LoopusTrainer: random deep supervision (method spec section 5): encoder without grad, sampled supervised loop steps, losses, backward.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/memory.hpp"
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
    if (n_steps < 1) throw UsageError("StepConfig::n_steps must be >= 1, got " + std::to_string(n_steps));
    if (n_supervision < 1 || n_supervision > n_steps)
      throw UsageError("StepConfig::n_supervision must be in 1..StepConfig::n_steps (" + std::to_string(n_steps) +
                       "), got " + std::to_string(n_supervision));
    if (n_apply < 1 || n_apply > 16)
      throw UsageError("StepConfig::n_apply must be in 1..16, got " + std::to_string(n_apply));
  }
};

/// SiLU(x) = x·σ(x) and its derivative (the monotonicity term, on host scalars).
inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
inline double silu_grad(double x) {
  const double s = 1.0 / (1.0 + std::exp(-x));
  return s * (1.0 + x * (1.0 - s));
}
/// BCE-with-logits of one logit against a soft target t, as torch (stable form), and its derivative.
inline double bce_with_logits(double x, double t) {
  return std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::abs(x)));
}
inline double bce_with_logits_grad(double x, double t) { return 1.0 / (1.0 + std::exp(-x)) - t; }

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
/// loop steps nor the number of supervised steps changes it. Every
/// activation, gradient and parameter lives in Backend's memory and is touched
/// only through TrainOps<Backend>; the host sees the losses, the targets and
/// the q head's B logits.
template <class Backend, class S = float>
class LoopusTrainer {
  static_assert(TrainOpsFor<Backend, S>,
                "Backend needs a TrainOps<Backend> with every training operation of ops/concept.hpp (include its "
                "ops/<backend>/train.hpp)");

 public:
  using Kernels = TrainOps<Backend>;
  using Sp = Span<Backend, S>;
  using CSp = CSpan<Backend, S>;

  /// training = false allocates no tapes (evaluation only: encode, apply_block, decode, eval_batch).
  LoopusTrainer(TrainModel<Backend, S>& m, int64_t batch, int64_t seq_len, StepConfig cfg = {}, bool training = true)
      : m_(m), cfg_(cfg), D_(Dims::of(m.hp(), batch, seq_len)), training_(training) {
    cfg_.check();
    if (batch < 1 || seq_len < 2) throw UsageError("training needs batch >= 1 and seq_len >= 2");
    if (const int w = m.hp().sliding_window; w > 0 && seq_len > w)  // no window mask: see docs/architecture.md
      throw UsageError("training sequences of " + std::to_string(seq_len) +
                       " tokens exceed the model's sliding window of " + std::to_string(w) +
                       " tokens (sliding-window attention is not implemented); use seq_len <= " + std::to_string(w));
    const LayerSplit& s = m_.split();
    nM_ = int(s.reasoning.size());
    nD_ = int(s.decoder.size());
    const int64_t N = D_.N, d = D_.d;
    check_memory(planned_bytes(D_, training_ ? cfg_.n_apply * nM_ + nD_ : 0, training_ ? cfg_.n_apply : 0, m_.gate().r),
                 training_ ? "a training batch of " + std::to_string(batch) + " sequences (AdaptConfig::batch) of " +
                                 std::to_string(seq_len) + " tokens (AdaptConfig::seq_len)"
                           : "an evaluation batch of " + std::to_string(batch) +
                                 " sequences (AdaptRunOptions::eval_batch) of " + std::to_string(seq_len) + " tokens");
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
    for (Tensor<Backend, S>* t : {&h_old_, &cur_, &nxt_, &y_, &dh_, &dp_, &dh_in_, &batch_h_}) zeros(*t, N * d);
    zeros(pooled_, D_.B * d);
    zeros(dpooled_, D_.B * d);
    zeros(dlogit_, D_.B);
    zeros(logits_, N * D_.V);
    row_loss_.resize(size_t(N));
    targets_.resize(size_t(N));
    argmax_.resize(size_t(N));
    qlogit_.resize(size_t(D_.B));
    dlogit_host_.resize(size_t(D_.B));
    last_rows_.resize(size_t(D_.B));
    for (int64_t b = 0; b < D_.B; ++b) last_rows_[size_t(b)] = b * D_.T + D_.T - 1;
  }
  LoopusTrainer(const LoopusTrainer&) = delete;
  LoopusTrainer& operator=(const LoopusTrainer&) = delete;

  const Dims& dims() const { return D_; }
  const StepConfig& config() const { return cfg_; }
  TrainModel<Backend, S>& model() { return m_; }
  /// The bytes of the buffers a trainer for D allocates (n_tapes layer tapes, n_gtapes gate tapes,
  /// gate rank r), computed before allocating them (in double: no overflow). A lower bound: the
  /// small per-row vectors are left out.
  static double planned_bytes(const Dims& D, int64_t n_tapes, int64_t n_gtapes, int64_t r) {
    const double N = double(D.N), B = double(D.B), d = double(D.d), qd = double(D.qd), kvd = double(D.kvd),
                 ff = double(D.ff), H = double(D.H), KV = double(D.KV), V = double(D.V);
    const double qk = D.qk_norm ? 1 : 0;
    const double layer_tape = N * (4 * d + 2 + 2 * qd + 2 * kvd + 2 * ff + H + qk * (qd + kvd + H + KV));
    const double gate_tape = N * (4 * d + double(r));
    const double workspace = double(D.T) * double(D.n_rot) + double(Kernels::attention_scratch(D.T, D.hd)) +
                             N * (3 * d + 2 * qd + 2 * kvd + 4 * ff + qk * (qd + kvd) +
                                  double(std::max<int64_t>(r, 1))) +
                             2 * B * d;
    const double rest = N * (2 * d + 1) + 8 * N * d + 2 * B * d + N * V;  // head tape, state buffers, logits
    return double(sizeof(S)) * (double(n_tapes + 1) * layer_tape + double(n_gtapes + 1) * gate_tape + workspace + rest);
  }

  /// Bytes of activation memory (tapes, workspace, logits) this trainer holds.
  int64_t activation_bytes() const {
    int64_t n = 0;
    for (const auto& t : tapes_) n += t.bytes();
    n += scratch_tape_.bytes();
    n += int64_t(sizeof(S)) * (logits_.numel() + 8 * D_.N * D_.d);
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
      int64_t last = T - 1;
      while (last > 0 && labels[b * T + last] < 0) --last;
      last_rows_[size_t(b)] = b * T + last;
      for (int64_t t = 0; t < T; ++t)
        targets_[size_t(b * T + t)] = t + 1 < T ? std::max<int32_t>(labels[b * T + t + 1], -1) : -1;
    }
  }

  /// h[N, d] = encoder(embed(ids)), without gradients.
  void encode(const int32_t* ids, Sp h) {
    m_.embed(ids, D_.N, h);
    for (int l : m_.split().encoder) layer_fwd(m_.layer(l), D_, ws_, h, scratch_tape_);
  }

  /// h <- G(M(h), h), or h <- M(h) when gate is false; no gradients.
  void apply_block(Sp h, bool gate = true) {
    Kernels::copy(nxt_.span(), h);
    for (int l : m_.split().reasoning) layer_fwd(m_.layer(l), D_, ws_, nxt_.span(), scratch_tape_);
    if (gate) gate_fwd(m_.gate(), D_, nxt_.span(), CSp(h), h, scratch_gate_);
    else Kernels::copy(h, nxt_.span());
  }

  /// logits[N, V] of the decoder on h (no gradients); returns them (trainer-owned).
  CSp decode(CSp h) {
    Kernels::copy(y_.span(), h);
    for (int l : m_.split().decoder) layer_fwd(m_.layer(l), D_, ws_, y_.span(), scratch_tape_);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, y_.span(), logits_.span(), htape_);
    return logits_.span();
  }

  /// Token-mean cross-entropy of the decoder on h against the current targets (no gradients).
  double decode_loss(CSp h, int64_t* counted = nullptr) {
    decode(h);
    int64_t n = 0;
    const double sum = Kernels::cross_entropy(logits_.span(), targets_.data(), D_.N, D_.V, 0.0, nullptr,
                                              row_loss_.data(), &n);
    if (counted) *counted = n;
    return n ? sum / double(n) : 0.0;
  }

  /// One supervised step on the current targets. h holds h_old on entry and
  /// h_new (detached) on exit. Adds grad_scale·dL/dθ to every trainable
  /// parameter's gradient (grad_scale = 1/accumulation, as Accelerate scales
  /// the loss). fixed_prev, when given, replaces L_prev (tests use it to hold
  /// the no-grad term constant under finite differences).
  StepLosses supervised_step(Sp h, double grad_scale = 1.0, const double* fixed_prev = nullptr) {
    if (!training_) throw UsageError("LoopusTrainer: built for evaluation only (training = false)");
    const int64_t N = D_.N, d = D_.d, B = D_.B, T = D_.T;
    StepLosses L;
    Kernels::copy(h_old_.span(), h);
    L.prev = fixed_prev ? *fixed_prev : decode_loss(h_old_.span());

    // ---- forward with tapes: n_apply applications of the block
    Kernels::copy(cur_.span(), h_old_.span());
    for (int a = 0; a < cfg_.n_apply; ++a) {
      Kernels::copy(nxt_.span(), cur_.span());
      for (int j = 0; j < nM_; ++j)
        layer_fwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, nxt_.span(), tapes_[size_t(a * nM_ + j)]);
      if (a + 1 == cfg_.n_apply) {  // q head on the pre-gate delta p − h at the last valid token (training path)
        Kernels::gather_rows_diff(nxt_.span(), cur_.span(), last_rows_.data(), B, d, pooled_.span());
        qhead_fwd(m_.q_head(), D_, pooled_.span(), qtape_);
      }
      gate_fwd(m_.gate(), D_, nxt_.span(), cur_.span(), cur_.span(), gtapes_[size_t(a)]);
    }
    // cur_ = h_new
    Kernels::copy(y_.span(), cur_.span());
    for (int i = 0; i < nD_; ++i)
      layer_fwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, y_.span(), tapes_[size_t(cfg_.n_apply * nM_ + i)]);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, y_.span(), logits_.span(), htape_);

    // ---- losses; the CE pass turns logits into dL_LM/dlogits·n (scaled below)
    int64_t n = 0;
    for (int64_t r = 0; r < N; ++r) n += targets_[size_t(r)] >= 0;
    L.tokens = n;
    const double inv_n = n ? 1.0 / double(n) : 0.0;
    const double sum = Kernels::cross_entropy(logits_.span(), targets_.data(), N, D_.V, n ? inv_n : 0.0, argmax_.data(),
                                              row_loss_.data(), &n);
    L.lm = sum * inv_n;
    L.mono = silu(L.lm - L.prev);
    Kernels::download(qtape_.logit.span(), qlogit_.data());
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
      const double x = double(qlogit_[size_t(b)]);
      lq += bce_with_logits(x, target);
      qp += 1.0 / (1.0 + std::exp(-x));
      dlogit_host_[size_t(b)] = S(bce_with_logits_grad(x, target) / double(B) * grad_scale);
    }
    Kernels::upload(dlogit_host_.data(), dlogit_.span());
    L.q = lq / double(B);
    L.q_prob = qp / double(B);
    L.token_acc = n ? double(correct_all) / double(n) : 0.0;
    L.loss = L.lm + cfg_.beta * L.mono + L.q;

    // ---- backward. dL/dL_LM = 1 + beta·SiLU'(L_LM − L_prev) (L_prev is a constant).
    const S lm_scale = S((1.0 + cfg_.beta * silu_grad(L.lm - L.prev)) * grad_scale);
    if (n) Kernels::scale(logits_.span(), lm_scale);
    else Kernels::fill(logits_.span(), S(0));
    head_bwd(m_.out_norm(), m_.lm_head(), D_, ws_, htape_, logits_.span(), dh_.span());
    for (int i = nD_ - 1; i >= 0; --i)
      layer_bwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, tapes_[size_t(cfg_.n_apply * nM_ + i)], dh_.span());
    // dh_ = dL/dh_new
    for (int a = cfg_.n_apply - 1; a >= 0; --a) {
      gate_bwd(m_.gate(), D_, ws_, gtapes_[size_t(a)], dh_.span(), dp_.span(), dh_in_.span());
      if (a + 1 == cfg_.n_apply) {
        qhead_bwd(m_.q_head(), D_, ws_, qtape_, dlogit_.span(), dpooled_.span());
        Kernels::scatter_rows_add(dp_.span(), last_rows_.data(), B, d, dpooled_.span(), S(1));
        Kernels::scatter_rows_add(dh_in_.span(), last_rows_.data(), B, d, dpooled_.span(), S(-1));
      }
      for (int j = nM_ - 1; j >= 0; --j)
        layer_bwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, tapes_[size_t(a * nM_ + j)], dp_.span());
      if (a > 0) {  // a == 0: the gradient reaching h_old is dropped (detach)
        Kernels::copy(dh_.span(), dh_in_.span());
        Kernels::add(dh_.span(), dp_.span());
      }
    }
    Kernels::copy(h, cur_.span());
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
    const Sp h = batch_h();
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
    if (!training_) throw UsageError("LoopusTrainer: built for evaluation only (training = false)");
    const int64_t N = D_.N;
    set_labels(labels ? labels : ids);
    const Sp x = batch_h();
    encode(ids, x);
    for (int j = 0; j < nM_; ++j) layer_fwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, x, tapes_[size_t(j)]);
    for (int i = 0; i < nD_; ++i)
      layer_fwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, x, tapes_[size_t(cfg_.n_apply * nM_ + i)]);
    head_fwd(m_.out_norm(), m_.lm_head(), D_, x, logits_.span(), htape_);
    StepLosses L;
    int64_t n = 0;
    for (int64_t r = 0; r < N; ++r) n += targets_[size_t(r)] >= 0;
    const double inv_n = n ? 1.0 / double(n) : 0.0;
    const double sum = Kernels::cross_entropy(logits_.span(), targets_.data(), N, D_.V, inv_n * grad_scale,
                                              argmax_.data(), row_loss_.data(), &n);
    int64_t correct = 0;
    for (int64_t r = 0; r < N; ++r) correct += targets_[size_t(r)] >= 0 && argmax_[size_t(r)] == targets_[size_t(r)];
    L.lm = L.loss = sum * inv_n;
    L.tokens = n;
    L.token_acc = n ? double(correct) / double(n) : 0.0;
    // No counted label (or grad_scale 0): cross_entropy left softmax values and raw logits in the buffer,
    // which are no gradient. The gradient of this batch is zero.
    if (inv_n * grad_scale == 0) Kernels::fill(logits_.span(), S(0));
    head_bwd(m_.out_norm(), m_.lm_head(), D_, ws_, htape_, logits_.span(), dh_.span());
    for (int i = nD_ - 1; i >= 0; --i)
      layer_bwd(m_.layer(m_.split().decoder[size_t(i)]), D_, ws_, tapes_[size_t(cfg_.n_apply * nM_ + i)], dh_.span());
    for (int j = nM_ - 1; j >= 0; --j)
      layer_bwd(m_.layer(m_.split().reasoning[size_t(j)]), D_, ws_, tapes_[size_t(j)], dh_.span());
    return L;
  }

  /// Held-out loss of the current parameters on one batch: E, then `loops`
  /// block applications (with the gate unless plain), D; returns the summed
  /// token losses and adds the counted tokens to *counted. labels as in
  /// set_labels (null: the ids themselves).
  double eval_batch(const int32_t* ids, const int32_t* labels, int loops, bool gate, int64_t* counted) {
    set_labels(labels ? labels : ids);
    const Sp h = batch_h();
    encode(ids, h);
    for (int r = 0; r < loops; ++r) apply_block(h, gate);
    decode(h);
    int64_t n = 0;
    const double sum = Kernels::cross_entropy(logits_.span(), targets_.data(), D_.N, D_.V, 0.0, nullptr,
                                              row_loss_.data(), &n);
    if (counted) *counted += n;
    return sum;
  }

  /// The trainer's state buffer for a batch (h_old_ is free outside supervised_step).
  Sp batch_h() { return batch_h_.span(); }
  /// The logits buffer [N, V] (after decode / a step's backward: what the last call left there).
  CSp logits() const { return logits_.span(); }

 private:
  TrainModel<Backend, S>& m_;
  StepConfig cfg_;
  Dims D_;
  bool training_ = true;
  int nM_ = 0, nD_ = 0;
  Workspace<Backend, S> ws_;
  std::vector<LayerTape<Backend, S>> tapes_;
  std::vector<GateTape<Backend, S>> gtapes_;
  QTape<Backend, S> qtape_;
  HeadTape<Backend, S> htape_;
  LayerTape<Backend, S> scratch_tape_;
  GateTape<Backend, S> scratch_gate_;
  Tensor<Backend, S> h_old_, cur_, nxt_, y_, dh_, dp_, dh_in_, pooled_, dpooled_, dlogit_, logits_, batch_h_;
  std::vector<double> row_loss_;
  std::vector<int32_t> targets_, argmax_;
  std::vector<S> qlogit_, dlogit_host_;
  std::vector<int64_t> last_rows_;  ///< per sequence: the row (b·T + position) the q head reads
};

}  // namespace loopus::train
