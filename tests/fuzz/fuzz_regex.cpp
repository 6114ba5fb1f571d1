// libFuzzer target: a pre-tokenizer regex (Oniguruma dialect, as tokenizer.json spells it)
// compiled by the PCRE2 wrapper, then matched over a UTF-8 text. The input is pattern, NUL,
// text; a second NUL byte right after the first makes the pattern literal (a Split String).
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <cstring>
#include <string_view>

#include "fuzz_common.hpp"
#include "loopus/tokenizer/detail/regex.hpp"
#include "loopus/tokenizer/unicode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  const char* p = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(std::memchr(p, 0, size));
  if (!nul) return 0;
  const std::string_view pattern(p, size_t(nul - p));
  std::string_view text(nul + 1, size_t(p + size - nul - 1));
  const bool literal = !text.empty() && text[0] == '\0';
  if (literal) text.remove_prefix(1);
  // for_each_match's contract: the text is valid UTF-8 (the tokenizers check before they split).
  if (!unicode::is_valid_utf8(text)) return 0;
  fuzz::guarded("split pattern", size, [&] {
    const tokenizer_detail::Regex re(pattern, literal, "split pattern");
    size_t last = 0;
    re.for_each_match(text, [&](size_t b, size_t e) {
      if (b < last || e <= b || e > text.size()) fuzz::die("match out of order or out of range");
      last = e;
    });
  });
  return 0;
}
