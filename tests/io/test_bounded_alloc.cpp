// Bounded resources: a hostile file (huge counts, dims, lengths, offsets, ids, nesting) fails with a
// FormatError or LimitError, quickly, having allocated at most a small multiple of its own size. The
// test binary's operator new counts the bytes live (tests/alloc_hook.cpp): each load's peak above
// what was live before it must stay within kFactor x the file's size + kSlack.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "alloc_hook.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/llama2c.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_weights.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "loopus/train/checkpoint.hpp"
#include "loopus/train/loopus_step.hpp"
#include "loopus/train/params.hpp"
#include "test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

namespace {

/// The documented bound (docs/security.md, "Bounded resources"): a failed load allocates at most
/// kFactor times the size of the files it read, plus kSlack.
constexpr double kFactor = 48;
constexpr double kSlack = 4 << 20;

using test::write_bytes;

/// Little-endian bytes, as the binary formats store them.
struct Bytes {
  std::string b;
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& i32(int32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
  Bytes& raw(const void* p, size_t n) {
    b.append(static_cast<const char*>(p), n);
    return *this;
  }
};

/// A GGUF v3 header: magic, version, counts.
Bytes gguf(uint64_t n_tensors, uint64_t n_kv) {
  Bytes g;
  g.u32(io::kGgufMagic).u32(3).u64(n_tensors).u64(n_kv);
  return g;
}

struct Outcome {
  ErrorKind kind = ErrorKind::internal;
  std::string msg;
  double peak = 0, seconds = 0;
};

/// Runs load (which must throw a loopus::Error) and measures the most bytes it held at once.
Outcome measure(const std::function<void()>& load) {
  Outcome o;
  const size_t base = test::alloc_peak_reset();
  const auto t0 = std::chrono::steady_clock::now();
  bool threw = false;
  try {
    load();
  } catch (const Error& e) {
    threw = true;
    o.kind = e.kind();
    o.msg = e.what();
  }
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  o.peak = double(test::alloc_peak() - base);
  CHECK_MESSAGE(threw, "no error");
  return o;
}

/// One hostile input: `bytes` of the files it reads, how to load it, and what the error must say.
void expect_bounded(const std::string& name, double bytes, const std::function<void()>& load,
                    const std::string& needle = "") {
  CAPTURE(name);
  const Outcome o = measure(load);
  INFO("message: " << o.msg);
  CHECK_MESSAGE((o.kind == ErrorKind::format || o.kind == ErrorKind::limit), "kind " << int(o.kind));
  if (!needle.empty()) CHECK(o.msg.find(needle) != std::string::npos);
  CHECK_LE(o.peak, kFactor * bytes + kSlack);
  CHECK_LT(o.seconds, 10.0);
  MESSAGE(name << ": " << bytes << " bytes of input, peak " << o.peak << " bytes allocated ("
               << o.peak / std::max(bytes, 1.0) << " x), " << o.seconds << " s");
}

std::string repeat(const std::string& s, size_t n) {
  std::string r;
  r.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) r += s;
  return r;
}

}  // namespace

