// Adapter: the LoopUS adaptation loop (batches, accumulation, AdamW, schedule), exact-resume checkpoints, held-out perplexity.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/core/random.hpp"
#include "loopus/io/json_field.hpp"
#include "loopus/train/checkpoint.hpp"
#include "loopus/train/data.hpp"
#include "loopus/train/loopus_step.hpp"
#include "loopus/train/optim.hpp"

namespace loopus::train {

/// Everything that decides a run (a resume must use the same values).
///
/// The defaults are a recipe for small runs (a few 100k tokens on a small
/// model): few loop steps per batch with long supervised steps, a higher lr,
/// and a fast gate, so that an adapted model beats the original at B = 8 on
/// such budgets (docs/training.md, "Defaults"). official() is the paper's
/// recipe for large runs (LOOPUS_METHOD.md section 5).
struct AdaptConfig {
  int64_t batch = 4;        ///< sequences per batch (official: 2, with accum 64)
  int64_t seq_len = 128;    ///< tokens per sequence (official: 1024)
  int64_t accum = 1;        ///< micro-steps (supervised steps; batches with no_loop) per optimizer update
  int64_t max_tokens = 0;   ///< training budget in tokens (rounded up to whole batches) ...
  int64_t max_steps = 0;    ///< ... or in batches
  double lr = 3e-4;         ///< peak learning rate (official: 5e-5)
  double min_lr_ratio = 0;  ///< final lr = lr · this (HF cosine: 0)
  double warmup = 0.02;     ///< warm-up, as a fraction of the token budget (schedule "cosine")
  double gate_lr_mult = 100;  ///< the gate's learning rate relative to lr (official: 1, one group)
  /// "cosine": warm-up then cosine over the token budget. "official": the
  /// official run's HF cosine-with-warmup, stepped once per micro-step over a
  /// horizon of one step per batch (so it ends after 1/n_supervision of the
  /// run and then oscillates, as the official code does), warm-up warmup_steps.
  std::string schedule = "cosine";
  int64_t warmup_steps = 300;  ///< schedule "official": warm-up in scheduler (micro-)steps
  AdamWConfig adam;
  StepConfig step{.n_steps = 2, .n_supervision = 2, .n_apply = 4};  ///< official: 20 / 5 / 2
  bool no_loop = false;     ///< the control: plain fine-tune of the same parameters
  bool pad = false;         ///< one document per sequence, right-padded (else packed); the data must match
  uint64_t seed = 0;        ///< data order and supervised-step sampling

  /// The official recipe (script/train.sh + training_runtime.py): AdamW at
  /// 5e-5 with weight decay 0.01 on every tensor, one lr group, batch 2 x
  /// accumulation 64, sequences of 1024, one document per sequence, 20 loop
  /// steps with 5 supervised, 2 applications each, HF cosine with 300
  /// warm-up steps stepped per supervised micro-step. The budget stays unset.
  static AdaptConfig official() {
    AdaptConfig c;
    c.batch = 2;
    c.seq_len = 1024;
    c.accum = 64;
    c.lr = 5e-5;
    c.min_lr_ratio = 0;
    c.gate_lr_mult = 1;
    c.schedule = "official";
    c.warmup_steps = 300;
    c.adam = AdamWConfig{};
    c.adam.weight_decay = 0.01;
    c.adam.decay_all = true;
    c.adam.clip = 0;
    c.step = StepConfig{};
    c.pad = true;
    return c;
  }

