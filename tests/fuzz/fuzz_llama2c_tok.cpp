// libFuzzer target: a llama2.c tokenizer.bin (max token length, then score / length / bytes per
// token) read by SpmTokenizer::from_llama2c_bytes, which then encodes and decodes the sample texts.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <string_view>

#include "fuzz_tok_common.hpp"
#include "loopus/tokenizer/spm.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  fuzz::guarded("tokenizer.bin", size, [&] {
    const SpmTokenizer tok = SpmTokenizer::from_llama2c_bytes(bytes, "tokenizer.bin");
    fuzz::exercise_samples(tok);
  });
  return 0;
}
