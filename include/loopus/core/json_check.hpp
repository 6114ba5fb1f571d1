// A pre-parse check on JSON text from files: nesting depth and, for text that becomes a DOM, the
// number of arrays and objects, so what a parser allocates stays a small multiple of the text.
// SPDX-License-Identifier: MIT
#pragma once
#include <string>
#include <string_view>

#include "loopus/core/error.hpp"

namespace loopus {

/// The deepest nesting loopus accepts in a JSON file. Real files need a handful
/// of levels (a tokenizer.json about 6).
inline constexpr int kMaxJsonDepth = 64;
/// JSON that becomes a DOM may hold at most one array or object per this many
/// bytes of text: an empty `{}` costs a DOM about 140 bytes, so `[{},{},...]`
/// would otherwise cost ~46 times its size. Real files use far fewer (a
/// safetensors header about one per 25 bytes, a config.json fewer still).
inline constexpr size_t kJsonBytesPerContainer = 8;

/// The most arrays and objects a DOM built from `bytes` bytes of JSON may hold.
inline size_t json_container_budget(size_t bytes) { return bytes / kJsonBytesPerContainer + 16; }

/// Checks JSON text from a file before it is parsed, in one pass that allocates
/// nothing: nesting at most max_depth levels (brackets inside strings do not
/// count) and, when `dom` (the whole text becomes an nlohmann::json), at most
/// json_container_budget() arrays and objects. Either excess is a LimitError
/// naming `what`; malformed JSON is left to the parser. Together the two bound a
/// parser's memory at a small multiple of the text's size.
inline void check_json_text(std::string_view text, const std::string& what, bool dom = true,
                            int max_depth = kMaxJsonDepth) {
  int depth = 0;
  size_t containers = 0;
  const size_t budget = json_container_budget(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        throw LimitError(what + ": JSON nested deeper than " + std::to_string(max_depth) + " levels (at byte " +
                         std::to_string(i) + ")");
      if (dom && ++containers > budget)
        throw LimitError(what + ": more than " + std::to_string(budget) + " JSON arrays and objects in " +
                         std::to_string(text.size()) + " bytes (at byte " + std::to_string(i) +
                         "; loopus allows one per " + std::to_string(kJsonBytesPerContainer) + " bytes)");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace loopus
