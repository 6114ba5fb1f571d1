// What a model path names: the tokenizer that belongs to a model (in the file, or beside it) and
// the model opened for running, plain or looped (a LoopUS checkpoint, or a plain model recast).
// SPDX-License-Identifier: MIT
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "loopus/core/error.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/layer_split.hpp"
#include "loopus/model/looped_weights.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/load.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::io {

/// Opens a tokenizer file, chosen by what the path is: a folder (its
/// tokenizer.json), a Hugging Face tokenizer.json, a GGUF (its vocabulary),
/// else a llama2.c tokenizer.bin. Throws Error when the path is missing.
inline std::unique_ptr<Tokenizer> open_tokenizer_file(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw IoError(path + ": tokenizer file not found");
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "tokenizer.json"))
      return std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file((fs::path(path) / "tokenizer.json").string()));
    throw IoError(path + ": folder has no tokenizer.json");
  }
  if (fs::path(path).extension() == ".json") return std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file(path));
  if (fs::path(path).extension() == ".gguf") {
    auto f = open_gguf(path);
    return load_tokenizer_from_gguf_meta(f.meta, path);
  }
  return std::make_unique<SpmTokenizer>(SpmTokenizer::from_llama2c(path));
}

/// Where the tokenizer of an opened model is, as a path for open_tokenizer_file():
/// a GGUF with a vocabulary (tokenizer.ggml.*) is its own; a safetensors model
/// (HF or LoopUS folder) uses tokenizer.json beside it, else model.gguf beside it
/// (what `loopus adapt` writes from a GGUF source). Throws Error when there is
/// none (llama2.c checkpoints never carry one).
inline std::string tokenizer_path_for(const TensorFile& f) {
  namespace fs = std::filesystem;
  if (f.format == "gguf") {
    if (f.meta.contains("tokenizer.ggml.model")) return f.path;
    throw UsageError(
        f.path +
        ": the GGUF has no vocabulary (tokenizer.ggml.*); give a tokenizer file (OpenModelOptions::tokenizer)");
  }
  if (f.format == "safetensors") {
    const fs::path dir = fs::is_directory(f.path) ? fs::path(f.path) : fs::path(f.path).parent_path();
    if (fs::exists(dir / "tokenizer.json")) return (dir / "tokenizer.json").string();
    if (fs::exists(dir / "model.gguf")) return (dir / "model.gguf").string();
    throw UsageError(
        f.path +
        ": no tokenizer.json (or model.gguf) beside the model; give a tokenizer file (OpenModelOptions::tokenizer)");
  }
  throw UsageError(
      f.path + ": llama2.c checkpoints carry no vocabulary; give their tokenizer.bin (OpenModelOptions::tokenizer)");
}

/// The tokenizer of an opened model (tokenizer_path_for), or of `override_path` when it is not empty.
inline std::unique_ptr<Tokenizer> open_tokenizer(const TensorFile& f, const std::string& override_path = "") {
  if (!override_path.empty()) return open_tokenizer_file(override_path);
  const std::string p = tokenizer_path_for(f);
  if (p == f.path) return load_tokenizer_from_gguf_meta(f.meta, f.path);  // the GGUF is open already
  return open_tokenizer_file(p);
}

/// Copies the tokenizer of a model into `dir`, where tokenizer_path_for() of a
/// safetensors model in `dir` finds it: the explicit `tokenizer_file` when it is
/// a file (a .json one as tokenizer.json, else as tokenizer.EXT), else the
/// tokenizer.json of a model folder. Returns the written path, or "" when
/// neither applies (a GGUF carries its vocabulary in the file instead). The
/// copy is atomic (io::copy_file_atomic).
inline std::string copy_tokenizer_into(const std::string& dir, const std::string& model_path,
                                       const std::string& tokenizer_file = "") {
  namespace fs = std::filesystem;
  fs::path src, dst;
  if (!tokenizer_file.empty() && fs::is_regular_file(tokenizer_file)) {
    src = tokenizer_file;
    dst = fs::path(dir) / (src.extension() == ".json" ? "tokenizer.json" : "tokenizer" + src.extension().string());
  } else if (fs::is_directory(model_path) && fs::exists(fs::path(model_path) / "tokenizer.json")) {
    src = fs::path(model_path) / "tokenizer.json";
    dst = fs::path(dir) / "tokenizer.json";
  } else {
    return "";
  }
  std::error_code ec;
  if (fs::equivalent(src, dst, ec)) return dst.string();  // copying a file onto itself
  copy_file_atomic(src.string(), dst.string());
  return dst.string();
}

/// How open_model() opens a path.
struct OpenModelOptions {
  ModelLoadOptions load;
  std::string tokenizer;       ///< explicit tokenizer file (empty: the model's own, see tokenizer_path_for)
  bool need_tokenizer = true;  ///< false: OpenedModel::tok stays empty
  bool recast = false;         ///< recast a plain model into a looped one (split below; "" = none)
  std::string encoder_layers;  ///< layer specs of the recast (LayerSplit::from_specs); a checkpoint takes none
  std::string decoder_layers;
};

/// A model opened for running: plain weights, and the looped weights when the
/// file is a LoopUS checkpoint (then `plain` is its base) or a recast was asked for.
struct OpenedModel {
  std::shared_ptr<const ModelWeights> plain;
  std::shared_ptr<const LoopedWeights> looped;  ///< null: run it plain
  std::unique_ptr<Tokenizer> tok;
  std::string format;  ///< "loopus" for a checkpoint, else model_format(): gguf, llama2c, hf
};

/// Opens any supported model path (GGUF, llama2.c .bin, HF or LoopUS folder).
/// A LoopUS checkpoint keeps its split: layer specs given with one are an Error.
inline OpenedModel open_model(const std::string& path, const OpenModelOptions& o = {}) {
  OpenedModel r;
  TensorFile f = open_any(path, o.load.mode);
  if (o.need_tokenizer) r.tok = open_tokenizer(f, o.tokenizer);
  const bool ckpt = is_looped_checkpoint(f);
  r.format = ckpt ? "loopus" : model_format(f);
  if (ckpt) {
    const std::string p = f.path;
    auto lw = load_looped_checkpoint(std::move(f), o.load);
    if (!o.encoder_layers.empty() || !o.decoder_layers.empty())
      throw UsageError(p + ": a LoopUS checkpoint fixes its split (" + lw->split.text() +
                       "); leave encoder_layers/decoder_layers empty");
    r.looped = lw;
    r.plain = lw->base;
  } else {
    r.plain = load_weights(std::make_shared<const TensorFile>(std::move(f)), o.load);
    if (o.recast)
      r.looped = loopus::recast(r.plain, LayerSplit::from_specs(o.encoder_layers.empty() ? "none" : o.encoder_layers,
                                                                o.decoder_layers.empty() ? "none" : o.decoder_layers,
                                                                r.plain->hp.n_layer));
  }
  return r;
}

}  // namespace loopus::io
