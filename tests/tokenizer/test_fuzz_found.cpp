// What the libFuzzer targets (tests/fuzz, docs/security.md "Fuzzing") found in the tokenizers and
// their regexes: each input that crashed or escaped the error contract, and the clear error it
// gets now.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/detail/regex.hpp"

using namespace loopus;

TEST_CASE("[loopus] fuzz found: a regex pattern that is not UTF-8 is an error, not a crash in PCRE2") {
  // fuzz_regex: compiling with PCRE2_NO_UTF_CHECK made pcre2_compile read out of bounds (SEGV) on
  // this pattern; PCRE2 now checks the pattern and loopus reports it.
  const std::string pattern = "(?i:" + std::string(25, '\xff') + "'sre|'ve|\xe4| ?\\(?!\\S)|\\s+";
  for (bool literal : {false, true}) {
    CAPTURE(literal);
    bool threw = false;
    try {
      tokenizer_detail::Regex re(pattern, literal, "tokenizer.json (Split pattern)");
    } catch (const Error& e) {
      threw = true;
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(e.kind() == ErrorKind::format);
      CHECK(msg.find("tokenizer.json (Split pattern)") != std::string::npos);
      CHECK(msg.find("UTF-8") != std::string::npos);
    }
    CHECK(threw);
  }
  // Valid patterns still compile and match.
  tokenizer_detail::Regex ok("\\p{L}+", false, "test");
  int n = 0;
  ok.for_each_match("ab c\xc3\xa9", [&](size_t, size_t) { ++n; });
  CHECK_EQ(n, 2);
}

TEST_CASE("[loopus] fuzz found: tokenizer.json vocabulary ids far beyond its size are an error") {
  // A 60-byte tokenizer.json with one token numbered 2e9 made BpeTokenizer size its id tables for
  // 2e9 entries (64 GB) before anything else was checked.
  const auto json = [](const std::string& id) {
    return R"({"model": {"type": "BPE", "vocab": {"a": )" + id + R"(, "b": 1}, "merges": []}})";
  };
  bool threw = false;
  try {
    (void)BpeTokenizer::from_json_text(json("2000000000"), nullptr, "tokenizer.json");
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.kind() == ErrorKind::format);
    CHECK(msg.find("tokenizer.json") != std::string::npos);
    CHECK(msg.find("far beyond") != std::string::npos);
    CHECK(msg.find("2000000000") != std::string::npos);
  }
  CHECK(threw);
  // Gaps within the limit still load (2 entries: ids below 2 * 2 + 1024).
  CHECK_EQ(BpeTokenizer::from_json_text(json("1027"), nullptr, "tokenizer.json").n_vocab(), 1028);
  CHECK_THROWS_AS((void)BpeTokenizer::from_json_text(json("1028"), nullptr, "tokenizer.json"), FormatError);
}

TEST_CASE(
    "[loopus] fuzz found: the one-code-unit escape is refused, a pattern that backtracks exponentially fails fast") {
  // fuzz_regex (30-minute run): this pattern with \C (match one code unit, even inside a UTF-8
  // character) ran for over 10 s on a 21-byte subject. \C is now refused at compile time; without
  // it, the nested quantifiers of ("?[^*]*)* still backtrack exponentially, and the match budget
  // (Regex::kMatchLimit) turns that into a LimitError naming the source.
  const std::string head = "(\\s:\\s!\\S)|\\s", tail = "s\\s\\s|(\"?[^*]*)*\\s";
  const std::string subject = "l\\S-|\\s\\s\\s\\s+(?!\\\\s" + std::string(1, '\0');
  CHECK_THROWS_AS(tokenizer_detail::Regex(head + "\\C" + std::string(69, 'C') + tail, false, "tokenizer.json"),
                  FormatError);
  tokenizer_detail::Regex redos(head + std::string(70, 'C') + tail, false, "tokenizer.json (Split pattern)");
  const auto t0 = std::chrono::steady_clock::now();
  bool threw = false;
  try {
    redos.for_each_match(subject, [](size_t, size_t) {});
  } catch (const Error& e) {
    threw = true;
    CHECK(e.kind() == ErrorKind::limit);
    CHECK(std::string(e.what()).find("tokenizer.json (Split pattern)") != std::string::npos);
  }
  CHECK(threw);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 5.0);
  // A legitimate pattern on a long whitespace run stays within the budget.
  tokenizer_detail::Regex ws("\\s+(?!\\S)|\\s+", false, "test");
  size_t n = 0;
  ws.for_each_match(std::string(1 << 20, ' ') + "x", [&](size_t, size_t) { ++n; });
  CHECK_GE(n, 1u);
}
