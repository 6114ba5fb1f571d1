// libFuzzer target: an HF tokenizer.json (model.vocab / merges via the SAX reader, added tokens,
// normalizer, pre-tokenizer chain and its Split regexes, post-processor, decoder) built into a
// BpeTokenizer, which then encodes and decodes the sample texts. Bytes after the first NUL, when
// there is one, are the tokenizer_config.json (bos/eos tokens, add_bos/add_eos, clean-up).
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_tok_common.hpp"
#include "loopus/tokenizer/bpe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  const char* p = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(std::memchr(p, 0, size));
  const std::string tok_text(p, nul ? size_t(nul - p) : size);
  nlohmann::json cfg;
  if (nul) {
    cfg = nlohmann::json::parse(nul + 1, p + size, nullptr, /*allow_exceptions=*/false);
    if (cfg.is_discarded()) cfg = nullptr;  // the file reader refuses it: nothing to fuzz further
  }
  fuzz::guarded("tokenizer.json", size, [&] {
    const BpeTokenizer tok = BpeTokenizer::from_json_text(tok_text, cfg, "tokenizer.json");
    fuzz::exercise_samples(tok);
  });
  return 0;
}
