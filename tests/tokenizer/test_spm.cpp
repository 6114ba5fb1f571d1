// Tests for SpmTokenizer: llama.cpp's SPM goldens, stories260K GGUF vs llama2.c vocab, decode rules, errors.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/load.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "test_util.hpp"

namespace {

using loopus::SpmTokenizer;

const char* kLlamaSpm = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";
const char* kStoriesGguf = "models/stories260K/stories260K.gguf";
const char* kStoriesTok = "models/stories260K/tok512.bin";

nlohmann::json gguf_meta(const std::string& rel) {
  return loopus::io::open_gguf(loopus::test::data_file(rel)).meta;
}

const SpmTokenizer& llama_spm() {
  static const SpmTokenizer tok = SpmTokenizer::from_gguf_meta(gguf_meta(kLlamaSpm), kLlamaSpm);
  return tok;
}
const SpmTokenizer& stories_gguf() {
  static const SpmTokenizer tok = SpmTokenizer::from_gguf_meta(gguf_meta(kStoriesGguf), kStoriesGguf);
  return tok;
}
const SpmTokenizer& stories_bin() {
  static const SpmTokenizer tok = SpmTokenizer::from_llama2c(loopus::test::data_file(kStoriesTok));
  return tok;
}

/// llama.cpp test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n",
/// one line of space-separated ids per input.
struct Case {
  std::string text;
  std::vector<int32_t> ids;
};
std::vector<Case> read_vocab_tests(const std::string& base) {
  const std::string inp = loopus::test::read_text(loopus::test::data_file(base + ".inp"));
  const std::string out = loopus::test::read_text(loopus::test::data_file(base + ".out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    size_t next = inp.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(inp.substr(pos));
      break;
    }
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<Case> cases;
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    REQUIRE(i < texts.size());
    Case c{texts[i++], {}};
    std::istringstream nums(line);
    int32_t id;
    while (nums >> id) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  REQUIRE_EQ(cases.size(), texts.size());
  return cases;
}

std::string ids_str(const std::vector<int32_t>& v) {
  std::string s;
  for (auto x : v) s += std::to_string(x) + " ";
  return s;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

/// A mix of prompts: plain text, whitespace runs, digits, unicode outside the
/// 512-token vocabulary (byte fallback), literal special-token strings.
std::vector<std::string> probe_strings() {
  std::vector<std::string> v = {"",
                                " ",
                                "  ",
                                "\n",
                                "Once upon a time",
                                " Once upon a time",
                                "Once upon a time, there was a little girl named Lily.",
                                "Hello world",
                                "   leading spaces and trailing   ",
                                "tab\there\nnewline\r\ncrlf",
                                "12345 67890 3.14159",
                                "caf\xC3\xA9 na\xC3\xAFve \xE2\x96\x81 u2581",
                                "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C",
                                "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
                                "<s>Lily</s> and <unk> here",
                                "<0x41> is not a byte token in text",
                                "\xFF\xFE invalid utf8 \x80\x80",
                                "She said, \"I want to play!\" and ran."};
  // Lines of a real story text.
  std::istringstream in(loopus::test::read_text(
      loopus::test::data_file("text/tinystories/tinystories_validation_first1000.txt")));
  std::string line;
  int n = 0;
  while (std::getline(in, line) && n < 300) {
    if (line.empty()) continue;
    v.push_back(line);
    ++n;
  }
  return v;
}

}  // namespace

TEST_CASE("[loopus] spm: llama.cpp test-tokenizer-0 goldens (llama-spm vocab)") {
  const auto& tok = llama_spm();
  CHECK_EQ(tok.n_vocab(), 32000);
  CHECK_EQ(tok.bos_id(), 1);
  CHECK_EQ(tok.eos_id(), 2);
  CHECK_EQ(tok.unk_id(), 0);
  CHECK(tok.add_bos());
  CHECK_FALSE(tok.add_eos());
  CHECK_EQ(tok.kind(), "spm");
  CHECK_EQ(tok.find_token("\xE2\x96\x81Hello"), 15043);

  const auto cases = read_vocab_tests("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  // The staged files hold 46 strings (46 separators, 46 id lines).
  CHECK_EQ(cases.size(), 46u);
  int pass = 0;
  for (const auto& c : cases) {
    // test-tokenizer-0 calls common_tokenize(ctx, text, add_special=false, parse_special=false).
    auto got = tok.encode(c.text, false, false);
    CHECK_MESSAGE(got == c.ids, "text '" << c.text << "'\n got  " << ids_str(got) << "\n want " << ids_str(c.ids));
    pass += got == c.ids;
    // Decoding gives the text back (these inputs are valid UTF-8).
    CHECK_EQ(tok.decode(got), c.text);
  }
  CHECK_EQ(pass, int(cases.size()));
  MESSAGE("llama-spm goldens: " << pass << "/" << cases.size());
}

TEST_CASE("[loopus] spm: BOS/EOS, space prefix and special-token parsing") {
  const auto& tok = llama_spm();
  using V = std::vector<int32_t>;
  CHECK_EQ(tok.encode(""), V{1});
  CHECK_EQ(tok.encode("", false), V{});
  CHECK_EQ(tok.encode("Hello world"), (V{1, 15043, 3186}));
  CHECK_EQ(tok.encode("Hello world", false), (V{15043, 3186}));
  // Special strings split out only when parse_special; raw text after a special
  // gets the space prefix again (llama.cpp is_prev_special).
  CHECK_EQ(tok.encode("<s>Hello", false, true), (V{1, 15043}));
  CHECK_EQ(tok.encode("Hello</s>", false, true), (V{15043, 2}));
  auto raw = tok.encode("<s>Hello", false, false);
  CHECK_NE(raw.front(), 1);
  CHECK_EQ(tok.decode(raw), "<s>Hello");
  CHECK_EQ(tok.encode("Hello<s>world", false, true), (V{15043, 1, 3186}));
  CHECK_EQ(tok.encode("<unk>", false, true), V{0});
  // Characters outside the vocabulary become <0xNN> byte tokens (ids 3 + byte).
  auto emoji = tok.encode("\xF0\x9F\xA6\x99", false, false);  // U+1F999
  CHECK_EQ(emoji, (V{29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99}));
  CHECK_EQ(tok.byte_token(0x0A), 13);

  // Decode rules.
  CHECK_EQ(tok.decode({1, 15043, 3186}), "<s> Hello world");  // llama.cpp detokenize(special=true)
  CHECK_EQ(tok.decode({1, 15043, 3186}, true), "Hello world");
  CHECK_EQ(tok.decode({15043, 3186, 2}, true), "Hello world");
  CHECK_EQ(tok.decode({15043, 3186, 2}), "Hello world</s>");
  CHECK_EQ(tok.token_to_piece(15043, 1), "Hello");
  CHECK_EQ(tok.token_to_piece(15043, 3186), " Hello");
  CHECK_EQ(tok.token_to_piece(15043), " Hello");
  CHECK_EQ(tok.token_to_piece(1), "");  // control tokens print as nothing
  CHECK_EQ(tok.token_to_piece(2, 15043), "");
  CHECK_EQ(tok.token_to_piece(13), "\n");
  CHECK_THROWS_AS(tok.token_to_piece(32000), loopus::Error);
  CHECK_THROWS_AS(tok.decode({-1}), loopus::Error);

  // Metadata flags: add_eos and add_space_prefix = false.
  auto meta = gguf_meta(kLlamaSpm);
  meta["tokenizer.ggml.add_eos_token"] = true;
  meta["tokenizer.ggml.add_bos_token"] = false;
  meta["tokenizer.ggml.add_space_prefix"] = false;
  auto t2 = SpmTokenizer::from_gguf_meta(meta, "modified.gguf");
  CHECK_FALSE(t2.add_bos());
  CHECK(t2.add_eos());
  CHECK_EQ(t2.encode("Hello world"), (V{10994, 3186, 2}));  // "Hello" without the ▁
  CHECK_EQ(t2.decode({15043}), " Hello");
}

TEST_CASE("[loopus] spm: every token and code point round-trips (llama.cpp test-tokenizer-1-spm)") {
  const auto& tok = llama_spm();
  int bad_tokens = 0;
  for (int32_t i = 0; i < tok.n_vocab(); ++i) {
    std::string str = tok.decode({i});
    std::string check = tok.decode(tok.encode(str, false, true));
    if (check != str && ++bad_tokens <= 5) CHECK_MESSAGE(false, "token " << i << " '" << str << "' -> '" << check << "'");
  }
  CHECK_EQ(bad_tokens, 0);
  int bad_cps = 0;
  long n_cps = 0;
  for (uint32_t cp = 1; cp < 0x110000; ++cp) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x40000 && cp <= 0xE0000) || cp == 0x2581) continue;
    std::string s = utf8(cp);
    ++n_cps;
    if (tok.decode(tok.encode(s, false, true)) != s && ++bad_cps <= 5) CHECK_MESSAGE(false, "code point " << cp);
  }
  CHECK_EQ(bad_cps, 0);
  MESSAGE("round-tripped " << tok.n_vocab() << " tokens and " << n_cps << " code points");
}

