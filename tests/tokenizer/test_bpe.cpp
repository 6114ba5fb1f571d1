// Tests for BpeTokenizer: HF goldens (Qwen3, Llama 3), llama.cpp vocab tests, added tokens, errors, NFC.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/unicode.hpp"
#include "test_util.hpp"

namespace {

using loopus::BpeTokenizer;
using Ids = std::vector<int32_t>;

const char* kVocabDir = "tokenizers/llama.cpp-vocab/";

/// Loads a tokenizer.json once per test binary and reports how long it took.
BpeTokenizer& load_once(const std::string& rel, std::unique_ptr<BpeTokenizer>& slot) {
  if (!slot) {
    const std::string path = loopus::test::data_file(rel);
    const auto t0 = std::chrono::steady_clock::now();
    slot = std::make_unique<BpeTokenizer>(BpeTokenizer::from_json_file(path));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE(rel << " loaded in " << ms << " ms");
  }
  return *slot;
}
BpeTokenizer& qwen3() {
  static std::unique_ptr<BpeTokenizer> t;
  return load_once("tokenizers/qwen3/tokenizer.json", t);
}
BpeTokenizer& llama3() {
  static std::unique_ptr<BpeTokenizer> t;
  return load_once("tokenizers/llama3/tokenizer.json", t);
}

struct Golden {
  int i;
  std::string text;
  Ids ids;
};

std::vector<Golden> read_goldens(const std::string& rel) {
  std::vector<Golden> out;
  std::istringstream in(loopus::test::read_text(loopus::test::data_file(rel)));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    out.push_back({j.at("i").get<int>(), j.at("text").get<std::string>(), j.at("ids").get<Ids>()});
  }
  return out;
}

/// llama.cpp's test-tokenizer-0 files: inputs separated by "\n__ggml_vocab_test__\n", one line
/// of space-separated ids per input (made by HF AutoTokenizer with add_special_tokens=False).
std::vector<std::pair<std::string, Ids>> read_vocab_test(const std::string& base) {
  const std::string inp = loopus::test::read_text(loopus::test::data_file(base + ".inp"));
  const std::string outp = loopus::test::read_text(loopus::test::data_file(base + ".out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t p = 0;;) {
    const size_t e = inp.find(sep, p);
    if (e == std::string::npos) break;
    texts.push_back(inp.substr(p, e - p));
    p = e + sep.size();
  }
  std::vector<std::pair<std::string, Ids>> out;
  std::istringstream lines(outp);
  std::string line;
  for (const auto& t : texts) {
    REQUIRE(std::getline(lines, line));
    Ids ids;
    std::istringstream ls(line);
    for (int32_t x; ls >> x;) ids.push_back(x);
    out.emplace_back(t, ids);
  }
  return out;
}

int count_mismatches(const BpeTokenizer& tok, const std::vector<std::pair<std::string, Ids>>& cases) {
  int bad = 0;
  for (const auto& [text, ids] : cases) {
    const Ids got = tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
    if (got != ids) {
      ++bad;
      MESSAGE("mismatch for " << nlohmann::json(text).dump());
    }
  }
  return bad;
}

/// GGUF-style metadata (what convert_hf_to_gguf writes for a "gpt2" vocabulary) built from an
/// HF tokenizer.json: tokens by id, merges as "a b", added tokens typed control (3) when
/// special and user-defined (4) otherwise. The Llama 3 / Qwen2 vocab GGUFs are too big to stage.
nlohmann::json gguf_meta_from_tokenizer_json(const std::string& rel, const std::string& pre) {
  const std::string path = loopus::test::data_file(rel);
  const auto tj = loopus::bpe_detail::parse_tokenizer_json(loopus::bpe_detail::read_file(path), path);
  std::vector<std::string> tokens;
  std::vector<int> types;
  const auto put = [&](int64_t id, const std::string& s, int type) {
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(static_cast<size_t>(id) + 1);
      types.resize(static_cast<size_t>(id) + 1, 1);
    }
    tokens[static_cast<size_t>(id)] = s;
    types[static_cast<size_t>(id)] = type;
  };
  for (const auto& [s, id] : tj.vocab) put(id, s, 1);
  for (const auto& a : tj.rest.at("added_tokens")) put(a.at("id").get<int64_t>(), a.at("content"), a.at("special").get<bool>() ? 3 : 4);
  std::vector<std::string> merges;
  for (const auto& [a, b] : tj.merges) merges.push_back(a + " " + b);
  nlohmann::json meta = {{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", pre},
                         {"tokenizer.ggml.tokens", tokens}, {"tokenizer.ggml.token_type", types},
                         {"tokenizer.ggml.merges", merges}};
  return meta;
}

/// The byte-level alphabet as ids 0..255 in byte order plus a few merges and added tokens; the
/// same JSON is built by tests/reference/gen_bpe_synthetic.py, which printed the HF ids below.
nlohmann::json synthetic_json(const nlohmann::json& pre_tokenizer, const nlohmann::json& post_processor,
                              const nlohmann::json& normalizer) {
  using nlohmann::json;
  json vocab = json::object();
  std::vector<std::string> byte_tok(256);
  for (int b = 0; b < 256; ++b) {
    byte_tok[static_cast<size_t>(b)] = loopus::unicode::byte_level_encode(std::string(1, static_cast<char>(b)));
    vocab[byte_tok[static_cast<size_t>(b)]] = b;
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"ab", "c"}, {"\xC4\xA0", "a"}, {"\xC4\xA0" "a", "b"}, {"c", "d"}, {"\xC3\x83", "\xC2\xA9"}};
  json jm = json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
    jm.push_back(a + " " + b);
  }
  const auto added = [](int id, const char* content, bool special, bool lstrip, bool rstrip, bool single_word,
                        bool normalized) {
    return json{{"id", id},         {"content", content},         {"special", special},      {"lstrip", lstrip},
                {"rstrip", rstrip}, {"single_word", single_word}, {"normalized", normalized}};
  };
  // The stored ids (300..) are deliberately not HF's: HF re-assigns them (262.., and 233 for "é",
  // which is also the byte-level spelling of byte 0xE9).
  json added_tokens = json::array({added(300, "<s>", true, false, false, false, false),
                                   added(301, "</s>", true, false, false, false, false),
                                   added(302, "<sp>", true, true, true, false, false),
                                   added(303, "[X]", false, false, false, true, false),
                                   added(304, "\xC3\xA9", false, false, false, false, true)});
  return json{{"version", "1.0"},
              {"added_tokens", added_tokens},
              {"normalizer", normalizer},
              {"pre_tokenizer", pre_tokenizer},
              {"post_processor", post_processor},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
              {"model",
               {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"ignore_merges", false},
                {"vocab", vocab}, {"merges", jm}}}};
}

}  // namespace

