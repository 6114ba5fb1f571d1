// libFuzzer target: SentencePiece encode / decode of arbitrary bytes with real vocabularies
// loaded once from LOOPUS_DATA_DIR: the stories260K llama2.c tok512.bin and the llama-spm GGUF
// vocabulary. The first byte picks the tokenizer and the add_special / parse_special flags.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "fuzz_tok_common.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/spm.hpp"

namespace {

std::vector<std::unique_ptr<loopus::Tokenizer>> load_all() {
  using namespace loopus;
  std::vector<std::unique_ptr<Tokenizer>> v;
  v.push_back(
      std::make_unique<SpmTokenizer>(SpmTokenizer::from_llama2c(fuzz::data_file("models/stories260K/tok512.bin"))));
  const std::string spm = fuzz::data_file("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  v.push_back(std::make_unique<SpmTokenizer>(SpmTokenizer::from_gguf_meta(io::open_gguf(spm).meta, spm)));
  return v;
}

const std::vector<std::unique_ptr<loopus::Tokenizer>>& toks() {
  static const auto v = load_all();
  return v;
}

}  // namespace

// Loading the vocabularies takes seconds under the sanitizers: before the first input, not in its time limit.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)toks();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  if (size < 1) return 0;
  const Tokenizer& tok = *toks()[(data[0] >> 2) % toks().size()];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  fuzz::guarded("", size, [&] { fuzz::exercise(tok, text, data[0] & 1, data[0] & 2); });
  return 0;
}