TEST_CASE("[loopus] spm: stories260K tok512.bin equals the GGUF vocabulary") {
  const auto& g = stories_gguf();
  const auto& b = stories_bin();
  REQUIRE_EQ(g.n_vocab(), 512);
  REQUIRE_EQ(b.n_vocab(), g.n_vocab());
  CHECK_EQ(b.bos_id(), g.bos_id());
  CHECK_EQ(b.eos_id(), g.eos_id());
  CHECK_EQ(b.unk_id(), g.unk_id());
  CHECK_EQ(b.add_bos(), g.add_bos());
  CHECK_EQ(b.add_eos(), g.add_eos());
  int diff = 0;
  for (int32_t i = 0; i < g.n_vocab(); ++i) {
    bool same = b.token_text(i) == g.token_text(i) && b.token_score(i) == g.token_score(i) &&
                b.token_type(i) == g.token_type(i);
    if (!same && ++diff <= 5) CHECK_MESSAGE(false, "token " << i << ": '" << b.token_text(i) << "' vs '"
                                                          << g.token_text(i) << "'");
  }
  CHECK_EQ(diff, 0);

  int n = 0;
  for (const auto& s : probe_strings()) {
    for (bool special : {false, true}) {
      auto a = g.encode(s, special, special);
      auto c = b.encode(s, special, special);
      CHECK_MESSAGE(a == c, "'" << s << "': gguf " << ids_str(a) << " vs bin " << ids_str(c));
      ++n;
    }
  }
  MESSAGE(n << " encodes identical between stories260K.gguf and tok512.bin");
}