TEST_CASE("[io] bounded allocation: hostile GGUF files fail before allocating for what they claim") {
  const auto dir = test::temp_dir("bounded_gguf");
  const fs::path p = dir / "h.gguf";
  auto check = [&](const std::string& name, const Bytes& g, const std::string& needle = "") {
    write_bytes(p, g.b);
    expect_bounded(
        name, double(g.b.size()), [&] { (void)io::open_gguf(p.string()); }, needle);
  };
  check("tensor count 2^62", gguf(uint64_t(1) << 62, 0), "more than a");
  check("metadata count 2^40", gguf(0, uint64_t(1) << 40), "more than a");
  const std::string pad(64, '\0');  // room enough for the header's count check
  check("key length 2^60", gguf(0, 1).u64(uint64_t(1) << 60).raw(pad.data(), pad.size()), "runs past EOF");
  check("u32 array of 2^40", gguf(0, 1).str("k").u32(9).u32(4).u64(uint64_t(1) << 40), "claims an array");
  {
    Bytes g = gguf(0, 1).str("k").u32(9).u32(9).u64(1000);  // 1000 arrays, each claiming 2^40 values
    for (int i = 0; i < 1000; ++i) g.u32(4).u64(uint64_t(1) << 40);
    check("arrays of arrays of 2^40", g, "claims an array");
  }
  check("string array with a 2^50-byte string",
        gguf(0, 1).str("k").u32(9).u32(8).u64(1).u64(uint64_t(1) << 50).raw(pad.data(), pad.size()), "runs past EOF");
  check("n_dims 2^31", gguf(1, 0).str("t").u32(1u << 31).raw(pad.data(), pad.size()), "dimensions");
  check("dims 2^32 x 2^32", gguf(1, 0).str("t").u32(2).u64(uint64_t(1) << 32).u64(uint64_t(1) << 32).u32(0).u64(0));
  check("dims 2^20 x 2^20 past EOF", gguf(1, 0).str("t").u32(2).u64(1 << 20).u64(1 << 20).u32(0).u64(0), "past EOF");
  check("offset 2^63", gguf(1, 0).str("t").u32(1).u64(8).u32(0).u64(uint64_t(1) << 63));
  check("alignment 2^30", gguf(1, 1).str("general.alignment").u32(4).u32(1u << 30).str("t").u32(1).u64(8).u32(0).u64(0),
        "past EOF");
  // Honest-looking metadata that the file really holds, then a cut: what it costs is the JSON the
  // reader built (u8 values are the worst case: 16 bytes of JSON per byte of file).
  {
    Bytes g = gguf(1, 1).str("k").u32(9).u32(0).u64(1 << 20);
    g.b.append(1 << 20, '\x01');
    check("1 MiB u8 array, then a cut", g, "truncated");
  }
  {
    Bytes g = gguf(1, 1).str("k").u32(9).u32(8).u64(1 << 17);
    for (int i = 0; i < (1 << 17); ++i) g.u64(0);  // empty strings
    check("128 Ki empty strings, then a cut", g, "truncated");
  }
  {
    Bytes g = gguf(1, 1).str("k").u32(9).u32(9).u64(1 << 17);
    for (int i = 0; i < (1 << 17); ++i) g.u32(0).u64(0);  // empty u8 arrays
    check("128 Ki empty arrays, then a cut", g, "truncated");
  }
}

TEST_CASE("[io] bounded allocation: a model file claiming huge dimensions fails before its weights are built") {
  const auto dir = test::temp_dir("bounded_hparams");
  // GGUF metadata: a billion layers of dim 2^20, no tensors
  const fs::path g = dir / "h.gguf";
  {
    Bytes b = gguf(0, 6).str("general.architecture").u32(8).str("llama");
    b.str("llama.block_count").u32(4).u32(1000000000);
    b.str("llama.embedding_length").u32(4).u32(1 << 20);
    b.str("llama.attention.head_count").u32(4).u32(1 << 12);
    b.str("llama.feed_forward_length").u32(4).u32(1 << 22);
    b.str("llama.vocab_size").u32(4).u32(1 << 24);
    write_bytes(g, b.b);
    expect_bounded(
        "GGUF block_count 1e9", double(b.b.size()), [&] { (void)load_weights(g.string()); }, "layers");
  }
  // config.json of a Hugging Face folder (with a valid, tiny model.safetensors)
  const fs::path hf = dir / "hf";
  fs::create_directories(hf);
  const float one = 1.f;
  io::write_safetensors((hf / "model.safetensors").string(), {{"x", DType::kF32, {1}, &one, 4}});
  auto config = [&](const std::string& name, const std::string& text, const std::string& needle) {
    write_bytes(hf / "config.json", text);
    const double bytes = double(text.size() + fs::file_size(hf / "model.safetensors"));
    expect_bounded(
        name, bytes, [&] { (void)load_weights(hf.string()); }, needle);
  };
  const std::string base = R"({"model_type":"llama","hidden_size":4096,"num_attention_heads":32,)"
                           R"("intermediate_size":11008,"vocab_size":32000,)";
  config("config.json num_hidden_layers 1e9", base + R"("num_hidden_layers":1000000000})", "layers");
  config("config.json num_hidden_layers 1e20", base + R"("num_hidden_layers":1e20})", "num_hidden_layers");
  config("config.json num_hidden_layers 2^40", base + R"("num_hidden_layers":1099511627776})", "num_hidden_layers");
  config("config.json hidden_size -5e9", base + R"("num_hidden_layers":2,"hidden_size":-5e9})", "hidden_size");
  config("config.json nested 1 MiB deep", std::string(1 << 20, '['), "nested deeper");
}

