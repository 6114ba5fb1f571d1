// What the tokenizer targets do with a tokenizer: encode the sample texts (every flag
// combination), check the ids, decode them back, render every piece.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::fuzz {

inline void exercise(const Tokenizer& tok, std::string_view text, bool add_special, bool parse_special) {
  const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
  int32_t prev = -1;
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.n_vocab())
      die("encode returned id " + std::to_string(id) + " outside the " + std::to_string(tok.n_vocab()) +
          "-token vocabulary");
    (void)tok.token_to_piece(id, prev);
    prev = id;
  }
  (void)tok.decode(ids, false);
  (void)tok.decode(ids, true);
}

inline void exercise_samples(const Tokenizer& tok) {
  for (std::string_view t : kSampleTexts)
    for (int flags = 0; flags < 4; ++flags) exercise(tok, t, flags & 1, flags & 2);
  // Every id renders (decode of ids the tokenizer never produced, e.g. unused or control tokens).
  std::vector<int32_t> all;
  for (int32_t id = 0; id < tok.n_vocab() && id < 4096; ++id) all.push_back(id);
  (void)tok.decode(all, false);
}

}  // namespace loopus::fuzz
