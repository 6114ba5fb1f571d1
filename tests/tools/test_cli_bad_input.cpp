// The bad-input table (issue 16): every broken file, prompt or option makes the loopus CLI exit with its
// documented code (docs/security.md) and a message naming the file or option; never a signal or a hang.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "cli_util.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using loopus::test::CliRun;
using loopus::test::run_cli_timed;

namespace {

// Exit codes of the CLI (tools/loopus/main.cpp, loopus::ErrorKind).
constexpr int kUsage = 2, kIo = 3, kFormat = 4, kUnsupported = 5, kLimit = 6;

std::string slurp(const fs::path& p) { return loopus::test::read_text(p); }
void write(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}
template <class T>
void poke(std::string& s, uint64_t at, T v) {
  REQUIRE(at + sizeof(T) <= s.size());
  std::memcpy(s.data() + at, &v, sizeof(T));
}
template <class T>
T peek(const std::string& s, uint64_t at) {
  REQUIRE(at + sizeof(T) <= s.size());
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

/// Where the sections of a GGUF file start, found by a walker written independently of the loader.
struct GgufLayout {
  struct Info {
    std::string name;
    uint64_t start = 0, n_dims_at = 0, dims_at = 0, type_at = 0, offset_at = 0;
    uint32_t n_dims = 0, type = 0;
    uint64_t offset = 0;
  };
  std::vector<uint64_t> kv_starts;
  uint64_t infos_start = 0, infos_end = 0, data_start = 0;
  std::vector<Info> infos;
  const Info& info(const std::string& name) const {
    for (const auto& i : infos)
      if (i.name == name) return i;
    FAIL("no tensor " << name);
    return infos.front();
  }
};

GgufLayout walk_gguf(const std::string& s) {
  GgufLayout L;
  uint64_t p = 8;
  const uint64_t n_tensors = peek<uint64_t>(s, p), n_kv = peek<uint64_t>(s, p + 8);
  p += 16;
  auto str = [&] {
    const uint64_t n = peek<uint64_t>(s, p);
    std::string v = s.substr(size_t(p + 8), size_t(n));
    p += 8 + n;
    return v;
  };
  const int scalar_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  uint64_t alignment = 32;
  std::function<void(uint32_t)> skip = [&](uint32_t t) {
    if (t == 8) {
      str();
    } else if (t == 9) {
      const uint32_t et = peek<uint32_t>(s, p);
      const uint64_t n = peek<uint64_t>(s, p + 4);
      p += 12;
      for (uint64_t i = 0; i < n; ++i) skip(et);
    } else {
      REQUIRE(t < 13);
      p += uint64_t(scalar_size[t]);
    }
  };
  for (uint64_t k = 0; k < n_kv; ++k) {
    L.kv_starts.push_back(p);
    const std::string key = str();
    const uint32_t t = peek<uint32_t>(s, p);
    p += 4;
    if (key == "general.alignment") alignment = peek<uint32_t>(s, p);
    skip(t);
  }
  L.infos_start = p;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufLayout::Info in;
    in.start = p;
    in.name = str();
    in.n_dims_at = p;
    in.n_dims = peek<uint32_t>(s, p);
    in.dims_at = p + 4;
    p += 4 + 8 * uint64_t(in.n_dims);
    in.type_at = p;
    in.type = peek<uint32_t>(s, p);
    in.offset_at = p + 4;
    in.offset = peek<uint64_t>(s, p + 4);
    p += 12;
    L.infos.push_back(in);
  }
  L.infos_end = p;
  L.data_start = (p + alignment - 1) / alignment * alignment;
  return L;
}

struct Fixture {
  fs::path dir;
  std::string model = loopus::test::data_file("models/stories260K/stories260K.gguf");
  fs::path text;
  explicit Fixture(const std::string& name) : dir(loopus::test::temp_dir("cli_bad_input_" + name)) {
    text = dir / "text.txt";
    write(text, "Once upon a time there was a little cat.\n\nThe dog ran home to his mother.\n");
  }

  CliRun run(const std::vector<std::string>& args) { return run_cli_timed(args, dir, 60); }