TEST_CASE("[loopus] spm: stories260K golden greedy ids decode to the golden text") {
  const auto ref = nlohmann::json::parse(
      loopus::test::read_text(loopus::test::data_file("models/stories260K/stories260K_greedy_ref.json")));
  const auto ids = ref.at("greedy_ids").get<std::vector<int32_t>>();
  const auto text = ref.at("text").get<std::string>();
  REQUIRE_EQ(ids.size(), 256u);
  for (const SpmTokenizer* tok : {&stories_gguf(), &stories_bin()}) {
    // Streaming, as a generation loop prints: the first token follows BOS.
    std::string streamed;
    int32_t prev = tok->bos_id();
    for (int32_t id : ids) {
      streamed += tok->token_to_piece(id, prev);
      prev = id;
    }
    CHECK_EQ(streamed, text);
    std::vector<int32_t> with_bos = {tok->bos_id()};
    with_bos.insert(with_bos.end(), ids.begin(), ids.end());
    CHECK_EQ(tok->decode(with_bos, true), text);
    CHECK_EQ(tok->decode(ids), text);
    // Round trip through encode. The model's greedy output happens to be the
    // canonical tokenization of its text, so encode reproduces the ids exactly.
    auto enc = tok->encode(text);
    CHECK_EQ(enc, with_bos);
    CHECK_EQ(tok->decode(enc, true), text);
  }
}

