// Text preprocessing of lm-eval's tasks (HellaSwag's bracket cleanup, WikiText's detokenizer), with
// PCRE2 for Python's re.sub / re.split, and a CSV reader for the MMLU files.
// SPDX-License-Identifier: MIT
#pragma once
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cctype>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus::eval::text {

/// Python's str.replace(old, new): every non-overlapping occurrence, left to right.
inline std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t at; (at = s.find(from, pos)) != std::string::npos; pos = at + from.size()) {
    out.append(s, pos, at - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  return out;
}

/// Python's str.strip() for the ASCII whitespace the datasets contain.
inline std::string_view strip(std::string_view s) {
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

inline std::string_view rstrip(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r' ||
                        s.back() == '\v' || s.back() == '\f'))
    s.remove_suffix(1);
  return s;
}

/// A compiled PCRE2 pattern (UTF, Unicode properties: \s is Unicode whitespace as in Python 3).
class Pattern {
 public:
  explicit Pattern(std::string_view pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                  &err, &off, nullptr);
    if (!c) throw FormatError("cannot compile the regex '" + std::string(pattern) + "'");
    code_.reset(c, pcre2_code_free);
  }
  /// re.sub(pattern, replacement, s) for all matches; the replacement uses PCRE2's $1 syntax.
  std::string sub(std::string_view s, std::string_view replacement) const {
    std::string out(s.size() + 64, '\0');
    for (int attempt = 0; attempt < 2; ++attempt) {
      PCRE2_SIZE len = out.size();
      const int rc = pcre2_substitute(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                                      PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, nullptr, nullptr,
                                      reinterpret_cast<PCRE2_SPTR>(replacement.data()), replacement.size(),
                                      reinterpret_cast<PCRE2_UCHAR*>(out.data()), &len);
      if (rc >= 0) {
        out.resize(len);
        return out;
      }
      if (rc != PCRE2_ERROR_NOMEMORY || attempt == 1) throw FormatError("regex substitution failed on a text");
      out.assign(len, '\0');
    }
    return out;
  }
  /// End offset of the last (non-empty) match, npos when none.
  size_t last_match_end(std::string_view s) const {
    size_t last = std::string::npos;
    for_each(s, [&](size_t, size_t e) { last = e; });
    return last;
  }
  /// Number of (non-empty) matches.
  size_t count(std::string_view s) const {
    size_t n = 0;
    for_each(s, [&](size_t, size_t) { ++n; });
    return n;
  }
  /// f(begin, end) for each non-empty match, left to right.
  template <class F>
  void for_each(std::string_view s, F&& f) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
    size_t off = 0;
    while (off <= s.size()) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), off, 0, md.get(),
                                 nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      if (ov[1] == ov[0]) {
        off = ov[1] + 1;
        continue;
      }
      f(size_t(ov[0]), size_t(ov[1]));
      off = ov[1];
    }
  }

 private:
  std::shared_ptr<pcre2_code> code_;
};

/// Python's str.capitalize() for ASCII letters: the first character upper case, the rest lower.
inline std::string capitalize(std::string_view s) {
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(out[i]);
    if (c < 0x80) out[i] = char(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

/// lm-eval hellaswag utils.preprocess: strip, " [title]" -> ". ", drop [...] spans, "  " -> " ".
inline std::string hellaswag_preprocess(std::string_view s) {
  static const Pattern brackets("\\[.*?\\]");
  std::string t(strip(s));
  t = replace_all(t, " [title]", ". ");
  t = brackets.sub(t, "");
  return replace_all(t, "  ", " ");
}

/// lm-eval wikitext preprocess_wikitext.wikitext_detokenizer, step for step.
inline std::string wikitext_detokenize(std::string_view page) {
  static const Pattern quote_digit("/' [0-9]/"), paren("\\(\\s*([^\\)]*?)\\s*\\)"), square("\\[\\s*([^\\]]*?)\\s*\\]"),
      curly("{\\s*([^}]*?)\\s*}"), dquote("\"\\s*([^\"]*?)\\s*\""), squote("'\\s*([^']*?)\\s*'");
  std::string s(page);
  s = replace_all(s, "s '", "s'");
  s = quote_digit.sub(s, "/'[0-9]/");
  s = replace_all(s, " @-@ ", "-");
  s = replace_all(s, " @,@ ", ",");
  s = replace_all(s, " @.@ ", ".");
  for (const char* p : {" : ", " ; ", " . ", " ! ", " ? ", " , "}) {
    const std::string from(p);
    s = replace_all(s, from, from.substr(1));
  }
  s = paren.sub(s, "($1)");
  s = square.sub(s, "[$1]");
  s = curly.sub(s, "{$1}");
  s = dquote.sub(s, "\"$1\"");
  s = squote.sub(s, "'$1'");
  s = replace_all(s, "= = = =", "====");
  s = replace_all(s, "= = =", "===");
  s = replace_all(s, "= =", "==");
  s = replace_all(s, " \xC2\xB0 ", "\xC2\xB0");
  s = replace_all(s, " \n", "\n");
  s = replace_all(s, "\n ", "\n");
  s = replace_all(s, " N ", " 1 ");
  return replace_all(s, " 's", "'s");
}

/// len(re.split(r"\s+", s)): the pieces between runs of whitespace (empty ends included).
inline size_t split_whitespace_count(std::string_view s) {
  static const Pattern ws("\\s+");
  return ws.count(s) + 1;
}

/// RFC 4180 CSV (quoted fields, "" escapes, line breaks inside quotes; CRLF or LF rows). `what`
/// names the file for errors.
inline std::vector<std::vector<std::string>> parse_csv(std::string_view s, const std::string& what) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"' && field.empty()) {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (quoted) throw FormatError(what + ": a quoted field is not closed");
  if (any || !field.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace loopus::eval::text
