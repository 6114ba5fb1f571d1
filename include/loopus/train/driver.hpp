// run_adaptation: a whole LoopUS adaptation run into an output folder: open the model and data,
// resume, train with periodic checkpoints and a JSONL log, evaluate, export the checkpoint (and a
// GGUF with the vocabulary), warn when the result is worse than the original, write summary.json.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "loopus/train/adapt.hpp"

namespace loopus::train {

/// Everything a run is given.
struct AdaptRunOptions {
  std::string model;           ///< model path (a plain model, or a LoopUS checkpoint to train on)
  io::OpenModelOptions open;   ///< load mode, dtype, tokenizer file (the tokenizer is always opened)
  std::string encoder_layers;  ///< split of a plain model (both required); a checkpoint takes none
  std::string decoder_layers;
  std::string data;  ///< training text (load_corpus)
  std::string val;   ///< held-out text; "" = the last val_percent % of data
  double val_percent = 10;
  std::string docs = "blank";  ///< parse_doc_split
  bool eos = false;            ///< append EOS to every document
  std::string out;             ///< output folder
  AdaptConfig cfg;
  std::string train_parts = "all";  ///< TrainSelect::parse
  std::string gate_init;  ///< "": the checkpoint's gate, else SelectiveGateWeights::from_spec (official, open, mix:A)
  bool resume = false;  ///< continue from out/train_state.bin (an Error when absent; without it, an Error when present)
  int64_t ckpt_every = 25;               ///< save state + model every this many batches (0: only at the end)
  std::vector<int> eval_loops{1, 4, 8};  ///< loop counts of the held-out evaluation (its last: the inference check's)
  int64_t eval_max_seqs = 0;             ///< at most this many held-out sequences (0: all)
  int64_t eval_batch = 0;                ///< sequences per evaluation batch (0: cfg.batch)
  bool official = false;                 ///< recorded as the summary's "recipe"
};

/// The run as it starts (after the data is packed).
struct AdaptStart {
  std::string model, arch, split, trained;
  int64_t train_tokens = 0, train_docs = 0, train_seqs = 0, seq_len = 0, val_tokens = 0, val_seqs = 0, trainable = 0;
  bool padded = false, no_loop = false;
};

/// One training batch done.
struct AdaptProgress {
  const BatchRecord& rec;   ///< the batch (step, tokens, lr, grad_norm, per-micro-step losses)
  int64_t total = 0;        ///< batches in the whole run
  double run_seconds = 0;   ///< since this process started training (not counting a resumed run's past)
  double tokens_per_s = 0;  ///< over this process's batches
  double eta_seconds = 0;   ///< to the last batch, at this process's pace
  bool final = false;       ///< the last batch of the run
};

/// Where a run reports; every member may be left empty.
struct AdaptCallbacks {
  std::function<void(const AdaptStart&)> on_start;
  std::function<void(int64_t step, int64_t tokens)> on_resume;  ///< resumed at this batch
  std::function<void(double ppl, double seconds)> on_original;  ///< the original model's held-out perplexity
  std::function<void(const AdaptProgress&)> on_step;            ///< after every batch (it may throw to stop)
  std::function<void(double seconds)> on_trained;               ///< training done, evaluation next
};

/// What a run ends with (summary.json holds the same summary).
struct AdaptResult {
  nlohmann::json summary;
  std::vector<std::string> warnings;  ///< also summary["warnings"]
};

/// The losses of one supervised step, as log.jsonl and summary.json record them.
inline nlohmann::json losses_json(const StepLosses& L) {
  return {{"loop_index", L.loop_index},
          {"loss", L.loss},
          {"lm", L.lm},
          {"prev", L.prev},
          {"mono", L.mono},
          {"q", L.q},
          {"q_prob", L.q_prob},
          {"token_acc", L.token_acc}};
}

/// On resume: keeps the lines of a JSONL log whose "step" is <= max_step, up to
/// the first line that does not parse (a torn last line from a crash), and
/// rewrites the log atomically. The run appends from step max_step + 1, so the
/// log reads exactly as an uninterrupted run's (timings aside). Returns the
/// number of records kept.
inline int64_t trim_log(const std::filesystem::path& p, int64_t max_step) {
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) return 0;
  io::detail::InputFile f(p.string());
  std::string all(size_t(f.size()), '\0');
  f.read_at(all.data(), f.size(), 0, "log");
  std::string kept;
  int64_t n = 0;
  for (size_t pos = 0; pos < all.size();) {
    const size_t eol = all.find('\n', pos);
    if (eol == std::string::npos) break;  // a last line without its newline is torn
    const std::string_view line(all.data() + pos, eol - pos);
    pos = eol + 1;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) break;
    if (j.value("step", int64_t(0)) <= max_step) {
      kept.append(line);
      kept += '\n';
      ++n;
    }
  }
  if (kept.size() != all.size()) io::write_file_atomic(p.string(), kept);
  return n;
}