  /// Every subcommand that reads a model, on `file`: each must exit with `code` naming `file`
  /// (tokenize reads only the vocabulary, so it may also succeed when the damage lies elsewhere).
  void all_commands_fail(const fs::path& file, int code, const std::string& label) {
    const std::string f = file.string();
    const std::vector<std::pair<std::string, std::vector<std::string>>> cmds = {
        {"info", {"info", "-m", f}},
        {"generate", {"generate", "-m", f, "-p", "Once", "-n", "4"}},
        {"tokenize", {"tokenize", "-m", f, "-p", "Once upon"}},
        {"quantize", {"quantize", "-m", f, "--type", "Q8_0", "--out", (dir / "quantize_out.gguf").string()}},
        {"perplexity", {"perplexity", "-m", f, "-f", text.string(), "--window", "16"}},
        {"adapt",
         {"adapt", "-m", f, "--data", text.string(), "--out", (dir / "adapt_out").string(), "--steps", "1", "--seq-len",
          "8", "--batch", "1", "--encoder-layers", "0..0", "--decoder-layers", "4..4", "-q"}},
    };
    for (const auto& [name, args] : cmds) {
      CAPTURE(label);
      CAPTURE(name);
      const CliRun r = run(args);
      CAPTURE(r.err);
      REQUIRE_FALSE(r.timed_out);
      REQUIRE_MESSAGE(r.exited, "killed by signal " << r.signal);
      if (name == "tokenize" && r.code == 0) continue;
      CHECK(r.code == code);
      CHECK(r.err.find(file.filename().string()) != std::string::npos);
      CHECK(r.err.rfind("error: ", 0) == 0);
    }
  }
};

}  // namespace

TEST_CASE("CLI bad input: a GGUF truncated at every section boundary fails cleanly in every subcommand") {
  Fixture fx("truncated");
  const std::string good = slurp(fx.model);
  const GgufLayout L = walk_gguf(good);
  REQUIRE(L.infos.size() > 3);
  REQUIRE(L.kv_starts.size() > 3);
  const std::vector<std::pair<std::string, uint64_t>> cuts = {
      {"empty", 0},
      {"inside the magic", 2},
      {"after the magic", 4},
      {"after the version", 8},
      {"inside the tensor count", 12},
      {"after the tensor count", 16},
      {"after the key/value count", 24},
      {"after the first key/value pair", L.kv_starts[1]},
      {"inside a key", L.kv_starts[2] + 10},
      {"at the last key/value pair", L.kv_starts.back()},
      {"at the tensor table", L.infos_start},
      {"inside a tensor's name", L.infos[1].start + 9},
      {"at a tensor's dims", L.infos[2].dims_at},
      {"at a tensor's offset", L.infos[2].offset_at},
      {"at the end of the tensor table", L.infos_end},
      {"at the data section", L.data_start},
      {"inside a tensor's data", L.data_start + L.infos[1].offset + 3},
      {"one byte short", good.size() - 1},
  };
  for (const auto& [what, at] : cuts) {
    REQUIRE(at < good.size());
    const fs::path f = fx.dir / "cut.gguf";
    write(f, good.substr(0, size_t(at)));
    fx.all_commands_fail(f, kFormat, "truncated " + what + " (" + std::to_string(at) + " bytes)");
  }
}

