// loopus adapt: LoopUS adaptation (random deep supervision) of a pretrained model on a text corpus, on the CPU.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "loopus/train/adapt.hpp"

namespace loopus::cli {

namespace {

namespace fs = std::filesystem;
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
};

std::vector<int> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const int v = std::stoi(item, &used);
      if (used != item.size() || v < 1 || v > 1024) throw std::invalid_argument("range");
      out.push_back(v);
    } catch (const std::exception&) {
      throw Error(what + " '" + s + "': expected a comma list of loop counts in 1..1024");
    }
  }
  if (out.empty()) throw Error(what + " is empty");
  return out;
}

std::string fmt_secs(double s) {
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

nlohmann::json losses_json(const train::StepLosses& L) {
  return {{"loop_index", L.loop_index}, {"loss", L.loss}, {"lm", L.lm},         {"prev", L.prev},
          {"mono", L.mono},             {"q", L.q},       {"q_prob", L.q_prob}, {"token_acc", L.token_acc}};
}

/// Keeps the first `keep` lines of a JSONL log whose "step" is <= max_step (on resume).
void trim_log(const fs::path& p, int64_t max_step) {
  if (!fs::exists(p)) return;
  std::ifstream in(p);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t(0)) <= max_step) kept += line + "\n";
    } catch (const std::exception&) {
      break;  // a torn last line from a crash
    }
  }
  in.close();
  io::AtomicFileWriter w(p.string());
  w.write(kept.data(), kept.size());
  w.commit();
}

/// Held-out perplexity of the saved folder through the inference path
/// (LoopedModel, fresh caches per sequence, a fixed number of loops; with
/// plain = true one loop without gate, i.e. the non-looped network).
template <class Gate>
double inference_ppl_with(std::shared_ptr<const LoopedWeights> lw, Gate gate, const train::PackedData& val, int64_t nseq,
                          int loops) {
  const int64_t T = val.seq_len();
  const int V = lw->base->hp.n_vocab;
  LoopParams lp;
  lp.halting.max_loops = loops;
  LoopedModel<Cpu, Gate, PerDepthCache> lm(lw, lp, ContextParams{T, T}, std::move(gate));
  std::vector<float> logits(static_cast<size_t>(T * V));
  double sum = 0;
  int64_t n = 0;
  for (int64_t s = 0; s < nseq; ++s) {
    lm.reset();
    const int32_t* ids = val.seq(s);
    const int64_t n_valid = val.valid(s);  // padding after it is neither fed nor scored
    lm.eval(std::span<const int32_t>(ids, size_t(n_valid)), logits.data(), true);
    for (int64_t t = 0; t + 1 < n_valid; ++t) {
      const float* row = logits.data() + t * V;
      double m = row[0], z = 0;
      for (int j = 1; j < V; ++j) m = std::max(m, double(row[j]));
      for (int j = 0; j < V; ++j) z += std::exp(double(row[j]) - m);
      sum += m + std::log(z) - double(row[ids[t + 1]]);
      ++n;
    }
  }
  return std::exp(sum / double(n));
}
double inference_ppl(const std::string& dir, const train::PackedData& val, int64_t nseq, int loops, bool plain) {
  auto lw = load_looped(dir, "", "");
  if (plain) return inference_ppl_with(lw, NoGate{}, val, nseq, 1);
  return inference_ppl_with(lw, SelectiveGate(lw->gate), val, nseq, loops);
}

