// libFuzzer target: byte-level BPE encode / decode of arbitrary bytes with real vocabularies
// loaded once from LOOPUS_DATA_DIR: Llama 3 and Qwen3 tokenizer.json, the GPT-2 GGUF vocabulary.
// The first byte picks the tokenizer and the add_special / parse_special flags.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "fuzz_tok_common.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/load.hpp"

namespace {

std::vector<std::unique_ptr<loopus::Tokenizer>> load_all() {
  using namespace loopus;
  std::vector<std::unique_ptr<Tokenizer>> v;
  for (const char* f : {"tokenizers/llama3/tokenizer.json", "tokenizers/qwen3/tokenizer.json"}) {
    auto t = std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file(fuzz::data_file(f)));
    t->set_cache_capacity(0);  // no state carried between inputs: every crash reproduces alone
    v.push_back(std::move(t));
  }
  const std::string gpt2 = fuzz::data_file("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf");
  auto t = std::make_unique<BpeTokenizer>(BpeTokenizer::from_gguf_meta(io::open_gguf(gpt2).meta, gpt2));
  t->set_cache_capacity(0);
  v.push_back(std::move(t));
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