  /// The official schedule's multiplier at micro-step k (0-based): HF
  /// get_cosine_schedule_with_warmup(warmup_steps, total = batches), whose
  /// value past the horizon follows the cosine on (it is not clamped).
  double official_lr_factor(int64_t k) const {
    const double W = double(warmup_steps), H = double(total_steps()), x = double(k);
    if (x < W) return x / std::max(1.0, W);
    const double p = (x - W) / std::max(1.0, H - W);
    return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * p)));
  }

  int64_t tokens_per_batch() const { return batch * seq_len; }
  int64_t total_steps() const {
    if (max_steps > 0) return max_steps;
    return (max_tokens + tokens_per_batch() - 1) / tokens_per_batch();
  }
  void check() const {
    if (batch < 1) throw UsageError("AdaptConfig::batch must be >= 1");
    if (seq_len < 2) throw UsageError("AdaptConfig::seq_len must be >= 2");
    if (accum < 1) throw UsageError("AdaptConfig::accum must be >= 1");
    if ((max_tokens > 0) == (max_steps > 0))
      throw UsageError("give exactly one of AdaptConfig::max_tokens and AdaptConfig::max_steps (> 0)");
    if (!(lr > 0)) throw UsageError("AdaptConfig::lr must be > 0");
    if (!(warmup >= 0 && warmup < 1)) throw UsageError("AdaptConfig::warmup must be a fraction in [0, 1)");
    if (!(gate_lr_mult > 0)) throw UsageError("AdaptConfig::gate_lr_mult must be > 0");
    if (schedule != "cosine" && schedule != "official")
      throw UsageError("AdaptConfig::schedule must be cosine or official, got '" + schedule + "'");
    if (warmup_steps < 0) throw UsageError("AdaptConfig::warmup_steps must be >= 0");
    step.check();
  }
  /// The values a resume checks against the checkpoint.
  nlohmann::json json() const {
    return {{"batch", batch},       {"seq_len", seq_len},         {"accum", accum},
            {"max_tokens", max_tokens}, {"max_steps", max_steps}, {"lr", lr},
            {"min_lr_ratio", min_lr_ratio}, {"warmup", warmup},   {"weight_decay", adam.weight_decay},
            {"decay_all", adam.decay_all}, {"clip", adam.clip},   {"beta1", adam.beta1},
            {"beta2", adam.beta2},     {"eps", adam.eps},            {"n_steps", step.n_steps},
            {"n_supervision", step.n_supervision}, {"n_apply", step.n_apply}, {"beta", step.beta},
            {"no_loop", no_loop},      {"seed", seed},                {"gate_lr_mult", gate_lr_mult},
            {"pad", pad},              {"schedule", schedule},        {"warmup_steps", warmup_steps}};
  }
};

/// What one batch did.
struct BatchRecord {
  int64_t step = 0;        ///< 1-based batch number
  int64_t tokens = 0;      ///< tokens consumed after this batch
  double lr = 0;           ///< lr of the last optimizer update in this batch (0: none)
  double grad_norm = 0;    ///< its gradient norm before clipping
  int updates = 0;         ///< optimizer updates in this batch
  std::vector<StepLosses> micro;  ///< one per supervised step (one for a plain step)
};

/// Runs the adaptation of a TrainModel on packed data, one batch per step().
/// Holds the optimizer, the schedule, the data order and the sampling RNG; its
/// whole state goes into a checkpoint, so a resumed run continues bit for bit
/// (with one thread: multi-threaded reductions in the GEMMs may reorder sums).
template <class Backend, class S = float>
class Adapter {
 public:
  Adapter(TrainModel<Backend, S>& m, const PackedData& train, AdaptConfig cfg)
      : m_(m), cfg_((cfg.check(), check_layout(train, cfg), cfg)), tr_(m, cfg.batch, cfg.seq_len, cfg.step),
        opt_(m, cfg.adam), batcher_(train, cfg.batch, cfg.seed), rng_(cfg.seed ^ 0x5afe5eedc0ffeeull) {
    sched_.lr = cfg_.lr;
    sched_.min_ratio = cfg_.min_lr_ratio;
    sched_.total_tokens = double(cfg_.total_steps() * cfg_.tokens_per_batch());
    sched_.warmup_tokens = cfg_.warmup * sched_.total_tokens;
    ids_.resize(size_t(cfg_.tokens_per_batch()));
    labels_.resize(ids_.size());
    m_.set_gate_lr_mult(cfg_.gate_lr_mult);
    m_.zero_grad();
  }
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  static void check_layout(const PackedData& d, const AdaptConfig& c) {
    if (d.seq_len() != c.seq_len)
      throw UsageError("the training data has sequences of " + std::to_string(d.seq_len()) + " tokens, the run " +
                       std::to_string(c.seq_len));
    if (d.padded() != c.pad)
      throw UsageError(std::string(d.padded() ? "padded" : "packed") + " training data, but the run's config says " +
                       (c.pad ? "padded (pad = true)" : "packed (pad = false)"));
  }
  const AdaptConfig& config() const { return cfg_; }
  const LrSchedule& schedule() const { return sched_; }
  LoopusTrainer<Backend, S>& trainer() { return tr_; }
  int64_t steps_done() const { return step_; }
  int64_t tokens_done() const { return tokens_; }
  int64_t updates() const { return opt_.steps(); }
  bool done() const { return step_ >= cfg_.total_steps(); }