TEST_CASE("[loopus] spm: encode is O(n log n) on long and pathological input") {
  // CPU time, not wall time: the test machine may be shared.
  auto cpu_sec = [](auto&& fn) {
    std::clock_t t0 = std::clock();
    fn();
    return double(std::clock() - t0) / CLOCKS_PER_SEC;
  };
  const auto& tok = llama_spm();
  const std::string shakespeare =
      loopus::test::read_text(loopus::test::data_file("text/public_domain/tinyshakespeare.txt"));
  std::vector<int32_t> ids;
  double sec = cpu_sec([&] { ids = tok.encode(shakespeare, false, false); });
  CHECK_EQ(tok.decode(ids), shakespeare);
  MESSAGE("tinyshakespeare: " << shakespeare.size() << " bytes -> " << ids.size() << " tokens in " << sec * 1e3
                              << " ms CPU (" << shakespeare.size() / sec / 1e6 << " MB/s)");
  // One long word: every merge touches the same region. 10x the input must
  // cost about 10x (n log n), not 100x (a quadratic merge loop).
  const std::string small(20000, 'a'), big(200000, 'a');
  std::vector<int32_t> w;
  double t_small = cpu_sec([&] {
    for (int r = 0; r < 10; ++r) w = tok.encode(small, false, false);
  }) / 10;
  double t_big = cpu_sec([&] { w = tok.encode(big, false, false); });
  CHECK_EQ(tok.decode(w), big);
  CHECK_LT(t_big, 30.0 * std::max(t_small, 1e-4));
  MESSAGE("'a' x 20k: " << t_small * 1e3 << " ms, x 200k: " << t_big * 1e3 << " ms CPU (" << w.size()
                        << " tokens)");
}

TEST_CASE("[loopus] spm: per-word merging equals merging the whole text") {
  // The llama vocabulary lets encode merge word by word. One extra piece with
  // U+2581 inside turns that off; the piece cannot form (its prefixes are not
  // pieces), so both tokenizers must agree on everything.
  const auto& tok = llama_spm();
  SpmTokenizer::Vocab v;
  for (int32_t i = 0; i < tok.n_vocab(); ++i) {
    v.tokens.push_back(tok.token_text(i));
    v.scores.push_back(tok.token_score(i));
    v.types.push_back(tok.token_type(i));
  }
  v.tokens.push_back("\x01\xE2\x96\x81\x01");
  v.scores.push_back(-1e9f);
  v.types.push_back(SpmTokenizer::TokenType::kNormal);
  const SpmTokenizer whole(std::move(v), "no-split");
  CHECK(tok.merges_per_word());
  CHECK_FALSE(whole.merges_per_word());
  std::string text = loopus::test::read_text(loopus::test::data_file("text/public_domain/tinyshakespeare.txt"));
  text.resize(200000);
  text += " \xE4\xBD\xA0\xE5\xA5\xBD  \t  x\xF0\x9F\xA6\x99y   \xFF\x80 end";
  CHECK_EQ(whole.encode(text, false, false), tok.encode(text, false, false));
  for (const auto& s : probe_strings()) CHECK_EQ(whole.encode(s), tok.encode(s));
}

TEST_CASE("[loopus] spm: load_tokenizer_from_gguf_meta dispatches on tokenizer.ggml.model") {
  auto meta = gguf_meta(kStoriesGguf);
  auto t = loopus::load_tokenizer_from_gguf_meta(meta, kStoriesGguf);
  REQUIRE(t);
  CHECK_EQ(t->kind(), "spm");
  CHECK_EQ(t->n_vocab(), 512);
  meta["tokenizer.ggml.model"] = "gpt2";
  CHECK_THROWS_AS(loopus::load_tokenizer_from_gguf_meta(meta, "x.gguf"), loopus::Error);
  meta["tokenizer.ggml.model"] = "bert";
  CHECK_THROWS_WITH_AS(loopus::load_tokenizer_from_gguf_meta(meta, "x.gguf"), doctest::Contains("x.gguf"),
                       loopus::Error);
  meta.erase("tokenizer.ggml.model");
  CHECK_THROWS_AS(loopus::load_tokenizer_from_gguf_meta(meta, "x.gguf"), loopus::Error);
}

