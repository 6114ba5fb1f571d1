// Shared pieces of the loopus CLI: model + tokenizer opening, thread setup, JSON output.
// SPDX-License-Identifier: MIT
#pragma once
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/load.hpp"
#include "loopus/tokenizer/spm.hpp"

namespace loopus::cli {

/// Options every model-reading subcommand shares.
struct ModelArgs {
  std::string model;
  std::string tokenizer;
  std::string dtype;     // "", f32, f16, bf16
  bool mmap = false;
  int threads = 0;

  void add_to(CLI::App& app, bool model_required = true) {
    auto* m = app.add_option("-m,--model", model,
                             "model: GGUF file, llama2.c .bin, or Hugging Face / LoopUS folder (config.json + safetensors)");
    if (model_required) m->required();
    app.add_option("--tokenizer", tokenizer,
                   "tokenizer file: llama2.c tokenizer.bin, HF tokenizer.json, or a GGUF (default: from the model)");
    app.add_option("--dtype", dtype, "convert weight matrices on load to f32|f16|bf16 (default: as stored; quantized -> f32)")
        ->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app.add_flag("--mmap", mmap, "map the file instead of reading it into memory (faster start, slower decode when pages are evicted)");
    app.add_option("-t,--threads", threads, "OpenMP threads (default: all cores)");
  }
  void apply_threads() const {
    if (threads > 0) omp_set_num_threads(threads);
  }
  ModelLoadOptions load_options() const {
    ModelLoadOptions o;
    o.mode = mmap ? io::LoadMode::kMmap : io::LoadMode::kRead;
    if (dtype == "f32") o.weights.matrix_dtype = DType::kF32;
    if (dtype == "f16") o.weights.matrix_dtype = DType::kF16;
    if (dtype == "bf16") o.weights.matrix_dtype = DType::kBF16;
    return o;
  }
};

/// Opens a tokenizer from an explicit file (by extension / magic).
inline std::unique_ptr<Tokenizer> open_tokenizer_file(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw Error(path + ": tokenizer file not found");
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "tokenizer.json"))
      return std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file((fs::path(path) / "tokenizer.json").string()));
    throw Error(path + ": folder has no tokenizer.json");
  }
  if (fs::path(path).extension() == ".json") return std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file(path));
  if (fs::path(path).extension() == ".gguf") {
    auto f = io::open_gguf(path);
    return load_tokenizer_from_gguf_meta(f.meta, path);
  }
  return std::make_unique<SpmTokenizer>(SpmTokenizer::from_llama2c(path));
}

/// The tokenizer that belongs to an opened model file, or the override.
inline std::unique_ptr<Tokenizer> open_tokenizer(const io::TensorFile& f, const std::string& override_path) {
  namespace fs = std::filesystem;
  if (!override_path.empty()) return open_tokenizer_file(override_path);
  if (f.format == "gguf") {
    if (f.meta.contains("tokenizer.ggml.model")) return load_tokenizer_from_gguf_meta(f.meta, f.path);
    throw Error(f.path + ": the GGUF has no vocabulary (tokenizer.ggml.*); pass --tokenizer FILE");
  }
  if (f.format == "safetensors") {
    fs::path dir = fs::is_directory(f.path) ? fs::path(f.path) : fs::path(f.path).parent_path();
    if (fs::exists(dir / "tokenizer.json")) return open_tokenizer_file((dir / "tokenizer.json").string());
    // `loopus adapt` from a GGUF source writes DIR/model.gguf with the vocabulary next to the safetensors
    if (fs::exists(dir / "model.gguf")) return open_tokenizer_file((dir / "model.gguf").string());
    throw Error(f.path + ": no tokenizer.json (or model.gguf) beside the model; pass --tokenizer FILE");
  }
  throw Error(f.path + ": llama2.c checkpoints carry no vocabulary; pass --tokenizer tokenizer.bin");
}

