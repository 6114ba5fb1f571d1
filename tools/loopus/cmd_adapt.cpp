// loopus adapt: LoopUS adaptation (random deep supervision) of a pretrained model on a text corpus, on the CPU.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/train/driver.hpp"

namespace loopus::cli {

namespace {

using train::AdaptConfig;

struct AdaptArgs {
  ModelArgs model;
  std::string enc, dec;
  std::string data, val, out;
  double val_percent = 10;
  std::string docs = "blank";
  bool eos = false;
  AdaptConfig cfg;
  std::string train_parts = "all";
  std::string gate_init;  ///< empty: the checkpoint's gate, else official
  bool resume = false;
  int64_t ckpt_every = 25;
  std::string eval_loops = "1,4,8";
  int64_t eval_max_seqs = 0;
  int64_t eval_batch = 0;
  bool quiet = false;
  bool official = false;
  BackendArgs backend;
};

std::string fmt_secs(double s) {
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

void run_adapt(const AdaptArgs& a) {
  using clock = std::chrono::steady_clock;
  a.model.apply_threads();
  train::AdaptRunOptions o;
  o.model = a.model.model;
  o.open = a.model.open_options();
  o.encoder_layers = a.enc;
  o.decoder_layers = a.dec;
  o.data = a.data;
  o.val = a.val;
  o.val_percent = a.val_percent;
  o.docs = a.docs;
  o.eos = a.eos;
  o.out = a.out;
  o.cfg = a.cfg;
  o.train_parts = a.train_parts;
  o.gate_init = a.gate_init;
  o.resume = a.resume;
  o.ckpt_every = a.ckpt_every;
  o.eval_loops = parse_loop_list(a.eval_loops, "--eval-loops");
  o.eval_max_seqs = a.eval_max_seqs;
  o.eval_batch = a.eval_batch;
  o.official = a.official;

  train::AdaptCallbacks cb;
  cb.on_start = [](const train::AdaptStart& s) {
    std::fprintf(stderr,
                 "adapt: %s (%s, split %s) | train %lld tokens (%lld docs, %lld %s sequences of %lld) | held-out %lld "
                 "tokens (%lld sequences) | training %lld params (%s)%s\n",
                 s.model.c_str(), s.arch.c_str(), s.split.c_str(), (long long)s.train_tokens, (long long)s.train_docs,
                 (long long)s.train_seqs, s.padded ? "padded" : "packed", (long long)s.seq_len, (long long)s.val_tokens,
                 (long long)s.val_seqs, (long long)s.trainable, s.trained.c_str(),
                 s.no_loop ? " | --no-loop (plain fine-tune)" : "");
  };
  cb.on_resume = [](int64_t step, int64_t tokens) {
    std::fprintf(stderr, "resumed at step %lld (%lld tokens)\n", (long long)step, (long long)tokens);
  };
  cb.on_original = [](double ppl, double seconds) {
    std::fprintf(stderr, "original model: held-out perplexity %.4f (%.1fs)\n", ppl, seconds);
  };
  // On a terminal: one line, redrawn at most 5 times a second. Piped: about
  // ten lines per run (and one a minute at most apart). Every step is in log.jsonl.
  const bool tty = ::isatty(2);
  auto last_print = clock::now() - std::chrono::hours(1);
  if (!a.quiet)
    cb.on_step = [&](const train::AdaptProgress& p) {
      const int64_t every = std::max<int64_t>(1, p.total / 10);
      const double since = std::chrono::duration<double>(clock::now() - last_print).count();
      const bool show = tty ? (p.final || since >= 0.2) : (p.final || p.rec.step % every == 0 || since >= 60);
      if (!show) return;
      last_print = clock::now();
      const auto& L = p.rec.micro.back();
      std::fprintf(stderr,
                   "%sstep %lld/%lld (%.0f%%) | %.0f tok/s | loss %.4f lm %.4f mono %+.4f q %.4f acc %.3f | lr %.2e "
                   "| %s %s%s",
                   tty ? "\r\033[K" : "", (long long)p.rec.step, (long long)p.total,
                   100.0 * double(p.rec.step) / double(p.total), p.tokens_per_s, L.loss, L.lm, L.mono, L.q, L.token_acc,
                   p.rec.lr, p.final ? "took" : "ETA", fmt_secs(p.final ? p.run_seconds : p.eta_seconds).c_str(),
                   tty ? "" : "\n");
      std::fflush(stderr);
    };
  if (tty && !a.quiet) cb.on_trained = [](double) { std::fprintf(stderr, "\n"); };

  const auto res = a.backend.dispatch_host([&]<class Backend>() { return train::run_adaptation<Backend>(o, cb); });
  // Worse than where it started: say so plainly (a summary line is easy to miss).
  for (const auto& w : res.warnings)
    std::fprintf(stderr, "adapt: WARNING: %s%s\n", w.c_str(),
                 a.official
                     ? ""
                     : " (more tokens, or another --lr / --gate-lr-mult / --n-steps, may help; docs/training.md)");
  std::printf("%s", (res.summary.dump(2) + "\n").c_str());
}

/// --official: every recipe setting the user did not give on the command line
/// takes its value from AdaptConfig::official().
void apply_official(const CLI::App& sub, AdaptConfig& c) {
  const AdaptConfig o = AdaptConfig::official();
  auto unset = [&](const char* flag) { return sub.count(flag) == 0; };
  if (unset("--seq-len")) c.seq_len = o.seq_len;
  if (unset("--batch")) c.batch = o.batch;
  if (unset("--accum")) c.accum = o.accum;
  if (unset("--lr")) c.lr = o.lr;
  if (unset("--min-lr-ratio")) c.min_lr_ratio = o.min_lr_ratio;
  if (unset("--gate-lr-mult")) c.gate_lr_mult = o.gate_lr_mult;
  if (unset("--schedule")) c.schedule = o.schedule;
  if (unset("--warmup-steps")) c.warmup_steps = o.warmup_steps;
  if (unset("--weight-decay")) c.adam.weight_decay = o.adam.weight_decay;
  if (unset("--decay-all")) c.adam.decay_all = o.adam.decay_all;
  if (unset("--clip")) c.adam.clip = o.adam.clip;
  if (unset("--n-steps")) c.step.n_steps = o.step.n_steps;
  if (unset("--n-supervision")) c.step.n_supervision = o.step.n_supervision;
  if (unset("--n-apply")) c.step.n_apply = o.step.n_apply;
  if (unset("--beta")) c.step.beta = o.step.beta;
  if (unset("--pad")) c.pad = o.pad;
}

}  // namespace

void register_adapt(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "adapt",
      "LoopUS adaptation: train a looped model (reasoning block + gate + q head + decoder) with random deep "
      "supervision on a text corpus; writes a LoopUS checkpoint folder with log.jsonl and summary.json");
  auto a = std::make_shared<AdaptArgs>();
  a->model.add_to(*sub);
  sub->add_option("--encoder-layers", a->enc, "encoder layers of a plain model, official syntax: a..b or a-b (inclusive), k.. or k- (k to the last), k (= 0..k), i,j,... (exactly those), none");
  sub->add_option("--decoder-layers", a->dec, "decoder layers of a plain model; the reasoning block is the rest");
  sub->add_option("--data", a->data, "training text: plain text (documents split by --docs) or .jsonl with a \"text\" field")
      ->required();
  sub->add_option("--val", a->val, "held-out text (same formats); default: the last --val-percent % of --data's lines");
  sub->add_option("--val-percent", a->val_percent, "held-out share of --data's lines when no --val (default 10)")
      ->check(CLI::Range(0.0, 99.0));
  sub->add_option("--docs", a->docs, "plain text documents: blank (blocks between blank lines, default) or line")
      ->check(CLI::IsMember({"blank", "line"}));
  sub->add_flag("--eos", a->eos, "append EOS to every document (BOS always starts one)");
  sub->add_flag("--pad", a->cfg.pad,
                "one document per sequence, truncated and right-padded to --seq-len (the official layout; the "
                "budget counts positions, padding included) instead of packing documents back to back");
  sub->add_option("--out", a->out, "output folder: LoopUS checkpoint + train_state.bin + log.jsonl + summary.json")
      ->required();
  sub->add_option("--seq-len", a->cfg.seq_len,
                  "tokens per training sequence (default 128; --official 1024); --batch x --seq-len must fit in memory "
                  "(an up-front estimate, docs/security.md)")
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--batch", a->cfg.batch,
                  "sequences per batch (default 4; --official 2); refused up front when the training step's buffers "
                  "cannot fit in memory")
      ->check(CLI::Range(1, 1 << 16));
  sub->add_option("--accum", a->cfg.accum, "micro-steps per optimizer update: supervised steps, or batches with --no-loop (default 1; --official 64)")
      ->check(CLI::Range(1, 1 << 16));
  auto* tok = sub->add_option("--tokens", a->cfg.max_tokens, "training budget in tokens (rounded up to whole batches)");
  auto* st = sub->add_option("--steps", a->cfg.max_steps, "training budget in batches");
  tok->excludes(st);
  sub->add_flag("--official", a->official,
                "the official LoopUS recipe for large runs: lr 5e-5, one lr group, weight decay on every tensor, "
                "batch 2 x --accum 64 of 1024 tokens, one document per sequence (--pad), --n-steps 20 "
                "--n-supervision 5 --n-apply 2, HF cosine with 300 warm-up steps stepped per supervised step; "
                "flags given explicitly still win (default: the small-run recipe, docs/training.md)");
  sub->add_option("--schedule", a->cfg.schedule,
                  "cosine (warm-up then cosine over the token budget, default) or official (the official run's "
                  "per-micro-step HF cosine over one step per batch, --warmup-steps; --official sets it)")
      ->check(CLI::IsMember({"cosine", "official"}));
  sub->add_option("--warmup-steps", a->cfg.warmup_steps, "--schedule official: warm-up in micro-steps (default 300)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  sub->add_option("--lr", a->cfg.lr, "peak learning rate (default 3e-4; --official 5e-5)")->check(CLI::PositiveNumber);
  sub->add_option("--min-lr-ratio", a->cfg.min_lr_ratio, "final lr as a fraction of --lr (cosine end; default 0)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--warmup", a->cfg.warmup, "--schedule cosine: linear warm-up as a fraction of the token budget (default 0.02)")
      ->check(CLI::Range(0.0, 0.99));
  sub->add_option("--gate-lr-mult", a->cfg.gate_lr_mult,
                  "learning rate of the selective gate relative to --lr (default 100; --official 1: one group)");
  sub->add_option("--gate-init", a->gate_init,
                  "start the selective gate from: official (S4D-real A, log-uniform dt), open (a ~ 1: loop 1 is the "
                  "plain block), mix:ALPHA (a = ALPHA everywhere); default: the checkpoint's gate, else official");
  sub->add_option("--weight-decay", a->cfg.adam.weight_decay, "AdamW decoupled weight decay (default 0.01, as official)");
  sub->add_flag("--decay-all", a->cfg.adam.decay_all, "decay norms, biases and A_log too (--official does, as the official run)");
  sub->add_option("--clip", a->cfg.adam.clip, "global gradient-norm clip (default 0 = off, as the official run)");
  sub->add_option("--n-supervision", a->cfg.step.n_supervision, "supervised loop steps per batch (default 2; --official 5)");
  sub->add_option("--n-steps", a->cfg.step.n_steps, "loop steps per batch, n_reasoning_steps; the checkpoint records it as N (default 2; --official 20)");
  sub->add_option("--n-apply", a->cfg.step.n_apply, "block applications per supervised step (default 4; --official 2, as the official code)");
  sub->add_option("--beta", a->cfg.step.beta, "weight of the monotonicity term SiLU(L_LM - L_prev) (default 1)");
  sub->add_option("--seed", a->cfg.seed, "seed of data order, supervised-step sampling and fresh gate / q head init");
  sub->add_option("--train", a->train_parts, "trained parts: all, or a list of reasoning,gate,q_head,decoder,norm,lm_head");
  sub->add_flag("--resume", a->resume, "continue the run in --out from its train_state.bin (bit-exact with one thread)");
  sub->add_flag("--no-loop", a->cfg.no_loop, "the control: a plain fine-tune of the same parameters (no loop, gate or q head)");
  sub->add_option("--ckpt-every", a->ckpt_every, "write train_state.bin + the model every N batches (0: only at the end; default 25)");
  sub->add_option("--eval-loops", a->eval_loops, "loop counts B for the held-out perplexity (default 1,4,8)");
  sub->add_option("--eval-max-seqs", a->eval_max_seqs, "evaluate at most this many held-out sequences (default all)");
  sub->add_option("--eval-batch", a->eval_batch, "sequences per evaluation batch (default --batch)");
  a->backend.add_to(*sub,
                    "backend of the training step and of the saved model's inference check: cpu (default) or "
                    "reference (the slow scalar oracle, for checks on tiny models); training does not run on CUDA yet",
                    false);
  sub->add_flag("-q,--quiet", a->quiet, "no progress line");
  sub->callback([a, sub] {
    if (a->cfg.max_tokens <= 0 && a->cfg.max_steps <= 0) throw UsageError("give a budget: --tokens N or --steps N");
    if (a->official) apply_official(*sub, a->cfg);
    run_adapt(*a);
  });
}

}  // namespace loopus::cli