void run_adapt(AdaptArgs& a) {
  using clock = std::chrono::steady_clock;
  a.model.apply_threads();
  const fs::path out(a.out);
  fs::create_directories(out);
  const fs::path state_path = out / "train_state.bin", log_path = out / "log.jsonl";
  if (!a.resume && fs::exists(state_path))
    throw Error(out.string() + " already holds a training run (train_state.bin); pass --resume to continue it, or use "
                "another --out");
  if (a.resume && !fs::exists(state_path)) throw Error(out.string() + ": --resume but no train_state.bin there");

  // ---- model, tokenizer, data
  LoopArgs none;
  auto rm = open_runnable(a.model, none, /*need_tokenizer=*/true);
  std::shared_ptr<const LoopedWeights> lw = rm.looped;
  if (lw) {
    if (!a.enc.empty() || !a.dec.empty())
      throw Error(a.model.model + ": a LoopUS checkpoint fixes its split (" + lw->split.text() +
                  "); drop --encoder-layers/--decoder-layers");
  } else {
    if (a.enc.empty() || a.dec.empty())
      throw Error("adapting a plain model needs --encoder-layers and --decoder-layers (e.g. 0..0 and 4..4)");
    lw = recast(rm.plain, LayerSplit::from_specs(a.enc, a.dec, rm.plain->hp.n_layer));
  }
  if (!a.gate_init.empty()) {
    auto w = std::make_shared<LoopedWeights>(*lw);
    SplitMix64 rng(a.cfg.seed ^ 0x67617465696e6974ull);
    w->gate = std::make_shared<SelectiveGateWeights>(
        SelectiveGateWeights::from_spec(a.gate_init, w->base->hp.n_embd, [&] { return rng.uniform(); }));
    lw = w;
  }
  const HParams& hp = lw->base->hp;
  if (rm.tok->n_vocab() > hp.n_vocab)
    throw Error("the tokenizer has " + std::to_string(rm.tok->n_vocab()) + " tokens but the model only " +
                std::to_string(hp.n_vocab));
  auto corpus = train::load_corpus(a.data, a.val, a.val_percent, *rm.tok, train::parse_doc_split(a.docs), a.eos);
  train::PackedData train_data, val_data;
  if (a.cfg.pad) {
    const int32_t pad_id = rm.tok->eos_id() >= 0 ? rm.tok->eos_id() : 0;  // any id: padding has no label
    train_data = train::PackedData::padded(corpus.train, corpus.train_starts, a.cfg.seq_len, pad_id);
    val_data = train::PackedData::padded(corpus.val, corpus.val_starts, a.cfg.seq_len, pad_id);
  } else {
    train_data = train::PackedData(std::move(corpus.train), a.cfg.seq_len);
    val_data = train::PackedData(std::move(corpus.val), a.cfg.seq_len);
  }
  if (val_data.size() == 0)
    throw Error("no held-out sequence of " + std::to_string(a.cfg.seq_len) + " tokens: pass --val FILE or a larger --val-percent");
  train::TrainSelect sel = train::TrainSelect::parse(a.train_parts);
  if (a.cfg.no_loop) sel.gate = sel.q_head = false;  // unused by the plain control
  train::TrainModel<float> m(lw, sel, a.cfg.seed);
  const int64_t eval_b = a.eval_batch > 0 ? a.eval_batch : a.cfg.batch;
  const auto loops_list = parse_int_list(a.eval_loops, "--eval-loops");

  std::fprintf(stderr,
               "adapt: %s (%s, split %s) | train %lld tokens (%lld docs, %lld %s sequences of %lld) | held-out %lld "
               "tokens (%lld sequences) | training %lld params (%s)%s\n",
               a.model.model.c_str(), hp.arch_name().c_str(), lw->split.text().c_str(),
               (long long)train_data.tokens(), (long long)corpus.train_docs, (long long)train_data.size(),
               a.cfg.pad ? "padded" : "packed",
               (long long)a.cfg.seq_len, (long long)val_data.tokens(), (long long)val_data.size(),
               (long long)m.n_trainable(), sel.text().c_str(), a.cfg.no_loop ? " | --no-loop (plain fine-tune)" : "");

  train::Adapter<float> ad(m, train_data, a.cfg);
  double prior_seconds = 0, original_ppl = 0;
  if (a.resume) {
    const auto extra = ad.load(state_path.string());
    prior_seconds = extra.value("seconds", 0.0);
    original_ppl = extra.value("original_ppl", 0.0);
    trim_log(log_path, ad.steps_done());
    std::fprintf(stderr, "resumed at step %lld (%lld tokens)\n", (long long)ad.steps_done(), (long long)ad.tokens_done());
  }
  if (!(original_ppl > 0)) {
    const auto t0 = clock::now();
    original_ppl = train::perplexity(m, val_data, eval_b, 0, a.eval_max_seqs);
    std::fprintf(stderr, "original model: held-out perplexity %.4f (%.1fs)\n", original_ppl,
                 std::chrono::duration<double>(clock::now() - t0).count());
  }
  if (!a.resume) std::ofstream(log_path, std::ios::trunc).close();

  // ---- train
  std::ofstream log(log_path, std::ios::app);
  const int64_t total = a.cfg.total_steps();
  const bool tty = ::isatty(2);
  train::BatchRecord last;
  const auto t_start = clock::now();
  const int64_t step0 = ad.steps_done();
  auto last_print = t_start - std::chrono::hours(1);
  auto elapsed = [&] { return prior_seconds + std::chrono::duration<double>(clock::now() - t_start).count(); };
  auto save = [&] {
    ad.save(state_path.string(), {{"seconds", elapsed()}, {"original_ppl", original_ppl}, {"model", a.model.model}});
    save_lds(*ad.export_looped(), out.string(), a.model.model);
  };
  while (!ad.done()) {
    const auto ts = clock::now();
    last = ad.step();
    const double dt = std::chrono::duration<double>(clock::now() - ts).count();
    nlohmann::json rec = {{"step", last.step},     {"tokens", last.tokens}, {"seconds", elapsed()},
                          {"step_seconds", dt},    {"lr", last.lr},         {"grad_norm", last.grad_norm},
                          {"updates", last.updates}};
    rec["micro"] = nlohmann::json::array();
    for (const auto& L : last.micro) rec["micro"].push_back(losses_json(L));
    log << rec.dump() << "\n";
    log.flush();
    const double run_s = std::chrono::duration<double>(clock::now() - t_start).count();
    const double per_step = run_s / double(last.step - step0);
    const double tps = double(last.step - step0) * double(a.cfg.tokens_per_batch()) / run_s;
    const auto& L = last.micro.back();
    // On a terminal: one line, redrawn at most 5 times a second. Piped: about
    // ten lines per run (and one a minute at most apart). Every step is in log.jsonl.
    const bool final_step = ad.done();
    const int64_t every = std::max<int64_t>(1, total / 10);
    const double since = std::chrono::duration<double>(clock::now() - last_print).count();
    const bool show = tty ? (final_step || since >= 0.2) : (final_step || last.step % every == 0 || since >= 60);
    if (!a.quiet && show) {
      last_print = clock::now();
      std::fprintf(stderr,
                   "%sstep %lld/%lld (%.0f%%) | %.0f tok/s | loss %.4f lm %.4f mono %+.4f q %.4f acc %.3f | lr %.2e "
                   "| %s %s%s",
                   tty ? "\r\033[K" : "", (long long)last.step, (long long)total, 100.0 * double(last.step) / double(total),
                   tps, L.loss, L.lm, L.mono, L.q, L.token_acc, last.lr, final_step ? "took" : "ETA",
                   fmt_secs(final_step ? run_s : per_step * double(total - last.step)).c_str(), tty ? "" : "\n");
      std::fflush(stderr);
    }
    if (a.ckpt_every > 0 && last.step % a.ckpt_every == 0 && !ad.done()) save();
  }
  ad.flush();
  const double train_seconds = elapsed();
  if (tty && !a.quiet) std::fprintf(stderr, "\n");
  save();

  // ---- evaluate
  // The --no-loop control is a plain model: looping it (with its untrained gate) means nothing.
  nlohmann::json by_loops = nlohmann::json::object();
  if (!a.cfg.no_loop)
    for (int B : loops_list) by_loops[std::to_string(B)] = train::perplexity(m, val_data, eval_b, B, a.eval_max_seqs);
  const double plain_ppl = train::perplexity(m, val_data, eval_b, 0, a.eval_max_seqs);
  const int64_t check_seqs = std::min<int64_t>(8, val_data.size());
  const int check_loops = a.cfg.no_loop ? 1 : loops_list.back();
  const train::PackedData check_data = val_data.head(check_seqs);
  const double check_train = train::perplexity(m, check_data, eval_b, a.cfg.no_loop ? 0 : check_loops);
  const double check_infer = inference_ppl(out.string(), check_data, check_seqs, check_loops, a.cfg.no_loop);

  // a model file that carries the vocabulary, so `loopus generate` needs no flags
  std::string gen_model = out.string();
  if (rm.format == "gguf" || rm.format == "loopus") {
    try {
      io::TensorFile f = io::open_any(a.model.model, io::LoadMode::kMmap);
      if (f.format == "gguf" && f.meta.contains("tokenizer.ggml.model")) {
        save_looped_gguf(*ad.export_looped(), (out / "model.gguf").string(), f.meta);
        gen_model = (out / "model.gguf").string();
      }
    } catch (const Error&) {
    }
  }
  if (!a.model.tokenizer.empty() && fs::is_regular_file(a.model.tokenizer)) {
    const fs::path tp(a.model.tokenizer);
    fs::copy_file(tp, out / (tp.extension() == ".json" ? "tokenizer.json" : "tokenizer" + tp.extension().string()),
                  fs::copy_options::overwrite_existing);
  } else if (fs::is_directory(a.model.model) && fs::exists(fs::path(a.model.model) / "tokenizer.json")) {
    fs::copy_file(fs::path(a.model.model) / "tokenizer.json", out / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
  }

  // Worse than where it started: say so plainly (a summary line is easy to miss).
  nlohmann::json warnings = nlohmann::json::array();
  auto worse = [&](const std::string& what, double ppl) {
    if (!(ppl <= original_ppl)) {
      char b[256];
      std::snprintf(b, sizeof b, "%s held-out perplexity %.4f is worse than the original model's %.4f", what.c_str(),
                    ppl, original_ppl);
      warnings.push_back(b);
    }
  };
  if (a.cfg.no_loop) worse("the fine-tuned model's", plain_ppl);
  for (auto& [B, v] : by_loops.items()) worse("the adapted model's B = " + B, v.get<double>());
  for (const auto& w : warnings)
    std::fprintf(stderr, "adapt: WARNING: %s%s\n", w.get<std::string>().c_str(),
                 a.official ? "" : " (more tokens, or another --lr / --gate-lr-mult / --n-steps, may help; docs/training.md)");

  const auto& L = last.micro.empty() ? train::StepLosses{} : last.micro.back();
  nlohmann::json summary = {
      {"model", a.model.model},
      {"split", lw->split.text()},
      {"mode", a.cfg.no_loop ? "no-loop (plain fine-tune control)" : "loopus (random deep supervision)"},
      {"trained", sel.text()},
      {"trainable_params", m.n_trainable()},
      {"tokens", ad.tokens_done()},
      {"steps", ad.steps_done()},
      {"optimizer_updates", ad.updates()},
      {"seconds", train_seconds},
      {"tokens_per_s", double(ad.tokens_done()) / train_seconds},
      {"threads", train::kern::max_threads()},
      {"train_tokens_available", train_data.tokens()},
      {"heldout_tokens", val_data.head(a.eval_max_seqs > 0 ? a.eval_max_seqs : val_data.size()).tokens()},
      {"original_ppl", original_ppl},
      {"adapted_ppl_by_loops", by_loops},
      {"adapted_ppl_plain", plain_ppl},
      {"last_step", {{"step", last.step}, {"lr", last.lr}, {"grad_norm", last.grad_norm}, {"losses", losses_json(L)}}},
      {"inference_check",  // the saved folder reloaded and run by LoopedModel vs the training path
       {{"loops", check_loops}, {"sequences", check_seqs}, {"ppl_training_path", check_train},
        {"ppl_saved_model_looped_model", check_infer}}},
      {"warnings", warnings},
      {"recipe", a.official ? "official" : "small-run defaults"},
      {"checkpoint_N", a.cfg.no_loop ? 1 : a.cfg.step.n_steps},
      {"config", a.cfg.json()},
      {"gate_init", a.gate_init.empty() ? (rm.looped && rm.looped->gate ? "checkpoint" : "official") : a.gate_init},
      {"generate", "loopus generate -m " + gen_model + (gen_model == out.string() ? " --tokenizer FILE" : "") +
                       (a.cfg.no_loop ? " --gate none --loops 1" : "")},
  };
  io::AtomicFileWriter sw((out / "summary.json").string());
  const std::string text = summary.dump(2) + "\n";
  sw.write(text.data(), text.size());
  sw.commit();
  std::printf("%s", text.c_str());
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
  sub->add_option("--seq-len", a->cfg.seq_len, "tokens per training sequence (default 128; --official 1024)")->check(CLI::Range(2, 1 << 20));
  sub->add_option("--batch", a->cfg.batch, "sequences per batch (default 4; --official 2)")->check(CLI::Range(1, 1 << 16));
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
  sub->add_option("--lr", a->cfg.lr, "peak learning rate (default 3e-4; --official 5e-5)");
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
  sub->add_flag("-q,--quiet", a->quiet, "no progress line");
  sub->callback([a, sub] {
    if (a->cfg.max_tokens <= 0 && a->cfg.max_steps <= 0) throw Error("give a budget: --tokens N or --steps N");
    if (a->official) apply_official(*sub, a->cfg);
    run_adapt(*a);
  });
}

}  // namespace loopus::cli
