// load_tokenizer_from_gguf_meta: picks the tokenizer class a GGUF's tokenizer.ggml.model names.
// SPDX-License-Identifier: MIT
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus {

/// The tokenizer stored in GGUF metadata (as io::open_gguf returns it).
/// "llama" -> SpmTokenizer, "gpt2" -> BpeTokenizer (pre-tokenizer from tokenizer.ggml.pre). Throws Error naming `path` when the file has no
/// tokenizer or one of an unsupported kind.
inline std::unique_ptr<Tokenizer> load_tokenizer_from_gguf_meta(const nlohmann::json& meta,
                                                                const std::string& path) {
  auto it = meta.find("tokenizer.ggml.model");
  if (it == meta.end())
    throw FormatError(path + ": no tokenizer in this file (GGUF key 'tokenizer.ggml.model' missing)");
  if (!it->is_string()) throw FormatError(path + ": GGUF key 'tokenizer.ggml.model' is not a string");
  const std::string model = it->get<std::string>();
  if (model == "llama") return std::make_unique<SpmTokenizer>(SpmTokenizer::from_gguf_meta(meta, path));
  if (model == "gpt2") return std::make_unique<BpeTokenizer>(BpeTokenizer::from_gguf_meta(meta, path));
  throw UnsupportedError(path + ": tokenizer.ggml.model '" + model +
                         "' is not supported (expected \"llama\" or \"gpt2\")");
}

}  // namespace loopus