TEST_CASE("[io] bounded allocation: hostile safetensors headers") {
  const auto dir = test::temp_dir("bounded_st");
  const fs::path p = dir / "h.safetensors";
  auto check = [&](const std::string& name, const std::string& header, const std::string& needle = "",
                   uint64_t claimed_len = 0) {
    Bytes b;
    b.u64(claimed_len ? claimed_len : header.size());
    b.b += header;
    write_bytes(p, b.b);
    expect_bounded(
        name, double(b.b.size()), [&] { (void)io::open_safetensors(p.string()); }, needle);
  };
  check("header length 2^60", "{}", "runs past EOF", uint64_t(1) << 60);
  check("shape 2^40 x 2^40", R"({"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})",
        "shape");
  check("data_offsets to 2^60", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,1152921504606846976]}})",
        "past EOF");
  check("1 MiB of nesting", std::string(1 << 20, '['), "nested deeper");
  check("60-deep nesting, 1 MiB wide",
        "{\"t\":" + repeat("[", 60) + repeat("[1234567],", 1 << 17) + "[]" + repeat("]", 60) + "}", "not an object");
  check("256 Ki empty objects", "{\"t\":[" + repeat("{},", 1 << 18) + "{}]}", "JSON arrays and objects");
  check("1 MiB of empty objects and arrays, 1 per 8 bytes", "{\"t\":[" + repeat("{},0,0,0,", 1 << 17) + "{}]}",
        "not an object");
  check("256 Ki empty strings", "{\"t\":[" + repeat("\"\",", 1 << 18) + "\"\"]}", "not an object");
  check("512 Ki zeros", "{\"t\":[" + repeat("0,", 1 << 19) + "0]}", "not an object");
  {
    std::string keys = "{";
    for (int i = 0; i < (1 << 17); ++i) {  // appended piecewise: GCC 12 warns (falsely) on "\"" + to_string(i)
      keys += '"';
      keys += std::to_string(i);
      keys += "\":0,";
    }
    keys += "\"t\":0}";
    check("128 Ki distinct keys", keys, "not an object");
  }
}