TEST_CASE("CLI bad input: lying GGUF headers, tensor tables and weights") {
  Fixture fx("lying");
  const std::string good = slurp(fx.model);
  const GgufLayout L = walk_gguf(good);
  const auto& t1 = L.infos[1];
  const auto& t2 = L.infos[2];
  struct Case {
    std::string what;
    std::function<void(std::string&)> edit;
    int code;
  };
  const std::vector<Case> cases = {
      {"wrong magic", [](std::string& s) { s.replace(0, 4, "GGUX"); }, kFormat},
      {"GGUF version 1", [](std::string& s) { poke<uint32_t>(s, 4, 1); }, kUnsupported},
      {"GGUF version 7", [](std::string& s) { poke<uint32_t>(s, 4, 7); }, kUnsupported},
      {"2^62 tensors", [](std::string& s) { poke<uint64_t>(s, 8, uint64_t(1) << 62); }, kFormat},
      {"a negative (all-ones) key/value count", [](std::string& s) { poke<uint64_t>(s, 16, ~uint64_t(0)); }, kFormat},
      {"a key 2^60 bytes long", [&](std::string& s) { poke<uint64_t>(s, L.kv_starts[1], uint64_t(1) << 60); }, kFormat},
      {"a tensor with 9 dims", [&](std::string& s) { poke<uint32_t>(s, t1.n_dims_at, 9); }, kFormat},
      {"a dim of 2^40", [&](std::string& s) { poke<uint64_t>(s, t1.dims_at, uint64_t(1) << 40); }, kFormat},
      {"a negative (all-ones) dim", [&](std::string& s) { poke<uint64_t>(s, t1.dims_at, ~uint64_t(0)); }, kFormat},
      {"a zero dim", [&](std::string& s) { poke<uint64_t>(s, t2.dims_at, 0); }, kFormat},
      {"an unknown ggml type", [&](std::string& s) { poke<uint32_t>(s, t1.type_at, 99); }, kUnsupported},
      {"a tensor past EOF", [&](std::string& s) { poke<uint64_t>(s, t1.offset_at, uint64_t(s.size())); }, kFormat},
      {"two tensors overlapping", [&](std::string& s) { poke<uint64_t>(s, t2.offset_at, t1.offset); }, kFormat},
      {"a matrix narrower than the model's width",
       [&](std::string& s) {
         const auto& q = L.info("blk.0.attn_q.weight");
         poke<uint64_t>(s, q.dims_at + 8, peek<uint64_t>(s, q.dims_at + 8) / 2);
       },
       kFormat},
  };
  for (const auto& c : cases) {
    std::string bad = good;
    c.edit(bad);
    const fs::path f = fx.dir / "bad.gguf";
    write(f, bad);
    fx.all_commands_fail(f, c.code, c.what);
  }

  SUBCASE("NaN and Inf weights stop generation and perplexity with a format error") {
    for (const float v : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      std::string bad = good;
      const auto& norm = L.info("output_norm.weight");
      REQUIRE(norm.type == 0);  // f32
      poke<float>(bad, L.data_start + norm.offset + 4, v);
      const fs::path f = fx.dir / "nan.gguf";
      write(f, bad);
      for (const auto& args :
           std::vector<std::vector<std::string>>{{"generate", "-m", f.string(), "-p", "Once", "-n", "4"},
                                                 {"perplexity", "-m", f.string(), "-f", fx.text.string(), "--window",
                                                  "16"}}) {
        const CliRun r = fx.run(args);
        CAPTURE(args[0]);
        CAPTURE(r.err);
        REQUIRE(r.exited);
        CHECK(r.code == kFormat);
        CHECK(r.err.find("not finite") + r.err.find("non-finite") != 2 * std::string::npos);
      }
    }
  }
}

TEST_CASE("CLI bad input: missing files, folders, empty and foreign files") {
  Fixture fx("missing");
  const fs::path folder = fx.dir / "a_folder";
  fs::create_directories(folder);
  const fs::path empty = fx.dir / "empty.gguf", text_model = fx.dir / "notes.gguf";
  write(empty, "");
  write(text_model, "this is not a model, just some text that is long enough to look like a header\n");
  fx.all_commands_fail(fx.dir / "no_such_model.gguf", kIo, "missing model");
  fx.all_commands_fail(folder, kIo, "a folder with no model in it");
  fx.all_commands_fail(empty, kFormat, "empty model file");
  fx.all_commands_fail(text_model, kFormat, "a text file as the model");

  // A llama.c checkpoint whose header lies.
  std::string bin = slurp(loopus::test::data_file("models/stories260K/stories260K.bin"));
  for (const auto& [what, field, value] :
       std::vector<std::tuple<std::string, int, int32_t>>{{"negative dim", 0, -64},
                                                          {"zero layers", 2, 0},
                                                          {"2^30 vocabulary", 5, 1 << 30},
                                                          {"huge hidden", 1, 1 << 30}}) {
    std::string b = bin;
    poke<int32_t>(b, uint64_t(field) * 4, value);
    const fs::path f = fx.dir / "bad_llama2c.bin";
    write(f, b);
    const CliRun r = fx.run({"info", "-m", f.string()});
    CAPTURE(what);
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == kFormat);
    CHECK(r.err.find("bad_llama2c.bin") != std::string::npos);
  }

  // Tokenizer files: not JSON, invalid UTF-8, empty, a folder without tokenizer.json.
  const fs::path tok_bad = fx.dir / "tokenizer.json";
  for (const auto& [what, bytes, code] : std::vector<std::tuple<std::string, std::string, int>>{
           {"not JSON", "{\"model\": {\"type\": \"BPE\", ", kFormat},
           {"invalid UTF-8", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\xff\xfe\": 0}, \"merges\": []}}",
            kFormat},
           {"empty", "", kFormat},
           {"an array", "[1, 2, 3]", kFormat}}) {
    write(tok_bad, bytes);
    const CliRun r = fx.run({"tokenize", "--tokenizer", tok_bad.string(), "-p", "hello"});
    CAPTURE(what);
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == code);
    CHECK(r.err.find("tokenizer.json") != std::string::npos);
  }
  {
    const CliRun r = fx.run({"tokenize", "--tokenizer", folder.string(), "-p", "hello"});
    REQUIRE(r.exited);
    CHECK(r.code == kIo);
    CHECK(r.err.find("a_folder") != std::string::npos);
  }

  // Text inputs: a folder or a missing file where a text file is expected.
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"perplexity", "-m", fx.model, "-f", folder.string()},
                                             {"perplexity", "-m", fx.model, "-f", (fx.dir / "missing.txt").string()},
                                             {"tokenize", "-m", fx.model, "--jsonl", folder.string()},
                                             {"adapt", "-m", fx.model, "--data", folder.string(), "--out",
                                              (fx.dir / "o").string(), "--steps", "1", "--encoder-layers", "0..0",
                                              "--decoder-layers", "4..4", "-q"}}) {
    const CliRun r = fx.run(args);
    CAPTURE(args[0]);
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == kIo);
  }
}

