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
#include "loopus/model/load.hpp"
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
    throw Error(f.path + ": no tokenizer.json beside the model; pass --tokenizer FILE");
  }
  throw Error(f.path + ": llama2.c checkpoints carry no vocabulary; pass --tokenizer tokenizer.bin");
}

struct OpenedModel {
  std::shared_ptr<const io::TensorFile> file;
  std::shared_ptr<const ModelWeights> weights;
};

inline OpenedModel open_model(const ModelArgs& a) {
  OpenedModel m;
  const auto opt = a.load_options();
  m.file = std::make_shared<const io::TensorFile>(io::open_any(a.model, opt.mode));
  m.weights = load_weights(m.file, opt);
  return m;
}

}  // namespace loopus::cli