/// The warnings of a finished run: every held-out perplexity that is not at
/// least as good as the original model's (NaN counts as worse): the plain
/// fine-tune's with no_loop, else each of by_loops ({"B": ppl}).
inline std::vector<std::string> worse_than_original(double original_ppl, const nlohmann::json& by_loops, bool no_loop,
                                                    double plain_ppl) {
  std::vector<std::string> out;
  auto worse = [&](const std::string& what, double ppl) {
    if (!(ppl <= original_ppl)) {
      char b[256];
      std::snprintf(b, sizeof b, "%s held-out perplexity %.4f is worse than the original model's %.4f", what.c_str(),
                    ppl, original_ppl);
      out.push_back(b);
    }
  };
  if (no_loop) worse("the fine-tuned model's", plain_ppl);
  for (auto& [B, v] : by_loops.items()) worse("the adapted model's B = " + B, v.get<double>());
  return out;
}

/// Held-out perplexity through the inference path: LoopedModel<Backend> with
/// a fresh per-depth cache per sequence and `loops` fixed loops, padding
/// neither fed nor scored (the first nseq sequences of val).
template <class Backend, class Gate>
double inference_perplexity(std::shared_ptr<const LoopedWeights> lw, Gate gate, const PackedData& val, int64_t nseq,
                            int loops) {
  const int64_t T = val.seq_len();
  const int V = lw->base->hp.n_vocab;
  LoopParams lp;
  lp.halting.max_loops = loops;
  LoopedModel<Backend, Gate, PerDepthCache> lm(lw, lp, ContextParams{T, T}, std::move(gate));
  std::vector<float> logits(static_cast<size_t>(T * V));
  double sum = 0;
  int64_t n = 0;
  for (int64_t s = 0; s < nseq; ++s) {
    lm.reset();
    const int32_t* ids = val.seq(s);
    const int64_t n_valid = val.valid(s);
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

/// The saved checkpoint in `dir` reloaded and scored by inference_perplexity(): with
/// plain, one loop without gate (the non-looped network), else its selective gate.
template <class Backend>
double saved_model_perplexity(const std::string& dir, const PackedData& val, int64_t nseq, int loops, bool plain) {
  auto lw = load_looped(dir, "", "");
  if (plain) return inference_perplexity<Backend>(lw, NoGate{}, val, nseq, 1);
  return inference_perplexity<Backend>(lw, SelectiveGate(lw->gate), val, nseq, loops);
}

/// Runs (or resumes) an adaptation into opt.out: train_state.bin, log.jsonl (one
/// record per batch), the LoopUS checkpoint (config.json + model.safetensors,
/// every ckpt_every batches and at the end), model.gguf when the source GGUF
/// has a vocabulary, the tokenizer when one can be copied, summary.json.
/// Training (TrainOps<Backend>) and the saved model's inference check
/// (Ops<Backend>) run on Backend.
///
/// Nothing is lost: every file is replaced atomically (io::AtomicFileWriter;
/// the model folder by io::write_model_folder), log.jsonl only ever grows by
/// whole records (io::AppendFile) and is fsynced before each checkpoint, which
/// writes train_state.bin first and the model second. A failed write throws an
/// IoError and leaves each file as it was; a resume (killed, stopped or failed
/// run) trims the log back to the checkpoint's batch (trim_log) and continues
/// bit for bit with one OpenMP thread: the log, the model files and the summary
/// then equal an uninterrupted run's, timings aside.
template <class Backend>
AdaptResult run_adaptation(const AdaptRunOptions& a, const AdaptCallbacks& cb = {}) {
  namespace fs = std::filesystem;
  using clock = std::chrono::steady_clock;
  if (a.eval_loops.empty()) throw UsageError("no evaluation loop counts");
  const fs::path out(a.out);
  io::make_dirs(out.string());
  const fs::path state_path = out / "train_state.bin", log_path = out / "log.jsonl";
  if (!a.resume && fs::exists(state_path))
    throw UsageError(out.string() +
                     " already holds a training run (train_state.bin); set AdaptRunOptions::resume to continue it, or "
                     "choose another AdaptRunOptions::out");
  if (a.resume && !fs::exists(state_path))
    throw UsageError(out.string() + ": AdaptRunOptions::resume is set but there is no train_state.bin there");

  // ---- model, tokenizer, data
  io::OpenModelOptions oo = a.open;
  oo.need_tokenizer = true;
  oo.recast = false;
  oo.encoder_layers.clear();
  oo.decoder_layers.clear();
  auto rm = io::open_model(a.model, oo);
  std::shared_ptr<const LoopedWeights> lw = rm.looped;
  if (lw) {
    if (!a.encoder_layers.empty() || !a.decoder_layers.empty())
      throw UsageError(a.model + ": a LoopUS checkpoint fixes its split (" + lw->split.text() +
                       "); leave encoder_layers/decoder_layers empty");
  } else {
    if (a.encoder_layers.empty() || a.decoder_layers.empty())
      throw UsageError("adapting a plain model needs encoder_layers and decoder_layers (e.g. 0..0 and 4..4)");
    lw = recast(rm.plain, LayerSplit::from_specs(a.encoder_layers, a.decoder_layers, rm.plain->hp.n_layer));
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
    throw UsageError("the tokenizer has " + std::to_string(rm.tok->n_vocab()) + " tokens but the model only " +
                     std::to_string(hp.n_vocab));
  auto corpus = load_corpus(a.data, a.val, a.val_percent, *rm.tok, parse_doc_split(a.docs), a.eos);
  PackedData train_data, val_data;
  if (a.cfg.pad) {
    const int32_t pad_id = rm.tok->eos_id() >= 0 ? rm.tok->eos_id() : 0;  // any id: padding has no label
    train_data = PackedData::padded(corpus.train, corpus.train_starts, a.cfg.seq_len, pad_id);
    val_data = PackedData::padded(corpus.val, corpus.val_starts, a.cfg.seq_len, pad_id);
  } else {
    train_data = PackedData(std::move(corpus.train), a.cfg.seq_len);
    val_data = PackedData(std::move(corpus.val), a.cfg.seq_len);
  }
  if (val_data.size() == 0)
    throw UsageError("no held-out sequence of " + std::to_string(a.cfg.seq_len) +
                     " tokens: give AdaptRunOptions::val a file or a larger AdaptRunOptions::val_percent");
  TrainSelect sel = TrainSelect::parse(a.train_parts);
  if (a.cfg.no_loop) sel.gate = sel.q_head = false;  // unused by the plain control
  TrainModel<Backend> m(lw, sel, a.cfg.seed);
  const int64_t eval_b = a.eval_batch > 0 ? a.eval_batch : a.cfg.batch;

  if (cb.on_start)
    cb.on_start({a.model, hp.arch_name(), lw->split.text(), sel.text(), train_data.tokens(), corpus.train_docs,
                 train_data.size(), a.cfg.seq_len, val_data.tokens(), val_data.size(), m.n_trainable(), a.cfg.pad,
                 a.cfg.no_loop});

  Adapter<Backend> ad(m, train_data, a.cfg);
  double prior_seconds = 0, original_ppl = 0;
  std::string log_gap;
  if (a.resume) {
    const auto extra = ad.load(state_path.string());
    prior_seconds = extra.value("seconds", 0.0);
    original_ppl = extra.value("original_ppl", 0.0);
    const int64_t kept = trim_log(log_path, ad.steps_done());
    if (kept != ad.steps_done())
      log_gap = "log.jsonl held " + std::to_string(kept) + " records of the " + std::to_string(ad.steps_done()) +
                " batches before the resume (edited or deleted?); it continues from batch " +
                std::to_string(ad.steps_done() + 1);
    if (cb.on_resume) cb.on_resume(ad.steps_done(), ad.tokens_done());
  }
  if (!(original_ppl > 0)) {
    const auto t0 = clock::now();
    original_ppl = perplexity(m, val_data, eval_b, 0, a.eval_max_seqs);
    if (cb.on_original) cb.on_original(original_ppl, std::chrono::duration<double>(clock::now() - t0).count());
  }
  if (!a.resume) io::write_file_atomic(log_path.string(), "");  // a fresh run starts a fresh log

  // ---- train
  // log.jsonl: one line per batch, appended whole or not at all (io::AppendFile), and
  // fsynced before every checkpoint, so it always holds every batch the checkpoint holds.
  io::AppendFile log(log_path.string());
  const int64_t total = a.cfg.total_steps();
  BatchRecord last;
  const auto t_start = clock::now();
  const int64_t step0 = ad.steps_done();
  auto elapsed = [&] { return prior_seconds + std::chrono::duration<double>(clock::now() - t_start).count(); };
  auto save = [&] {
    log.sync();
    ad.save(state_path.string(), {{"seconds", elapsed()}, {"original_ppl", original_ppl}, {"model", a.model}});
    save_lds(*ad.export_looped(), out.string(), a.model);
  };
  while (!ad.done()) {
    const auto ts = clock::now();
    last = ad.step();
    const double dt = std::chrono::duration<double>(clock::now() - ts).count();
    nlohmann::json rec = {{"step", last.step},      {"tokens", last.tokens}, {"seconds", elapsed()},
                          {"step_seconds", dt},     {"lr", last.lr},         {"grad_norm", last.grad_norm},
                          {"updates", last.updates}};
    rec["micro"] = nlohmann::json::array();
    for (const auto& L : last.micro) rec["micro"].push_back(losses_json(L));
    log.append(rec.dump() + "\n");
    if (cb.on_step) {
      const double run_s = std::chrono::duration<double>(clock::now() - t_start).count();
      const double per_step = run_s / double(last.step - step0);
      const double tps = double(last.step - step0) * double(a.cfg.tokens_per_batch()) / run_s;
      cb.on_step({last, total, run_s, tps, per_step * double(total - last.step), ad.done()});
    }
    if (a.ckpt_every > 0 && last.step % a.ckpt_every == 0 && !ad.done()) save();
  }
  ad.flush();
  const double train_seconds = elapsed();
  if (cb.on_trained) cb.on_trained(train_seconds);
  save();

  // ---- evaluate
  // The no-loop control is a plain model: looping it (with its untrained gate) means nothing.
  nlohmann::json by_loops = nlohmann::json::object();
  if (!a.cfg.no_loop)
    for (int B : a.eval_loops) by_loops[std::to_string(B)] = perplexity(m, val_data, eval_b, B, a.eval_max_seqs);
  const double plain_ppl = perplexity(m, val_data, eval_b, 0, a.eval_max_seqs);
  const int64_t check_seqs = std::min<int64_t>(8, val_data.size());
  const int check_loops = a.cfg.no_loop ? 1 : a.eval_loops.back();
  const PackedData check_data = val_data.head(check_seqs);
  const double check_train = perplexity(m, check_data, eval_b, a.cfg.no_loop ? 0 : check_loops);
  const double check_infer = saved_model_perplexity<Backend>(out.string(), check_data, check_seqs, check_loops,
                                                             a.cfg.no_loop);

  // a model file that carries the vocabulary, so generation needs no tokenizer flag
  std::string gen_model = out.string();
  if (rm.format == "gguf" || rm.format == "loopus") {
    try {
      io::TensorFile f = io::open_any(a.model, io::LoadMode::kMmap);
      if (f.format == "gguf" && f.meta.contains("tokenizer.ggml.model")) {
        save_looped_gguf(*ad.export_looped(), (out / "model.gguf").string(), f.meta);
        gen_model = (out / "model.gguf").string();
      }
    } catch (const Error&) {
    }
  }
  io::copy_tokenizer_into(out.string(), a.model, a.open.tokenizer);

  AdaptResult res;
  res.warnings = worse_than_original(original_ppl, by_loops, a.cfg.no_loop, plain_ppl);
  if (!log_gap.empty()) res.warnings.push_back(log_gap);
  const auto& L = last.micro.empty() ? StepLosses{} : last.micro.back();
  res.summary = {
      {"model", a.model},
      {"split", lw->split.text()},
      {"mode", a.cfg.no_loop ? "no-loop (plain fine-tune control)" : "loopus (random deep supervision)"},
      {"trained", sel.text()},
      {"trainable_params", m.n_trainable()},
      {"tokens", ad.tokens_done()},
      {"steps", ad.steps_done()},
      {"optimizer_updates", ad.updates()},
      {"seconds", train_seconds},
      {"tokens_per_s", double(ad.tokens_done()) / train_seconds},
      {"threads", TrainOps<Backend>::threads()},
      {"train_tokens_available", train_data.tokens()},
      {"heldout_tokens", val_data.head(a.eval_max_seqs > 0 ? a.eval_max_seqs : val_data.size()).tokens()},
      {"original_ppl", original_ppl},
      {"adapted_ppl_by_loops", by_loops},
      {"adapted_ppl_plain", plain_ppl},
      {"last_step", {{"step", last.step}, {"lr", last.lr}, {"grad_norm", last.grad_norm}, {"losses", losses_json(L)}}},
      {"inference_check",  // the saved folder reloaded and run by LoopedModel vs the training path
       {{"loops", check_loops},
        {"sequences", check_seqs},
        {"ppl_training_path", check_train},
        {"ppl_saved_model_looped_model", check_infer}}},
      {"warnings", res.warnings},
      {"recipe", a.official ? "official" : "small-run defaults"},
      {"checkpoint_N", a.cfg.no_loop ? 1 : a.cfg.step.n_steps},
      {"config", a.cfg.json()},
      {"gate_init", a.gate_init.empty() ? (rm.looped && rm.looped->gate ? "checkpoint" : "official") : a.gate_init},
      {"generate", "loopus generate -m " + gen_model + (gen_model == out.string() ? " --tokenizer FILE" : "") +
                       (a.cfg.no_loop ? " --gate none --loops 1" : "")},
  };
  io::write_file_atomic((out / "summary.json").string(), res.summary.dump(2) + "\n");
  return res;
}

}  // namespace loopus::train
