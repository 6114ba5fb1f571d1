// load_model: any supported file or folder -> ModelWeights (+ its tokenizer when the file has one).
// SPDX-License-Identifier: MIT
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "loopus/io/json_field.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/weight_map.hpp"

namespace loopus {

struct ModelLoadOptions {
  io::LoadMode mode = io::LoadMode::kRead;
  WeightLoadOptions weights;
};

/// Recognises the format of an opened file: "gguf", "llama2c", "hf" or "lds" (LoopUS checkpoint).
inline std::string model_format(const io::TensorFile& f) {
  if (f.format == "safetensors") {
    auto it = f.meta.find("config");
    if (it == f.meta.end() || !it->is_object())
      throw IoError(f.path + ": a safetensors model needs config.json beside it");
    return io::json_field<std::string>(*it, "model_type", "", f.path + "/config.json") == "lds" ? "lds" : "hf";
  }
  return f.format;
}

/// Plain (non-looped) weights from a GGUF, llama2.c .bin or HF safetensors folder.
inline std::shared_ptr<const ModelWeights> load_weights(std::shared_ptr<const io::TensorFile> f,
                                                        const ModelLoadOptions& opt = {}) {
  const std::string fmt = model_format(*f);
  if (fmt == "gguf" || fmt == "llama2c") {
    HParams hp = hparams_from_gguf(f->meta, f->path);
    if (hp.n_vocab == 0)
      if (const auto* t = f->find("token_embd.weight"); t && t->shape.size() == 2) hp.n_vocab = int(t->shape[0]);
    return std::make_shared<ModelWeights>(build_weights(f, hp, NameScheme::gguf(), opt.weights));
  }
  if (fmt == "hf") {
    HParams hp = hparams_from_hf_config(f->meta["config"], f->path);
    return std::make_shared<ModelWeights>(build_weights(f, hp, NameScheme::hf(), opt.weights));
  }
  throw UsageError(f->path + ": a LoopUS checkpoint; open it with load_looped_model()");
}

inline std::shared_ptr<const ModelWeights> load_weights(const std::string& path, const ModelLoadOptions& opt = {}) {
  auto f = std::make_shared<const io::TensorFile>(io::open_any(path, opt.mode));
  return load_weights(f, opt);
}

}  // namespace loopus