TEST_CASE("[io] bounded allocation: hostile llama2.c files, checkpoints and tokenizers") {
  const auto dir = test::temp_dir("bounded_misc");
  {
    const fs::path p = dir / "h.bin";
    Bytes b;
    for (int32_t v : {1 << 20, 1 << 22, 4096, 4096, 4096, 1 << 24, 1 << 24}) b.i32(v);
    b.b.append(1000, '\0');
    write_bytes(p, b.b);
    expect_bounded(
        "llama2.c, largest dims the header allows", double(b.b.size()), [&] { (void)io::open_llama2c(p.string()); },
        "needs");
    Bytes c;
    for (int32_t v : {64, 172, 5, 8, 4, -2147483647, 256}) c.i32(v);  // legacy v0: vocab sign = unshared
    write_bytes(p, c.b);
    expect_bounded("llama2.c, vocab -2^31+1", double(c.b.size()), [&] { (void)io::open_llama2c(p.string()); });
  }
  {
    // checkpoints with a valid checksum, so the header is read: a header length and a blob past EOF
    const fs::path p = dir / "state.bin";
    auto ckpt = [&](uint64_t hlen, const std::string& header) {
      Bytes b;
      b.raw(train::kCheckpointMagic, 8).u64(hlen);
      b.b += header;
      train::detail::Fnv1a sum;
      sum.add(b.b.data(), b.b.size());
      b.u64(sum.h);
      write_bytes(p, b.b);
      return double(b.b.size());
    };
    double n = ckpt(uint64_t(1) << 60, "{}");
    expect_bounded(
        "checkpoint header length 2^60", n, [&] { (void)train::LoadedCheckpoint::read(p.string()); }, "past EOF");
    const std::string h = R"({"state":{},"blobs":[{"name":"a","offset":0,"bytes":1152921504606846976}]})";
    n = ckpt(h.size(), h);
    expect_bounded(
        "checkpoint blob of 2^60 bytes", n, [&] { (void)train::LoadedCheckpoint::read(p.string()); }, "past EOF");
    const std::string deep = std::string(1 << 20, '[');
    n = ckpt(deep.size(), deep);
    expect_bounded(
        "checkpoint header 1 MiB deep", n, [&] { (void)train::LoadedCheckpoint::read(p.string()); }, "nested deeper");
  }
  {
    const fs::path p = dir / "tok.bin";
    Bytes b;
    b.i32(16).f32(0).i32(2147483647);
    write_bytes(p, b.b);
    expect_bounded(
        "llama2.c tokenizer, token of 2^31 bytes", double(b.b.size()),
        [&] { (void)SpmTokenizer::from_llama2c(p.string()); }, "length");
  }
  {
    const fs::path p = dir / "tokenizer.json";
    auto check = [&](const std::string& name, const std::string& text, const std::string& needle) {
      write_bytes(p, text);
      expect_bounded(
          name, double(text.size()), [&] { (void)BpeTokenizer::from_json_file(p.string()); }, needle);
    };
    check("tokenizer.json vocab id 2^31-2", R"({"model":{"type":"BPE","vocab":{"a":2147483646},"merges":[]}})",
          "far beyond");
    check("tokenizer.json 1 MiB deep", std::string(1 << 20, '{'), "nested deeper");
    check("tokenizer.json 256 Ki empty objects", "{\"added_tokens\":[" + repeat("{},", 1 << 18) + "{}]}",
          "JSON arrays and objects outside model.vocab");
    std::string vocab = R"({"model":{"type":"BPE","vocab":{)";
    for (int i = 0; i < (1 << 17); ++i) {  // piecewise, as above (GCC 12 false -Wstringop-overflow)
      const std::string n = std::to_string(i);
      vocab += '"';
      vocab += n;
      vocab += "\":";
      vocab += n;
      vocab += ',';
    }
    vocab += R"("x":-1},"merges":[]}})";
    check("tokenizer.json 128 Ki vocabulary entries, the last invalid", vocab, "invalid id");
  }
}

TEST_CASE("[io] bounded allocation: contexts and batches beyond memory are refused before allocating") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  ::setenv("LOOPUS_MEMORY_LIMIT", "64M", 1);
  const Outcome o = measure([&] { CausalLM<Cpu> lm(w, ContextParams{1 << 22, 512}); });
  ::unsetenv("LOOPUS_MEMORY_LIMIT");
  CHECK(o.kind == ErrorKind::limit);
  CHECK(o.msg.find("a context of 4194304 tokens") != std::string::npos);
  CHECK(o.msg.find("LOOPUS_MEMORY_LIMIT allows") != std::string::npos);
  CHECK_LT(o.peak, 8 << 20);
  CHECK_THROWS_AS(CausalLM<Cpu>(w, ContextParams{kMaxContext + 1, 512}), LimitError);
  CHECK_THROWS_AS(CausalLM<Cpu>(w, ContextParams{0, 512}), UsageError);
  ::setenv("LOOPUS_MEMORY_LIMIT", "lots", 1);
  CHECK_THROWS_WITH_AS(memory_limit(), doctest::Contains("LOOPUS_MEMORY_LIMIT='lots'"), UsageError);
  ::setenv("LOOPUS_MEMORY_LIMIT", "1.5G", 1);
  CHECK(memory_limit() == 1.5 * (1 << 30));
  ::unsetenv("LOOPUS_MEMORY_LIMIT");
  CHECK(memory_limit() > 0);
}