TEST_CASE("[loopus] bpe: qwen3 goldens match HF ids, decode round-trips except NFC") {
  const BpeTokenizer& tok = qwen3();
  CHECK_EQ(tok.n_vocab(), 151669);
  CHECK_EQ(tok.n_merges(), size_t{151387});
  CHECK_EQ(std::string(tok.kind()), "bpe");
  const auto goldens = read_goldens("tokenizers/qwen3_golden.jsonl");
  REQUIRE_EQ(goldens.size(), size_t{325});
  // HF decode differs from the input only where NFC recomposed it (PROVENANCE.md section 3).
  const std::map<int, std::string> hf_decode = {{158, "caf\xC3\xA9"},
                                                {176, "\xC3\x84"},
                                                {177, "\xC3\xA9\xCC\x82\xCC\x83 stacked combining marks"}};
  int bad_ids = 0, bad_decode = 0;
  for (const auto& g : goldens) {
    const Ids ids = tok.encode(g.text, false);
    if (ids != g.ids) {
      ++bad_ids;
      MESSAGE("qwen3 golden " << g.i << " " << nlohmann::json(g.text).dump());
    }
    const auto it = hf_decode.find(g.i);
    const std::string want = it == hf_decode.end() ? g.text : it->second;
    if (tok.decode(g.ids) != want) {
      ++bad_decode;
      MESSAGE("qwen3 decode " << g.i << " gave " << nlohmann::json(tok.decode(g.ids)).dump());
    }
  }
  CHECK_EQ(bad_ids, 0);
  CHECK_EQ(bad_decode, 0);
}

TEST_CASE("[loopus] bpe: llama3 goldens match HF ids, decode applies clean_up_tokenization_spaces") {
  BpeTokenizer& tok = llama3();
  CHECK_EQ(tok.n_vocab(), 128256);
  CHECK_EQ(tok.n_merges(), size_t{280147});
  const auto goldens = read_goldens("tokenizers/llama3_golden.jsonl");
  REQUIRE_EQ(goldens.size(), size_t{325});
  // tokenizer_config.json sets clean_up_tokenization_spaces: transformers 4.x (and llama.cpp's
  // clean_spaces) then drop the space before ? ! . in exactly these four goldens.
  const std::map<int, std::string> cleaned = {
      {269, "template <typename T> T max(T a, T b) { return a > b? a : b; }"},
      {270, "const x = (a, b) => a?? b;"},
      {274, "if x == 1 and y!= 2 or not z:"},
      {287, "$ ls -la | grep.txt > out.log 2>&1"}};
  REQUIRE(tok.clean_up_spaces());
  int bad_ids = 0, bad_decode = 0, bad_raw_decode = 0;
  for (const auto& g : goldens) {
    if (tok.encode(g.text, false) != g.ids) {
      ++bad_ids;
      MESSAGE("llama3 golden " << g.i << " " << nlohmann::json(g.text).dump());
    }
    const auto it = cleaned.find(g.i);
    if (tok.decode(g.ids) != (it == cleaned.end() ? g.text : it->second)) ++bad_decode;
  }
  // Without the clean-up (HF `tokenizers`, transformers >= 5) every golden round-trips.
  tok.set_clean_up_spaces(false);
  for (const auto& g : goldens)
    if (tok.decode(g.ids) != g.text) ++bad_raw_decode;
  tok.set_clean_up_spaces(true);
  CHECK_EQ(bad_ids, 0);
  CHECK_EQ(bad_decode, 0);
  CHECK_EQ(bad_raw_decode, 0);
}