TEST_CASE("CLI bad input: prompts") {
  Fixture fx("prompts");
  SUBCASE("invalid UTF-8 is encoded, not refused (byte fallback / U+FFFD), and generation runs") {
    const CliRun r = fx.run({"generate", "-m", fx.model, "-p", "ab\xff\xfe\xc3 cd", "-n", "3"});
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == 0);
  }
  SUBCASE("a prompt longer than the context is a limit error naming the context size") {
    std::string long_prompt;
    for (int i = 0; i < 40; ++i) long_prompt += "Once upon a time there was a cat. ";
    const CliRun r = fx.run({"generate", "-m", fx.model, "-p", long_prompt, "-n", "2", "-c", "32"});
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == kLimit);
    CHECK(r.err.find("n_ctx 32") != std::string::npos);
  }
  SUBCASE("a prompt that encodes to no token") {
    const CliRun r = fx.run({"tokenize", "-m", fx.model, "-p", ""});
    REQUIRE(r.exited);
    CHECK(r.code == 0);
  }
}

TEST_CASE("CLI bad input: unknown, malformed and out-of-range options are usage errors naming the option") {
  Fixture fx("options");
  const std::string m = fx.model;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"generate", "-m", m, "--bogus"}, "--bogus"},
      {{"frobnicate"}, "frobnicate"},
      {{"generate", "-m", m, "-n", "abc"}, "--n-predict"},
      {{"generate", "-m", m, "-n", "0"}, "--n-predict"},
      {{"generate", "-m", m, "--loops", "0"}, "--loops"},
      {{"generate", "-m", m, "--loops", "2000"}, "--loops"},
      {{"generate", "-m", m, "--loops", "x"}, "--loops"},
      {{"generate", "-m", m, "--min-loops", "9"}, "--min-loops"},
      {{"generate", "-m", m, "--halt", "q:1.5"}, "--halt"},
      {{"generate", "-m", m, "--halt", "q:abc"}, "--halt"},
      {{"generate", "-m", m, "--halt", "conv:-1"}, "--halt"},
      {{"generate", "-m", m, "--halt", "sometimes"}, "--halt"},
      {{"generate", "-m", m, "--gate", "mix:2"}, "--gate"},
      {{"generate", "-m", m, "--cache", "huge"}, "--cache"},
      {{"generate", "-m", m, "--q-eval-interval", "0"}, "--q-eval-interval"},
      {{"generate", "-m", m, "--encoder-layers", "5..2", "--decoder-layers", "4"}, "--encoder-layers"},
      {{"generate", "-m", m, "--encoder-layers", "0", "--decoder-layers", "99"}, "--decoder-layers"},
      {{"generate", "-m", m, "--encoder-layers", "0..3", "--decoder-layers", "3..4"}, "overlap"},
      {{"generate", "-m", m, "--encoder-layers", "a..b", "--decoder-layers", "4"}, "--encoder-layers"},
      {{"generate", "-m", m, "--temp", "-1"}, "--temp"},
      {{"generate", "-m", m, "--top-p", "1.5"}, "--top-p"},
      {{"generate", "-m", m, "--repeat-penalty", "-1"}, "--repeat-penalty"},
      {{"generate", "-m", m, "-t", "0"}, "--threads"},
      {{"generate", "-m", m, "--backend", "gpu"}, "--backend"},
      {{"generate", "-m", m, "--backend", "cuda", "--device", "-1"}, "--device"},
      {{"adapt", "-m", m, "--data", fx.text.string(), "--out", (fx.dir / "o").string(), "--steps", "1", "--backend",
        "cuda"},
       "--backend"},
      {{"generate", "-m", m, "-t", "-3"}, "--threads"},
      {{"generate"}, "--model"},
      {{"perplexity", "-m", m}, "--file"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--chunking", "sliding"}, "--chunking"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--chunking", "llama", "--window", "16"}, "--window"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--ctx-size", "16"}, "--ctx-size"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--chunking", "llama", "--chunks", "0"}, "--chunks"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--chunking", "llama", "-c", "2"}, "--ctx-size"},
      {{"perplexity", "-m", m, "-f", fx.text.string(), "--chunking", "llama"}, "2 * n_ctx = 1024 tokens (--ctx-size)"},
      {{"tokenize", "-m", m, "-p", "a", "--jsonl", fx.text.string()}, "--jsonl"},
      {{"adapt", "-m", m, "--data", fx.text.string(), "--out", (fx.dir / "o").string()}, "--tokens"},
      {{"adapt", "-m", m, "--data", fx.text.string(), "--out", (fx.dir / "o").string(), "--steps", "1", "--eval-loops",
        "0,2"},
       "--eval-loops"},
      {{"adapt", "-m", m, "--data", fx.text.string(), "--out", (fx.dir / "o").string(), "--steps", "1", "--seq-len",
        "8", "--lr", "-1", "--encoder-layers", "0..0", "--decoder-layers", "4..4"},
       "--lr"},
  };
  for (const auto& [args, names] : cases) {
    const CliRun r = fx.run(args);
    std::string line;
    for (const auto& a : args) line += a + " ";
    CAPTURE(line);
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == kUsage);
    CHECK(r.err.find(names) != std::string::npos);
  }
  SUBCASE("--help and --version succeed") {
    for (const auto& args : std::vector<std::vector<std::string>>{{"--help"}, {"--version"}, {"generate", "--help"}}) {
      const CliRun r = fx.run(args);
      REQUIRE(r.exited);
      CHECK(r.code == 0);
    }
  }
}