TEST_CASE("[loopus] spm: malformed metadata and files throw Error naming file and key") {
  const auto base = gguf_meta(kStoriesGguf);
  auto expect = [](const nlohmann::json& m, const char* needle) {
    CHECK_THROWS_WITH_AS(SpmTokenizer::from_gguf_meta(m, "bad.gguf"), doctest::Contains(needle), loopus::Error);
    CHECK_THROWS_WITH_AS(SpmTokenizer::from_gguf_meta(m, "bad.gguf"), doctest::Contains("bad.gguf"),
                         loopus::Error);
  };
  {
    auto m = base;
    m.erase("tokenizer.ggml.tokens");
    expect(m, "tokenizer.ggml.tokens");
  }
  {
    auto m = base;
    m.erase("tokenizer.ggml.scores");
    expect(m, "tokenizer.ggml.scores");
  }
  {
    auto m = base;
    m["tokenizer.ggml.scores"].erase(m["tokenizer.ggml.scores"].size() - 1);
    expect(m, "tokenizer.ggml.scores");
  }
  {
    auto m = base;
    m["tokenizer.ggml.token_type"].push_back(1);
    expect(m, "tokenizer.ggml.token_type");
  }
  {
    auto m = base;
    m["tokenizer.ggml.model"] = "gpt2";
    expect(m, "tokenizer.ggml.model");
  }
  {
    auto m = base;
    m["tokenizer.ggml.bos_token_id"] = 512;
    expect(m, "tokenizer.ggml.bos_token_id");
  }
  {
    auto m = base;
    m["tokenizer.ggml.eos_token_id"] = "two";
    expect(m, "tokenizer.ggml.eos_token_id");
  }
  {
    auto m = base;
    m["tokenizer.ggml.tokens"][5] = 7;
    expect(m, "tokenizer.ggml.tokens");
  }
  {
    auto m = base;
    m["tokenizer.ggml.tokens"][300] = m["tokenizer.ggml.tokens"][301];
    expect(m, "duplicate");
  }
  {
    // 0xFFFFFFFF is how converters spell "no such token": accepted as none.
    auto m = base;
    m["tokenizer.ggml.padding_token_id"] = 4294967295u;
    CHECK_EQ(SpmTokenizer::from_gguf_meta(m, "ok.gguf").pad_id(), -1);
  }

  // llama2.c files: truncated, empty, bad header.
  auto dir = loopus::test::temp_dir("spm_bad");
  const std::string good = loopus::test::read_text(loopus::test::data_file(kStoriesTok));
  auto write = [&](const std::string& name, const std::string& bytes) {
    auto p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  };
  auto trunc = write("trunc.bin", good.substr(0, good.size() - 3));
  CHECK_THROWS_WITH_AS(SpmTokenizer::from_llama2c(trunc), doctest::Contains("trunc.bin"), loopus::Error);
  CHECK_THROWS_AS(SpmTokenizer::from_llama2c(write("empty.bin", "")), loopus::Error);
  CHECK_THROWS_AS(SpmTokenizer::from_llama2c(write("hdr.bin", good.substr(0, 4))), loopus::Error);
  CHECK_THROWS_AS(SpmTokenizer::from_llama2c((dir / "missing.bin").string()), loopus::Error);
  CHECK_THROWS_AS(SpmTokenizer::from_llama2c(loopus::test::data_file(kStoriesTok), 1, 9999), loopus::Error);
  CHECK_EQ(SpmTokenizer::from_llama2c(write("copy.bin", good)).n_vocab(), 512);
}