TEST_CASE("[loopus] bpe: llama.cpp test-tokenizer-0 vectors") {
  SUBCASE("gpt-2 GGUF vocabulary (tokenizer.ggml.model gpt2, pre gpt-2)") {
    const std::string path = loopus::test::data_file(std::string(kVocabDir) + "ggml-vocab-gpt-2.gguf");
    const BpeTokenizer tok = BpeTokenizer::from_gguf_meta(loopus::io::open_gguf(path).meta, path);
    CHECK_EQ(tok.n_vocab(), 50257);
    CHECK_EQ(tok.n_merges(), size_t{50000});
    CHECK_EQ(tok.bos_id(), 50256);
    CHECK_EQ(tok.eos_id(), 50256);
    CHECK_FALSE(tok.add_bos());
    const auto cases = read_vocab_test(std::string(kVocabDir) + "ggml-vocab-gpt-2.gguf");
    CHECK_EQ(cases.size(), size_t{46});
    CHECK_EQ(count_mismatches(tok, cases), 0);
    // <|endoftext|> is a control token: one id when parsed, text otherwise.
    CHECK_EQ(tok.encode("a<|endoftext|>", false, true), (Ids{64, 50256}));
    CHECK_NE(tok.encode("a<|endoftext|>", false, false).size(), size_t{2});
    CHECK_EQ(tok.decode({15496, 11, 995, 0}), "Hello, world!");
  }
  SUBCASE("qwen2 vectors with the Qwen3 tokenizer.json") {
    const auto cases = read_vocab_test(std::string(kVocabDir) + "ggml-vocab-qwen2.gguf");
    CHECK_EQ(cases.size(), size_t{46});
    CHECK_EQ(count_mismatches(qwen3(), cases), 0);
  }
  SUBCASE("llama-bpe vectors with the Llama 3 tokenizer.json") {
    const auto cases = read_vocab_test(std::string(kVocabDir) + "ggml-vocab-llama-bpe.gguf");
    CHECK_EQ(cases.size(), size_t{46});
    CHECK_EQ(count_mismatches(llama3(), cases), 0);
  }
}

TEST_CASE("[loopus] bpe: GGUF gpt2 metadata path with llama-bpe, qwen2, smollm and default pre-tokenizers") {
  {
    nlohmann::json meta = gguf_meta_from_tokenizer_json("tokenizers/llama3/tokenizer.json", "llama-bpe");
    meta["tokenizer.ggml.bos_token_id"] = 128000;
    meta["tokenizer.ggml.eos_token_id"] = 128001;
    const BpeTokenizer tok = BpeTokenizer::from_gguf_meta(meta, "llama3.gguf");
    CHECK_EQ(tok.n_vocab(), 128256);
    CHECK(tok.add_bos());  // llama.cpp's default for llama-bpe when add_bos_token is absent
    CHECK_EQ(tok.encode("Hi", true), (Ids{128000, 13347}));
    CHECK_EQ(count_mismatches(tok, read_vocab_test(std::string(kVocabDir) + "ggml-vocab-llama-bpe.gguf")), 0);
    CHECK_EQ(tok.encode("<|eot_id|>", false), Ids{128009});
    CHECK_EQ(tok.decode({128000, 13347, 128009}, true), "Hi");
    meta["tokenizer.ggml.add_bos_token"] = false;
    CHECK_FALSE(BpeTokenizer::from_gguf_meta(meta, "llama3.gguf").add_bos());
  }
  {
    nlohmann::json meta = gguf_meta_from_tokenizer_json("tokenizers/qwen3/tokenizer.json", "qwen2");
    const BpeTokenizer tok = BpeTokenizer::from_gguf_meta(meta, "qwen.gguf");
    CHECK_FALSE(tok.add_bos());
    CHECK_EQ(count_mismatches(tok, read_vocab_test(std::string(kVocabDir) + "ggml-vocab-qwen2.gguf")), 0);
    int bad = 0;
    for (const auto& g : read_goldens("tokenizers/qwen3_golden.jsonl"))
      if (tok.encode(g.text, false) != g.ids) ++bad;
    CHECK_EQ(bad, 0);  // including the NFC cases: the qwen2 family normalizes like its tokenizer.json
    meta["tokenizer.ggml.pre"] = "smollm";
    CHECK_EQ(BpeTokenizer::from_gguf_meta(meta, "s.gguf").pre_tokenize("ab 12345"),
             (std::vector<std::string>{"ab", " ", "1", "2", "3", "4", "5"}));
    meta["tokenizer.ggml.pre"] = "default";
    CHECK_EQ(BpeTokenizer::from_gguf_meta(meta, "d.gguf").pre_tokenize("ab 12345!?"),
             (std::vector<std::string>{"ab", " ", "123", "45", "!?"}));
  }
}

