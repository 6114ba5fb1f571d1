// libFuzzer target: the tokenizer stored in a GGUF's metadata (tokenizer.ggml.model llama ->
// SentencePiece, gpt2 -> byte-level BPE with the tokenizer.ggml.pre regexes; tokens, scores,
// token types, merges, special ids and flags), read through io::open_gguf and
// load_tokenizer_from_gguf_meta, which then encodes and decodes the sample texts.
// SPDX-License-Identifier: MIT
#include <cstdint>

#include "fuzz_tok_common.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/load.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string path = (fuzz::scratch_dir() / "vocab.gguf").string();
  fuzz::write_file(path, data, size);
  fuzz::guarded("vocab.gguf", size, [&] {
    const auto tok = load_tokenizer_from_gguf_meta(io::open_gguf(path).meta, path);
    fuzz::exercise_samples(*tok);
  });
  return 0;
}