  /// One batch: random deep supervision (or a plain step with no_loop), with an
  /// optimizer update after every accum-th micro-step.
  BatchRecord step() {
    BatchRecord rec;
    const int64_t BT = cfg_.tokens_per_batch();
    const double tok0 = double(tokens_);
    batcher_.next(ids_.data(), labels_.data());
    const double scale = 1.0 / double(cfg_.accum);
    auto after_micro = [&](const StepLosses& L, double tok) {
      rec.micro.push_back(L);
      if (++micro_ % cfg_.accum == 0) {
        rec.lr = lr_at(micro_ - 1, tok);
        rec.grad_norm = opt_.step(rec.lr);
        ++rec.updates;
      }
    };
    if (cfg_.no_loop) {
      after_micro(tr_.plain_step(ids_.data(), labels_.data(), scale), tok0 + double(BT));
    } else {
      const auto sup = LoopusTrainer<Backend, S>::sample_supervised(rng_, cfg_.step.n_steps, cfg_.step.n_supervision);
      int k = 0;
      tr_.train_batch(ids_.data(), labels_.data(), sup, scale, [&](const StepLosses& L) {
        ++k;
        after_micro(L, tok0 + double(BT) * k / double(cfg_.step.n_supervision));
      });
    }
    tokens_ += BT;
    rec.step = ++step_;
    rec.tokens = tokens_;
    return rec;
  }

  /// Applies gradients still pending from an incomplete accumulation (at the end of a run).
  double flush() {
    if (micro_ % cfg_.accum == 0) return 0;
    const double lr = lr_at(micro_ - 1, double(tokens_));
    micro_ = (micro_ / cfg_.accum + 1) * cfg_.accum;
    return opt_.step(lr);
  }

  /// Writes the full training state (trained tensors, their gradients and
  /// AdamW moments, counters, RNG, data position) atomically to path.
  void save(const std::string& path, const nlohmann::json& extra = {}) {
    nlohmann::json st = {{"format", "loopus-train"},
                         {"version", 1},
                         {"config", cfg_.json()},
                         {"step", step_},
                         {"micro", micro_},
                         {"tokens", tokens_},
                         {"adam_steps", opt_.steps()},
                         {"rng", rng_.s},
                         {"data_epoch", batcher_.state().epoch},
                         {"data_pos", batcher_.state().pos},
                         {"scalar_bytes", sizeof(S)},
                         {"extra", extra}};
    std::vector<CheckpointBlob> blobs;
    // A host backend's tensors are written where they are; any other backend's are downloaded first
    // (the deque keeps their addresses stable while blobs point at them).
    std::deque<std::vector<S>> host;
    auto blob = [&](const std::string& name, const Tensor<Backend, S>& t) {
      const uint64_t bytes = uint64_t(t.numel()) * sizeof(S);
      if constexpr (requires { TrainOps<Backend>::data(t.span()); }) {
        blobs.push_back({name, TrainOps<Backend>::data(t.span()), bytes});
      } else {
        std::vector<S>& v = host.emplace_back(static_cast<size_t>(t.numel()));
        TrainOps<Backend>::download(t.span(), v.data());
        blobs.push_back({name, v.data(), bytes});
      }
    };
    for (auto& s : opt_.state()) {
      const Param<Backend, S>& p = *s.p;
      blob(p.name, p.w);
      blob(p.name + "#grad", p.g);
      blob(p.name + "#m", s.m);
      blob(p.name + "#v", s.v);
    }
    write_checkpoint(path, st, blobs);
  }

  /// Restores a state written by save() with the same configuration. Returns its "extra".
  nlohmann::json load(const std::string& path) {
    const auto c = LoadedCheckpoint::read(path);
    const auto& st = c.state();
    if (!st.is_object() || io::json_field<std::string>(st, "format", "", path) != "loopus-train" ||
        io::json_field<int64_t>(st, "version", 0, path) != 1)
      throw FormatError(path + ": not a loopus-train v1 state");
    if (io::json_field<int64_t>(st, "scalar_bytes", 0, path) != int64_t(sizeof(S)))
      throw UsageError(path + ": saved with another scalar type");
    const auto cfg_it = st.find("config");
    if (cfg_it == st.end() || !cfg_it->is_object()) throw FormatError(path + ": training state has no 'config' object");
    const auto want = cfg_.json(), defaults = AdaptConfig{}.json();
    for (auto& [k, v] : want.items()) {
      // A setting newer than the file (absent there) was at its default when the run started.
      const auto it = cfg_it->find(k);
      const nlohmann::json had = it != cfg_it->end() ? *it : defaults[k];
      if (had != v)
        throw UsageError(path + ": the run was started with " + k + " = " + had.dump() + ", now " + v.dump() +
                         "; resume needs the same settings");
    }
    std::vector<S> v;
    auto restore = [&](const std::string& name, Tensor<Backend, S>& t) {
      const uint64_t bytes = uint64_t(t.numel()) * sizeof(S);
      if constexpr (requires { TrainOps<Backend>::data(t.span()); }) {
        c.copy(name, TrainOps<Backend>::data(t.span()), bytes);
      } else {
        v.resize(static_cast<size_t>(t.numel()));
        c.copy(name, v.data(), bytes);
        TrainOps<Backend>::upload(v.data(), t.span());
      }
    };
    for (auto& s : opt_.state()) {
      Param<Backend, S>& p = *s.p;
      restore(p.name, p.w);
      restore(p.name + "#grad", p.g);
      restore(p.name + "#m", s.m);
      restore(p.name + "#v", s.v);
    }
    // The counters, checked against each other and the run (a resumed run indexes with them).
    const auto count = [&](const char* key, int64_t hi) {
      const auto v = io::json_required<int64_t>(st, key, path);
      if (v < 0 || v > hi)
        throw FormatError(path + ": training state '" + key + "' = " + std::to_string(v) + " is outside 0.." +
                          std::to_string(hi));
      return v;
    };
    const auto mul = [](int64_t a, int64_t b) {
      int64_t r;
      return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max() : r;
    };
    const int64_t steps = cfg_.total_steps();
    // Micro-steps: at most n_supervision per batch, rounded up to a whole accumulation by flush().
    const int64_t max_micro = mul(steps, cfg_.step.n_steps) + cfg_.accum;
    const int64_t step = count("step", steps), micro = count("micro", max_micro);
    const int64_t tokens = count("tokens", mul(steps, cfg_.tokens_per_batch()));
    const int64_t adam = count("adam_steps", max_micro);
    const int64_t epoch = count("data_epoch", std::numeric_limits<int32_t>::max());
    const int64_t pos = count("data_pos", batcher_.sequences());
    const uint64_t rng = io::json_required<uint64_t>(st, "rng", path);
    auto extra = st.contains("extra") && !st["extra"].is_null() ? st["extra"] : nlohmann::json::object();
    if (!extra.is_object()) throw FormatError(path + ": training state 'extra' is not an object");
    step_ = step;
    micro_ = micro;
    tokens_ = tokens;
    opt_.set_steps(adam);
    rng_.s = rng;
    batcher_.set_state({epoch, pos});
    return extra;
  }