TEST_CASE("[loopus] bpe: special and added tokens") {
  const BpeTokenizer& q = qwen3();
  const int32_t im_start = q.token_to_id("<|im_start|>"), im_end = q.token_to_id("<|im_end|>");
  CHECK_EQ(im_start, 151644);
  CHECK_EQ(im_end, 151645);
  CHECK(q.is_special(im_start));
  CHECK_FALSE(q.is_special(q.token_to_id("<think>")));  // added but not special
  const std::string chat = "<|im_start|>user\nHello<|im_end|>\n";
  const Ids ids = q.encode(chat, false, true);
  REQUIRE_GE(ids.size(), size_t{4});
  CHECK_EQ(ids.front(), im_start);
  CHECK_EQ(std::count(ids.begin(), ids.end(), im_end), 1);
  // Concatenation: specials cut the text into independently encoded pieces.
  Ids expect{im_start};
  for (int32_t x : q.encode("user\nHello", false)) expect.push_back(x);
  expect.push_back(im_end);
  for (int32_t x : q.encode("\n", false)) expect.push_back(x);
  CHECK_EQ(ids, expect);
  // parse_special=false: special tokens are plain text, non-special added tokens still match.
  const Ids plain = q.encode(chat, false, false);
  CHECK_EQ(std::count(plain.begin(), plain.end(), im_start), 0);
  CHECK_EQ(q.decode(plain), chat);
  const Ids think = q.encode("<think>x</think>", false, false);
  CHECK_EQ(think.front(), q.token_to_id("<think>"));
  CHECK_EQ(think.back(), q.token_to_id("</think>"));
  // decode renders specials unless asked to skip them.
  CHECK_EQ(q.decode(ids), chat);
  CHECK_EQ(q.decode(ids, /*skip_special=*/true), "user\nHello\n");
  CHECK_EQ(q.decode(think, true), "<think>x</think>");

  const BpeTokenizer& l = llama3();
  CHECK_EQ(l.encode("<|begin_of_text|>Hi<|eot_id|>", false), (Ids{128000, 13347, 128009}));
}