TEST_CASE("[cli] sizes beyond memory or a documented limit: exit code 6, the message names the option") {
  const std::string cli = test::cli_path();
  if (cli.empty()) return;
  const std::string model = test::data_file("models/stories260K/stories260K.gguf");
  const std::string text = test::data_file("text/tinystories/tinystories_validation_first1000.txt");
  const auto dir = test::temp_dir("bounded_cli");
  const int kLimit = int(ErrorKind::limit);
  const std::vector<std::pair<std::string, std::string>> mem = {{"LOOPUS_MEMORY_LIMIT", "256M"}};
  auto run = [&](const std::vector<std::string>& args, const std::vector<std::string>& needles) {
    CAPTURE(args.front());
    const auto r = test::run_cli(cli, args, 0, "", mem);
    INFO("stderr: " << r.err);
    CHECK_EQ(r.code, kLimit);
    for (const auto& n : needles) CHECK(r.err.find(n) != std::string::npos);
  };
  run({"adapt", "-m", model, "--data", text, "--encoder-layers", "0..0", "--decoder-layers", "4..4", "--out",
       (dir / "ad").string(), "--batch", "60000", "--steps", "1", "-q"},
      {"60000 sequences (--batch)", "(--seq-len)", "more than the 256.0 MiB LOOPUS_MEMORY_LIMIT allows"});
  CHECK_FALSE(fs::exists(dir / "ad" / "train_state.bin"));
  run({"generate", "-m", model, "-p", "Once", "-c", "10000000"}, {"a context of 10000000 tokens"});
  run({"perplexity", "-m", model, "-f", text, "--window", "1000000"}, {"a context of 1000000 tokens"});
  run({"synth", "--dim", "65536", "--layers", "64", "--heads", "256", "--ff", "262144", "--vocab", "65536", "--out",
       (dir / "big.gguf").string()},
      {"synth: a model of 64 layers"});
  run({"synth", "--dim", "64", "--layers", "5000", "--heads", "4", "--ff", "128", "--vocab", "512", "--out",
       (dir / "deep.gguf").string()},
      {"layers=5000 <= 4096"});
  CHECK_FALSE(fs::exists(dir / "big.gguf"));
}

TEST_CASE("[io] bounded allocation: the up-front memory estimates are what the buffers then take") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  const HParams& hp = w->hp;
  // a plain model's context: KV cache + forward scratch
  {
    const size_t base = test::alloc_peak_reset();
    CausalLM<Cpu> lm(w, ContextParams{4096, 512});
    const double used = double(test::alloc_peak() - base);
    const int64_t widest = std::max<int64_t>({hp.n_embd, hp.q_dim(), hp.n_ff});
    const double planned = 4.0 * (double(hp.n_layer) * 4096 * hp.kv_dim() * 2 + 512.0 * hp.n_embd) +
                           4.0 * 512 * double(hp.n_embd + 2 * hp.q_dim() + 2 * hp.n_ff + widest);
    MESSAGE("CausalLM n_ctx 4096: planned " << planned << " bytes, allocated " << used);
    CHECK_LE(planned, used);
    CHECK_LE(used, 1.5 * planned + (1 << 20));
  }
  // a training batch: tapes, workspace, logits
  auto lw = recast(w, LayerSplit::from_specs("0..0", "4..4", hp.n_layer));
  train::TrainModel<Cpu, float> m(lw, train::TrainSelect{}, 1);
  const train::StepConfig sc;
  const size_t base = test::alloc_peak_reset();
  train::LoopusTrainer<Cpu, float> tr(m, 4, 64, sc);
  const double used = double(test::alloc_peak() - base);
  const double planned = train::LoopusTrainer<Cpu, float>::planned_bytes(train::Dims::of(hp, 4, 64),
                                                                         int64_t(sc.n_apply) *
                                                                                 int64_t(lw->split.reasoning.size()) +
                                                                             int64_t(lw->split.decoder.size()),
                                                                         sc.n_apply, m.gate().r);
  MESSAGE("LoopusTrainer 4 x 64: planned " << planned << " bytes, allocated " << used);
  CHECK_LE(planned, used);
  CHECK_LE(used, 1.5 * planned + (1 << 20));
}
