// PCRE2 (8-bit, UTF + UCP, JIT when available) wrapper for pre-tokenizer regexes written for Oniguruma.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "loopus/core/error.hpp"
#include "loopus/tokenizer/unicode.hpp"

namespace loopus::tokenizer_detail {

/// Oniguruma's \s (what HF tokenizers' regexes were written for) is exactly Unicode White_Space;
/// PCRE2's UCP \s also takes U+180E. This class body is White_Space, for use inside [...].
inline constexpr std::string_view kWhiteSpaceClassBody =
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

/// Rewrites an HF/Oniguruma pattern so PCRE2 matches the same strings: \s and \S become explicit
/// White_Space classes (\S inside a class is left alone: PCRE2 cannot negate a set within a set).
inline std::string onig_to_pcre2(std::string_view pat) {
  std::string out;
  out.reserve(pat.size() + 64);
  bool in_class = false;
  size_t class_start = 0;
  for (size_t i = 0; i < pat.size(); ++i) {
    const char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      const char n = pat[i + 1];
      ++i;
      if (n == 's') {
        if (in_class) {
          out += kWhiteSpaceClassBody;
        } else {
          out += '[';
          out += kWhiteSpaceClassBody;
          out += ']';
        }
      } else if (n == 'S' && !in_class) {
        out += "[^";
        out += kWhiteSpaceClassBody;
        out += ']';
      } else if (n == 'Q') {
        // \Q...\E: copy verbatim, nothing inside is an escape.
        const size_t e = pat.find("\\E", i + 1);
        const size_t stop = (e == std::string_view::npos) ? pat.size() : e + 2;
        out += "\\Q";
        out.append(pat.substr(i + 1, stop - (i + 1)));
        i = stop - 1;
      } else {
        out += '\\';
        out += n;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = out.size();
    } else if (in_class && c == ']') {
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      const size_t len = out.size() - class_start;
      const bool first = len == 1 || (len == 2 && out[class_start + 1] == '^');
      if (!first) in_class = false;
    }
    out += c;
  }
  return out;
}

/// A compiled pattern; immutable, shareable between threads (each match call uses its own
/// match data).
class Regex {
 public:
  Regex() = default;
  /// Compiles `pattern` (Oniguruma dialect as found in tokenizer.json, rewritten for PCRE2) or,
  /// when `literal`, the exact string. `what` names the source for error messages.
  Regex(std::string_view pattern, bool literal, const std::string& what) {
    const std::string pat = literal ? std::string(pattern) : onig_to_pcre2(pattern);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // PCRE2 checks the pattern's UTF-8 (PCRE2_NO_UTF_CHECK would make an ill-formed pattern
    // undefined behaviour in pcre2_compile); only subjects skip the check (see for_each_match).
    // \C (one code unit) could split a UTF-8 character into pieces; no tokenizer uses it.
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;
    if (literal) opts = PCRE2_UTF | PCRE2_LITERAL;
    pcre2_code_8* code = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pat.data()), pat.size(),
                                         opts, &err, &err_off, nullptr);
    if (!code) {
      PCRE2_UCHAR8 buf[256];
      pcre2_get_error_message_8(err, buf, sizeof(buf));
      throw FormatError(what + ": cannot compile regex '" + std::string(pattern) + "' at offset " +
                        std::to_string(err_off) + ": " + reinterpret_cast<const char*>(buf));
    }
    code_.reset(code, [](pcre2_code_8* p) { pcre2_code_free_8(p); });
    jit_ = pcre2_jit_compile_8(code, PCRE2_JIT_COMPLETE) == 0;
    what_ = what;
  }

  bool empty() const { return !code_; }
  bool jit() const { return jit_; }

  /// Calls f(begin, end) for each non-empty, non-overlapping match in `subject`, left to right.
  /// Empty matches are skipped (HF drops empty pieces). `subject` must be valid UTF-8: PCRE2 is
  /// told not to check it (callers repair their text once, not every piece), and reads past an
  /// ill-formed one. Builds with assertions check it.
  template <class F>
  void for_each_match(std::string_view subject, F&& f) const {
    if (!code_ || subject.empty()) return;
    LOOPUS_ASSERT(unicode::is_valid_utf8(subject));
    pcre2_match_data_8* md = thread_match_data();
    const auto* s = reinterpret_cast<PCRE2_SPTR8>(subject.data());
    const size_t n = subject.size();
    size_t off = 0;
    while (off < n) {
      int rc = -1;
      if (jit_) rc = pcre2_jit_match_8(code_.get(), s, n, off, 0, md, match_context());
      if (!jit_ || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match_8(code_.get(), s, n, off, PCRE2_NO_UTF_CHECK, md, match_context());
      if (rc == PCRE2_ERROR_NOMATCH) return;
      // rc == 0: the one-pair ovector is too small for the pattern's groups, but the whole
      // match (all we use) is still in ovector[0..1].
      if (rc < 0) {
        PCRE2_UCHAR8 buf[256];
        pcre2_get_error_message_8(rc, buf, sizeof(buf));
        throw LimitError(what_ + ": regex match failed on a " + std::to_string(n) +
                         "-byte text: " + reinterpret_cast<const char*>(buf));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(md);
      const size_t b = ov[0], e = ov[1];
      if (e > b) {
        f(b, e);
        off = e;
      } else {
        // Empty match: step over one UTF-8 character.
        off = b + 1;
        while (off < n && (static_cast<unsigned char>(subject[off]) & 0xC0) == 0x80) ++off;
      }
    }
  }

 private:
  /// One match block per thread, with room for the whole-match offsets only: no allocation per
  /// call, and usable with every pattern.
  /// The backtracking budget of one match call (PCRE2's usual default, set explicitly): a pattern
  /// that backtracks exponentially (a hostile tokenizer.json's "(a*)*b") fails with a LimitError
  /// in milliseconds; real pre-tokenizer patterns take a few steps per byte (a run of a million
  /// spaces matches).
  static constexpr uint32_t kMatchLimit = 10000000;
  static pcre2_match_context_8* match_context() {
    static pcre2_match_context_8* ctx = [] {
      pcre2_match_context_8* c = pcre2_match_context_create_8(nullptr);
      pcre2_set_match_limit_8(c, kMatchLimit);
      return c;
    }();
    return ctx;
  }
  static pcre2_match_data_8* thread_match_data() {
    struct Holder {
      pcre2_match_data_8* p = pcre2_match_data_create_8(1, nullptr);
      ~Holder() { pcre2_match_data_free_8(p); }
    };
    thread_local Holder h;
    if (!h.p) throw LimitError("pcre2: out of memory creating match data");
    return h.p;
  }

  std::shared_ptr<pcre2_code_8> code_;
  bool jit_ = false;
  std::string what_;
};

}  // namespace loopus::tokenizer_detail