TEST_CASE("[loopus] bpe: add_special, bos and eos from the post-processor and tokenizer_config.json") {
  // Qwen3: no BOS at all, eos <|im_end|>. Llama 3 here: ByteLevel post-processor only, so
  // add_special_tokens=True adds nothing (PROVENANCE.md), bos/eos from tokenizer_config.json.
  CHECK_EQ(qwen3().bos_id(), -1);
  CHECK_EQ(qwen3().eos_id(), 151645);
  CHECK_FALSE(qwen3().add_bos());
  CHECK_EQ(qwen3().encode("Hello world", true), (Ids{9707, 1879}));
  CHECK_EQ(llama3().bos_id(), 128000);
  CHECK_EQ(llama3().eos_id(), 128001);
  CHECK_FALSE(llama3().add_bos());
  CHECK_EQ(llama3().encode("Hello world", true), llama3().encode("Hello world", false));

  using nlohmann::json;
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const json tmpl = {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                             {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
                     {"special_tokens",
                      {{"<s>", {{"id", "<s>"}, {"ids", {262}}, {"tokens", {"<s>"}}}},
                       {"</s>", {{"id", "</s>"}, {"ids", {263}}, {"tokens", {"</s>"}}}}}}};
  const json tj = synthetic_json(bl, tmpl, nullptr);
  const BpeTokenizer a = BpeTokenizer::from_json(tj, json{{"bos_token", "<s>"}, {"eos_token", "</s>"}}, "synthetic");
  CHECK(a.add_bos());
  CHECK_EQ(a.special_prefix(), Ids{262});
  CHECK_EQ(a.special_suffix(), Ids{263});
  CHECK_EQ(a.encode("ab", true), (Ids{262, 256, 263}));
  // add_bos_token / add_eos_token in tokenizer_config.json override the template (Llama fast tokenizer).
  const BpeTokenizer b = BpeTokenizer::from_json(
      tj, json{{"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"}, {"add_bos_token", false}, {"add_eos_token", false}},
      "synthetic");
  CHECK_FALSE(b.add_bos());
  CHECK_EQ(b.encode("ab", true), Ids{256});
  const BpeTokenizer c = BpeTokenizer::from_json(synthetic_json(bl, nullptr, nullptr),
                                                 json{{"bos_token", "<s>"}, {"add_bos_token", true}}, "synthetic");
  CHECK(c.add_bos());
  CHECK_EQ(c.encode("ab", true), (Ids{262, 256}));

  // A template whose special-token ids are not integers is a FormatError naming the token (found by fuzzing:
  // it used to escape as nlohmann's type_error).
  for (const json& bad_id : {json("262"), json(-1), json(4294967296LL), json(2.5)}) {
    json bad = tmpl;
    bad["special_tokens"]["<s>"]["ids"] = json::array({bad_id});
    CAPTURE(bad_id.dump());
    try {
      (void)BpeTokenizer::from_json(synthetic_json(bl, bad, nullptr), nullptr, "synthetic");
      FAIL("accepted a non-integer special-token id");
    } catch (const loopus::FormatError& e) {
      CHECK(std::string(e.what()).find("'<s>'") != std::string::npos);
    }
  }
}

TEST_CASE("[loopus] bpe: synthetic tokenizer.json matches HF (added-token flags, Split behaviours, NFC)") {
  using nlohmann::json;
  struct Case {
    const char* config;
    const char* text;
    bool add_special, parse_special;
    Ids ids;
  };
  // Produced by tests/reference/gen_bpe_synthetic.py with HF tokenizers 0.23.3 (paste its output).
  const std::vector<Case> cases = {
    {"template_nfc", "abc ab  cd", false, true, {32, 257, 32, 256, 32, 32, 260}},
    {"template_nfc", "abc ab  cd", true, true, {262, 32, 257, 32, 256, 32, 32, 260, 263}},
    {"template_nfc", "ab  <sp>  cd", false, true, {32, 256, 264, 32, 260}},
    {"template_nfc", "ab  <sp>  cd", true, true, {262, 32, 256, 264, 32, 260, 263}},
    {"template_nfc", "a[X]b a [X] b", false, true, {258, 91, 88, 93, 98, 258, 32, 265, 32, 98}},
    {"template_nfc", "a[X]b a [X] b", true, true, {262, 258, 91, 88, 93, 98, 258, 32, 265, 32, 98, 263}},
    {"template_nfc", "cafe\xCC\x81 caf\xC3\xA9", false, true, {32, 99, 97, 102, 233, 32, 99, 97, 102, 233}},
    {"template_nfc", "cafe\xCC\x81 caf\xC3\xA9", true, true, {262, 32, 99, 97, 102, 233, 32, 99, 97, 102, 233, 263}},
    {"template_nfc", "<s>abc</s>", false, true, {262, 32, 257, 263}},
    {"template_nfc", "<s>abc</s>", true, true, {262, 262, 32, 257, 263, 263}},
    {"template_nfc", " abab", false, true, {32, 256, 256}},
    {"template_nfc", " abab", true, true, {262, 32, 256, 256, 263}},
    {"template_nfc", "x  ", false, true, {32, 120, 32, 32}},
    {"template_nfc", "x  ", true, true, {262, 32, 120, 32, 32, 263}},
    {"template_nfc", "", false, true, {}},
    {"template_nfc", "", true, true, {262, 263}},
    {"template_nfc", "\xC3\xA9[X] _[X] -[X]- \xD9\xA3[X]", false, true, {233, 32, 91, 88, 93, 32, 95, 91, 88, 93, 32, 45, 265, 32, 45, 32, 217, 163, 91, 88, 93}},
    {"template_nfc", "\xC3\xA9[X] _[X] -[X]- \xD9\xA3[X]", false, false, {233, 32, 91, 88, 93, 32, 95, 91, 88, 93, 32, 45, 265, 32, 45, 32, 217, 163, 91, 88, 93}},
    {"template_nfc", "a\xE3\x80\x80<sp>\xE2\x80\x83" "b", false, true, {258, 264, 32, 98}},
    {"template_nfc", "a\xE3\x80\x80<sp>\xE2\x80\x83" "b", false, false, {258, 227, 128, 128, 60, 115, 112, 62, 226, 128, 131, 98}},
    {"template_nfc", "<s><sp></s>", false, true, {262, 264, 263}},
    {"template_nfc", "<s><sp></s>", false, false, {32, 60, 115, 62, 60, 115, 112, 62, 60, 47, 115, 62}},
    {"template_nfc", "ab<s", false, true, {32, 256, 60, 115}},
    {"template_nfc", "ab<s", false, false, {32, 256, 60, 115}},
    {"removed", "abc ab  cd", false, true, {257, 256, 260}},
    {"removed", "ab  <sp>  cd", false, true, {256, 264, 260}},
    {"removed", "a[X]b a [X] b", false, true, {97, 91, 88, 93, 98, 97, 265, 98}},
    {"removed", "cafe\xCC\x81 caf\xC3\xA9", false, true, {99, 97, 102, 101, 204, 129, 99, 97, 102, 233}},
    {"removed", "<s>abc</s>", false, true, {262, 257, 263}},
    {"removed", " abab", false, true, {256, 256}},
    {"removed", "x  ", false, true, {120}},
    {"removed", "", false, true, {}},
    {"isolated", "abc ab  cd", false, true, {257, 32, 256, 32, 32, 260}},
    {"isolated", "ab  <sp>  cd", false, true, {256, 264, 260}},
    {"isolated", "a[X]b a [X] b", false, true, {97, 91, 88, 93, 98, 32, 97, 32, 265, 32, 98}},
    {"isolated", "cafe\xCC\x81 caf\xC3\xA9", false, true, {99, 97, 102, 101, 204, 129, 32, 99, 97, 102, 233}},
    {"isolated", "<s>abc</s>", false, true, {262, 257, 263}},
    {"isolated", " abab", false, true, {32, 256, 256}},
    {"isolated", "x  ", false, true, {120, 32, 32}},
    {"isolated", "", false, true, {}},
    {"merged_prev", "abc ab  cd", false, true, {257, 32, 256, 32, 32, 260}},
    {"merged_prev", "ab  <sp>  cd", false, true, {256, 264, 260}},
    {"merged_prev", "a[X]b a [X] b", false, true, {97, 91, 88, 93, 98, 32, 97, 32, 265, 32, 98}},
    {"merged_prev", "cafe\xCC\x81 caf\xC3\xA9", false, true, {99, 97, 102, 101, 204, 129, 32, 99, 97, 102, 233}},
    {"merged_prev", "<s>abc</s>", false, true, {262, 257, 263}},
    {"merged_prev", " abab", false, true, {32, 256, 256}},
    {"merged_prev", "x  ", false, true, {120, 32, 32}},
    {"merged_prev", "", false, true, {}},
    {"merged_next", "abc ab  cd", false, true, {257, 32, 256, 32, 32, 260}},
    {"merged_next", "ab  <sp>  cd", false, true, {256, 264, 260}},
    {"merged_next", "a[X]b a [X] b", false, true, {97, 91, 88, 93, 98, 258, 32, 265, 32, 98}},
    {"merged_next", "cafe\xCC\x81 caf\xC3\xA9", false, true, {99, 97, 102, 101, 204, 129, 32, 99, 97, 102, 233}},
    {"merged_next", "<s>abc</s>", false, true, {262, 257, 263}},
    {"merged_next", " abab", false, true, {32, 256, 256}},
    {"merged_next", "x  ", false, true, {120, 32, 32}},
    {"merged_next", "", false, true, {}},
    {"contiguous", "abc ab  cd", false, true, {257, 32, 256, 32, 32, 260}},
    {"contiguous", "ab  <sp>  cd", false, true, {256, 264, 260}},
    {"contiguous", "a[X]b a [X] b", false, true, {97, 91, 88, 93, 98, 32, 97, 32, 265, 32, 98}},
    {"contiguous", "cafe\xCC\x81 caf\xC3\xA9", false, true, {99, 97, 102, 101, 204, 129, 32, 99, 97, 102, 233}},
    {"contiguous", "<s>abc</s>", false, true, {262, 257, 263}},
    {"contiguous", " abab", false, true, {32, 256, 256}},
    {"contiguous", "x  ", false, true, {120, 32, 32}},
    {"contiguous", "", false, true, {}},
    {"removed_invert", "abc ab  cd", false, true, {32, 32, 32}},
    {"removed_invert", "ab  <sp>  cd", false, true, {264}},
    {"removed_invert", "a[X]b a [X] b", false, true, {32, 32, 265, 32}},
    {"removed_invert", "cafe\xCC\x81 caf\xC3\xA9", false, true, {32, 233}},
    {"removed_invert", "<s>abc</s>", false, true, {262, 263}},
    {"removed_invert", " abab", false, true, {32}},
    {"removed_invert", "x  ", false, true, {32, 32}},
    {"removed_invert", "", false, true, {}},
  };
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  const auto split = [&](const char* behavior, bool invert) {
    return json{{"type", "Sequence"},
                {"pretokenizers",
                 json::array({{{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", behavior}, {"invert", invert}},
                              bl})}};
  };
  const json tmpl = {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                             {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
                     {"special_tokens",
                      {{"<s>", {{"id", "<s>"}, {"ids", {262}}, {"tokens", {"<s>"}}}},
                       {"</s>", {{"id", "</s>"}, {"ids", {263}}, {"tokens", {"</s>"}}}}}}};
  const json prefix_bl = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "ByteLevel"}, {"add_prefix_space", true},
                                                          {"trim_offsets", false}, {"use_regex", true}}})}};
  std::map<std::string, BpeTokenizer> toks;
  toks.emplace("template_nfc", BpeTokenizer::from_json(synthetic_json(prefix_bl, tmpl, {{"type", "NFC"}}), nullptr, "t"));
  toks.emplace("removed", BpeTokenizer::from_json(synthetic_json(split("Removed", false), nullptr, nullptr), nullptr, "t"));
  toks.emplace("isolated", BpeTokenizer::from_json(synthetic_json(split("Isolated", false), nullptr, nullptr), nullptr, "t"));
  toks.emplace("merged_prev",
               BpeTokenizer::from_json(synthetic_json(split("MergedWithPrevious", false), nullptr, nullptr), nullptr, "t"));
  toks.emplace("merged_next",
               BpeTokenizer::from_json(synthetic_json(split("MergedWithNext", false), nullptr, nullptr), nullptr, "t"));
  toks.emplace("contiguous", BpeTokenizer::from_json(synthetic_json(split("Contiguous", false), nullptr, nullptr), nullptr, "t"));
  toks.emplace("removed_invert", BpeTokenizer::from_json(synthetic_json(split("Removed", true), nullptr, nullptr), nullptr, "t"));
  for (const auto& c : cases) {
    CAPTURE(c.config);
    CAPTURE(nlohmann::json(c.text).dump());
    CAPTURE(c.parse_special);
    CHECK_EQ(toks.at(c.config).encode(c.text, c.add_special, c.parse_special), c.ids);
  }
  // HF re-assigns the stored added-token ids: "é" takes the vocabulary id of its own spelling.
  const BpeTokenizer& t = toks.at("template_nfc");
  CHECK_EQ(t.token_to_id("<sp>"), 264);
  CHECK_EQ(t.token_to_id("\xC3\xA9"), 233);
  CHECK_EQ(t.n_vocab(), 266);
}