TEST_CASE("CLI: --backend cuda runs on a GPU, and without one (or without CUDA in the build) is a usage error") {
  Fixture fx("cuda");
  const CliRun r = fx.run({"generate", "-m", fx.model, "-p", "Once", "-n", "3", "--temp", "0", "--backend", "cuda"});
  CAPTURE(r.err);
  REQUIRE(r.exited);
  if (r.code == 0) {
    MESSAGE("--backend cuda ran on this machine's GPU: " << r.out);
    CHECK_FALSE(r.out.empty());
  } else {
    // "--backend cuda: no usable CUDA device (...)" or "--backend cuda: this loopus was built without ..."
    CHECK(r.code == kUsage);
    CHECK(r.err.find("--backend cuda") != std::string::npos);
    CHECK(r.err.find("internal") == std::string::npos);
  }
}

TEST_CASE("CLI bad input: a corrupted adaptation state is refused on --resume, the run's files kept") {
  Fixture fx("resume");
  const fs::path out = fx.dir / "run";
  const std::vector<std::string> base = {
      "adapt",   "-m", fx.model,           "--data", fx.text.string(),   "--out", out.string(), "--seq-len",    "8",
      "--batch", "1",  "--encoder-layers", "0..0",   "--decoder-layers", "4..4",  "-q",         "--ckpt-every", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  REQUIRE(fx.run(with({"--steps", "1"})).code == 0);
  const fs::path state = out / "train_state.bin";
  REQUIRE(fs::exists(state));
  std::string bytes = slurp(state);
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 0x5a);
  write(state, bytes);
  const CliRun r = fx.run(with({"--steps", "2", "--resume"}));
  CAPTURE(r.err);
  REQUIRE(r.exited);
  CHECK(r.code == kFormat);
  CHECK(r.err.find("train_state.bin") != std::string::npos);
  CHECK(slurp(state) == bytes);  // the refused state is left as it was
}