  /// The trained model as a LoopUS checkpoint. As the official trainer does,
  /// it records N = n_steps (n_reasoning_steps) as the loop budget; the
  /// --no-loop control records N = 1.
  std::shared_ptr<LoopedWeights> export_looped(bool copy = false) const {
    auto lw = m_.export_looped(copy);
    lw->defaults.n_loops = cfg_.no_loop ? 1 : cfg_.step.n_steps;
    return lw;
  }

  /// Learning rate of an update made at micro-step k (0-based) after `tokens` tokens.
  double lr_at(int64_t k, double tokens) const {
    return cfg_.schedule == "official" ? cfg_.lr * cfg_.official_lr_factor(k) : sched_.at(tokens);
  }

 private:
  TrainModel<Backend, S>& m_;
  AdaptConfig cfg_;
  LoopusTrainer<Backend, S> tr_;
  AdamW<Backend, S> opt_;
  Batcher batcher_;
  SplitMix64 rng_;
  LrSchedule sched_;
  std::vector<int32_t> ids_, labels_;
  int64_t step_ = 0, micro_ = 0, tokens_ = 0;
};

/// Held-out perplexity exp(mean token cross-entropy) over the sequences of
/// `data`, padding excluded (at most max_seqs of them when > 0), evaluated in
/// batches of `batch`. loops = 0: the plain model (reasoning layers once, no
/// gate: the original, non-looped network); loops >= 1: E, then `loops` gated
/// applications of the block, then D (the looped model with a fixed B, no early exit).
template <class Backend, class S>
double perplexity(TrainModel<Backend, S>& m, const PackedData& data, int64_t batch, int loops, int64_t max_seqs = 0) {
  int64_t n = data.size();
  if (max_seqs > 0) n = std::min(n, max_seqs);
  if (n == 0) throw UsageError("perplexity: no held-out sequence of " + std::to_string(data.seq_len()) + " tokens");
  const int64_t B = std::min(batch, n), T = data.seq_len();
  LoopusTrainer<Backend, S> ev(m, B, T, StepConfig{}, /*training=*/false);
  std::vector<int32_t> ids(size_t(B * T)), labels(size_t(B * T));
  double sum = 0;
  int64_t counted = 0;
  for (int64_t s0 = 0; s0 < n; s0 += B) {
    for (int64_t b = 0; b < B; ++b) {
      const bool real = s0 + b < n;
      const int32_t* src = data.seq(real ? s0 + b : 0);
      std::copy(src, src + T, ids.begin() + b * T);
      if (real) data.labels(s0 + b, labels.data() + b * T);
      else std::fill(labels.begin() + b * T, labels.begin() + (b + 1) * T, -100);  // filler rows count nothing
    }
    sum += ev.eval_batch(ids.data(), labels.data(), loops > 0 ? loops : 1, loops > 0, &counted);
  }
  return std::exp(sum / double(counted));
}

}  // namespace loopus::train