TEST_CASE("[loopus] bpe: invalid UTF-8 input is repaired as U+FFFD, never crashes") {
  const BpeTokenizer& q = qwen3();
  const std::string bad = std::string("ab\xFF" "cd\xE2\x82") + "\xF0\x9F\xA6" + "x\xC0\xAF";
  const std::string fixed = loopus::unicode::to_valid_utf8(bad);
  // Maximal subparts: FF, E2 82, F0 9F A6, C0, AF each become one U+FFFD.
  CHECK_EQ(fixed, "ab\xEF\xBF\xBD" "cd\xEF\xBF\xBD\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK_EQ(q.encode(bad, false), q.encode(fixed, false));
  CHECK_EQ(q.decode(q.encode(bad, false)), fixed);
  // A lone partial token decodes to U+FFFD; token_to_piece keeps the raw bytes.
  const Ids one = q.encode("\xF0\x9F\xA6\x99", false);  // U+1F999 is one token in Qwen3
  REQUIRE_EQ(one.size(), size_t{1});
  const Ids emoji = q.encode("\xE2\x9D\xA4\xEF\xB8\x8F\xF0\x9F\x8E\x89", false);  // ❤️🎉
  std::string joined;
  for (int32_t id : emoji) joined += q.token_to_piece(id);
  CHECK_EQ(joined, "\xE2\x9D\xA4\xEF\xB8\x8F\xF0\x9F\x8E\x89");
  CHECK_THROWS_AS(q.token_to_piece(-1), loopus::Error);
  CHECK_THROWS_AS(q.token_to_piece(q.n_vocab()), loopus::Error);
  CHECK_EQ(q.decode({-5, 9707, 1 << 30}), "Hello");  // out-of-range ids are dropped, as HF does
}

TEST_CASE("[loopus] bpe: word cache on/off and concurrent encode give identical ids") {
  BpeTokenizer& q = qwen3();
  std::string text = loopus::test::read_text(loopus::test::data_file("text/public_domain/sherlock_holmes_adventures_pg1661.txt"));
  text.resize(200000);
  text = loopus::unicode::to_valid_utf8(text);  // the cut may split a character
  q.set_cache_capacity(0);
  const Ids ref = q.encode(text, false);
  CHECK_EQ(q.cache_size(), size_t{0});
  q.set_cache_capacity(BpeTokenizer::kDefaultCacheCapacity);
  CHECK_EQ(q.encode(text, false), ref);
  CHECK_GT(q.cache_size(), size_t{100});
  CHECK_EQ(q.encode(text, false), ref);  // warm cache
  q.set_cache_capacity(64);              // tiny: the cache keeps emptying itself
  CHECK_EQ(q.encode(text, false), ref);
  q.set_cache_capacity(BpeTokenizer::kDefaultCacheCapacity);
  std::atomic<int> bad{0};
  std::vector<std::thread> th;
  for (int k = 0; k < 2; ++k)
    th.emplace_back([&] {
      for (int r = 0; r < 2; ++r)
        if (q.encode(text, false) != ref) ++bad;
    });
  for (auto& t : th) t.join();
  CHECK_EQ(bad.load(), 0);
  CHECK_EQ(q.decode(ref), text);
}

TEST_CASE("[loopus] bpe: pre_tokenize shows the pieces BPE sees") {
  const auto p = qwen3().pre_tokenize("Hello world's 123 <|im_end|>");
  CHECK_EQ(p, (std::vector<std::string>{"Hello", " world", "'s", " ", "1", "2", "3", " ", "<|im_end|>"}));
  const auto l = llama3().pre_tokenize("12345 x");
  CHECK_EQ(l, (std::vector<std::string>{"123", "45", " x"}));
}

TEST_CASE("[loopus] bpe: loading errors name the file and the problem") {
  using nlohmann::json;
  const auto msg = [](auto&& f) {
    try {
      f();
    } catch (const loopus::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_NE(msg([] { BpeTokenizer::from_json_file("/nonexistent/tokenizer.json"); }).find("/nonexistent/tokenizer.json"),
           std::string::npos);
  const auto dir = loopus::test::temp_dir("bpe_errors");
  {
    std::ofstream(dir / "tokenizer.json") << "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,";
  }
  CHECK_NE(msg([&] { BpeTokenizer::from_json_file((dir / "tokenizer.json").string()); }).find("not valid JSON"),
           std::string::npos);
  const json bl = {{"type", "ByteLevel"}};
  json unigram = synthetic_json(bl, nullptr, nullptr);
  unigram["model"]["type"] = "Unigram";
  CHECK_NE(msg([&] { BpeTokenizer::from_json(unigram, nullptr, "u.json"); }).find("'Unigram' is not BPE"), std::string::npos);
  json bad_merge = synthetic_json(bl, nullptr, nullptr);
  bad_merge["model"]["merges"].push_back("zz qq");
  CHECK_NE(msg([&] { BpeTokenizer::from_json(bad_merge, nullptr, "m.json"); }).find("missing from the vocabulary"),
           std::string::npos);
  json bad_pre = synthetic_json({{"type", "Metaspace"}}, nullptr, nullptr);
  CHECK_NE(msg([&] { BpeTokenizer::from_json(bad_pre, nullptr, "p.json"); }).find("'Metaspace'"), std::string::npos);
  json bad_norm = synthetic_json(bl, nullptr, {{"type", "NFKC"}});
  CHECK_NE(msg([&] { BpeTokenizer::from_json(bad_norm, nullptr, "n.json"); }).find("'NFKC'"), std::string::npos);
  json bad_regex = synthetic_json({{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}}, nullptr, nullptr);
  CHECK_NE(msg([&] { BpeTokenizer::from_json(bad_regex, nullptr, "r.json"); }).find("cannot compile regex"), std::string::npos);
  CHECK_NE(msg([] { BpeTokenizer::from_gguf_meta(json{{"tokenizer.ggml.model", "llama"}}, "x.gguf"); }).find("expected 'gpt2'"),
           std::string::npos);
  CHECK_NE(msg([] {
             BpeTokenizer::from_gguf_meta(json{{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "martian"}}, "x.gguf");
           }).find("unsupported tokenizer.ggml.pre 'martian'"),
           std::string::npos);
  CHECK_NE(msg([] { BpeTokenizer::from_gguf_meta(json{{"tokenizer.ggml.model", "gpt2"}}, "x.gguf"); }).find("tokenizer.ggml.tokens"),
           std::string::npos);
}

TEST_CASE("[loopus] unicode: NFC, UTF-8 and the GPT-2 byte alphabet") {
  using namespace loopus::unicode;
  CHECK_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                         // e + acute -> é
  CHECK_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul L V T -> 각
  CHECK_EQ(nfc("a\xCC\xA3\xCC\x87"), "\xE1\xBA\xA1\xCC\x87");    // a + dot below + dot above -> ạ̇
  CHECK_EQ(nfc("a\xCC\x87\xCC\xA3"), "\xE1\xBA\xA1\xCC\x87");    // reordered first (ccc 220 < 230)
  CHECK_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                       // Angstrom sign -> Å (singleton)
  CHECK_EQ(nfc("\xCD\x84"), "\xCC\x88\xCC\x81");                   // U+0344 never recomposes
  CHECK_EQ(nfc("plain ascii"), "plain ascii");
  CHECK(is_nfc_quick("caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD"));
  CHECK_FALSE(is_nfc_quick("cafe\xCC\x81"));
  CHECK_EQ(combining_class(0x301), 230);
  CHECK_EQ(combining_class('a'), 0);
  CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));  // surrogate
  CHECK_FALSE(is_valid_utf8("\xC1\xBF"));      // overlong
  CHECK_EQ(byte_level_encode(" \n"), "\xC4\xA0\xC4\x8A");  // "ĠĊ"
  for (int b = 0; b < 256; ++b) CHECK_EQ(code_point_to_byte(byte_to_code_point()[static_cast<size_t>(b)]), b);
  CHECK_EQ(byte_level_decode("a b"), "a b");  // ' ' is outside the alphabet: raw bytes
}