/// Loop options shared by generate, bench, eval: split, B, gate, halting, cache.
struct LoopArgs {
  std::string enc, dec;
  LoopRunSpec spec;
  std::vector<CLI::Option*> opts;

  /// Was any loop option given on the command line?
  bool given() const {
    for (auto* o : opts)
      if (o->count() > 0) return true;
    return false;
  }

  /// per_run: add --loops and --cache (bench takes lists of those instead).
  void add_to(CLI::App& app, bool per_run = true) {
    opts = {
        app.add_option("--encoder-layers", enc, "recast: encoder layers, official syntax: a..b or a-b (inclusive), k.. or k- (k to the last), k (= 0..k), i,j,... (exactly those), none"),
        app.add_option("--decoder-layers", dec, "recast: decoder layers (same syntax); the reasoning block is the rest"),
        app.add_option("--min-loops", spec.min_loops, "no early exit before this many loops"),
        app.add_option("--gate", spec.gate,
                       "selective (checkpoint's gate, or a fresh official-init gate), none (h <- p), mix:ALPHA; "
                       "default: selective when the checkpoint has one, else none"),
        app.add_option("--halt", spec.halt,
                       "fixed | q:THR | cdf:THR | conv:EPS | kl:EPS (default: the checkpoint's rule, else fixed)"),
        app.add_option("--q-eval-interval", spec.q_eval_interval, "check q every k loops (default: checkpoint's)"),
        app.add_flag("--q-on-delta", spec.q_on_delta, "q head reads p - h (training path) instead of the state h"),
        app.add_option("--exit-fill", spec.exit_fill,
                       "after an early exit, the deeper per-depth caches are: drop (official, default: thrown away) or latest (filled with the last depth's rows)")
            ->check(CLI::IsMember({"latest", "drop"})),
        app.add_option("--gate-seed", spec.gate_seed, "seed of a fresh selective gate"),
    };
    if (per_run) {
      opts.push_back(app.add_option("--loops", spec.loops, "B: maximum loop iterations of the reasoning block (default 8)")
                         ->check(CLI::Range(1, 1024)));
      opts.push_back(app.add_option("--cache", spec.cache, "reasoning KV cache: per-depth (exact), shared (B x smaller), none")
                         ->check(CLI::IsMember({"per-depth", "shared", "none"})));
    }
  }
};

/// A model opened for running: plain, or looped (a LoopUS checkpoint, or a
/// plain model recast because loop options were given), plus its tokenizer.
struct RunnableModel {
  std::shared_ptr<const ModelWeights> plain;
  std::shared_ptr<const LoopedWeights> looped;
  std::unique_ptr<Tokenizer> tok;
  std::string format;
};

inline RunnableModel open_runnable(const ModelArgs& a, const LoopArgs& loop, bool need_tokenizer = true) {
  RunnableModel r;
  const auto opt = a.load_options();
  io::TensorFile f = io::open_any(a.model, opt.mode);
  if (need_tokenizer) r.tok = open_tokenizer(f, a.tokenizer);
  const bool ckpt = is_looped_checkpoint(f);
  r.format = ckpt ? "loopus" : model_format(f);
  if (ckpt) {
    const std::string path = f.path;
    auto lw = load_looped_checkpoint(std::move(f), opt);
    if (!loop.enc.empty() || !loop.dec.empty())
      throw Error(path + ": a LoopUS checkpoint fixes its split (" + lw->split.text() +
                  "); drop --encoder-layers/--decoder-layers");
    r.looped = lw;
    r.plain = lw->base;
  } else {
    r.plain = load_weights(std::make_shared<const io::TensorFile>(std::move(f)), opt);
    if (loop.given())
      r.looped = recast(r.plain, LayerSplit::from_specs(loop.enc.empty() ? "none" : loop.enc,
                                                        loop.dec.empty() ? "none" : loop.dec, r.plain->hp.n_layer));
  }
  return r;
}

}  // namespace loopus::cli
