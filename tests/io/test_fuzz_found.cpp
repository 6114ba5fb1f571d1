// What the libFuzzer targets (tests/fuzz, docs/security.md "Fuzzing") found in the model,
// config and training-state readers: each input that crashed or escaped the error contract,
// and the clear error it gets now.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "loopus/io/json_field.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/ops/reference/train.hpp"
#include "loopus/train/adapt.hpp"
#include "loopus/train/checkpoint.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

namespace {

using test::write_bytes;

/// Runs f, which must throw an Error of kind `kind` whose message holds every needle.
template <class F>
void expect_error(F&& f, ErrorKind kind, std::initializer_list<std::string> needles) {
  bool threw = false;
  try {
    f();
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.kind() == kind);
    for (const auto& n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "missing '" << n << "'");
  }
  CHECK(threw);
}

/// A tiny HF llama folder whose config.json is then replaced by `config`.
fs::path hf_dir_with_config(const std::string& name, const std::string& config) {
  const auto dir = test::temp_dir("fuzz_found_" + name);
  SynthParams p;
  p.dim = 8;
  p.layers = 2;
  p.heads = 2;
  p.kv_heads = 1;
  p.ff = 16;
  p.vocab = 16;
  save_hf(*synth_weights(p), dir.string());
  write_bytes(dir / "config.json", config);
  return dir;
}

/// A training-state file (train/checkpoint.hpp layout) with this header and payload, checksum right.
std::string checkpoint_bytes(const std::string& header, const std::string& payload) {
  std::string b(train::kCheckpointMagic, 8);
  const uint64_t len = header.size();
  b.append(reinterpret_cast<const char*>(&len), 8);
  b += header;
  b += payload;
  train::detail::Fnv1a sum;
  sum.add(b.data(), b.size());
  b.append(reinterpret_cast<const char*>(&sum.h), 8);
  return b;
}

}  // namespace

TEST_CASE("[loopus] fuzz found: json_field reads typed, range-checked values or names the file and key") {
  using nlohmann::json;
  const json j = {{"i", 7}, {"f", 6.0}, {"half", 6.5}, {"big", 1e300}, {"neg", -1}, {"s", "x"}, {"n", nullptr}};
  CHECK_EQ(io::json_field<int>(j, "i", 0, "c.json"), 7);
  CHECK_EQ(io::json_field<int>(j, "f", 0, "c.json"), 6);
  CHECK_EQ(io::json_field<int>(j, "absent", 3, "c.json"), 3);
  CHECK_EQ(io::json_field<int>(j, "n", 3, "c.json"), 3);
  CHECK(std::isinf(io::json_field<float>(j, "big", 0.f, "c.json")));
  expect_error([&] { (void)io::json_field<int>(j, "half", 0, "c.json"); }, ErrorKind::format,
               {"c.json", "'half'", "6.5"});
  expect_error([&] { (void)io::json_field<int>(j, "big", 0, "c.json"); }, ErrorKind::format, {"c.json", "'big'"});
  expect_error([&] { (void)io::json_field<uint64_t>(j, "neg", 0, "c.json"); }, ErrorKind::format, {"'neg'", "-1"});
  expect_error([&] { (void)io::json_field<bool>(j, "s", false, "c.json"); }, ErrorKind::format, {"'s'", "boolean"});
  expect_error([&] { (void)io::json_required<std::string>(j, "absent", "c.json"); }, ErrorKind::format,
               {"c.json", "missing", "'absent'"});
}

TEST_CASE("[loopus] fuzz found: a config.json whose model_type is not a string is a format error") {
  // fuzz_hf_config: "model_type": 3 escaped as nlohmann::json::type_error from model_format().
  const auto dir = hf_dir_with_config("model_type", R"({"model_type": 3, "hidden_size": 8})");
  expect_error([&] { (void)load_weights(dir.string()); }, ErrorKind::format, {"config.json", "'model_type'", "3"});
}

TEST_CASE("[loopus] fuzz found: config.json values of the wrong type or range are format errors") {
  const std::string base = R"("model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2,
      "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 16)";
  struct Case {
    const char* extra;
    const char* needle;
  };
  for (const Case& c :
       {Case{R"("tie_word_embeddings": "yes")", "'tie_word_embeddings'"},
        Case{R"("attention_bias": 1)", "'attention_bias'"}, Case{R"("rope_scaling": {"rope_type": 7})", "'rope_type'"},
        Case{R"("hidden_size": 1e300)", "'hidden_size'"},
        Case{R"("max_position_embeddings": 4294967296)", "'max_position_embeddings'"}}) {
    CAPTURE(c.extra);
    const auto dir = hf_dir_with_config("config_types", "{" + base + ", " + c.extra + "}");
    expect_error([&] { (void)load_weights(dir.string()); }, ErrorKind::format, {"config.json", c.needle});
  }
}

TEST_CASE("[loopus] fuzz found: a checkpoint blob entry without 'bytes' is a format error") {
  // fuzz_checkpoint: a blob entry missing a key escaped as nlohmann::json::out_of_range.
  const auto dir = test::temp_dir("fuzz_found_ckpt");
  const auto p = (dir / "train_state.bin").string();
  write_bytes(p, checkpoint_bytes(R"({"state": {}, "blobs": [{"name": "w", "offset": 0}]})", "abcd"));
  expect_error([&] { (void)train::LoadedCheckpoint::read(p); }, ErrorKind::format, {"train_state.bin", "'bytes'"});
  write_bytes(p, checkpoint_bytes(R"({"state": {}, "blobs": [{"name": 5, "offset": 0, "bytes": 4}]})", "abcd"));
  expect_error([&] { (void)train::LoadedCheckpoint::read(p); }, ErrorKind::format, {"train_state.bin", "'name'"});
  write_bytes(p, checkpoint_bytes(R"({"state": {}, "blobs": [{"name": "w", "offset": 0, "bytes": 4},
      {"name": "w", "offset": 0, "bytes": 2}]})",
                                  "abcd"));
  expect_error([&] { (void)train::LoadedCheckpoint::read(p); }, ErrorKind::format, {"train_state.bin", "twice"});
  write_bytes(p, checkpoint_bytes(R"([1, 2])", "abcd"));
  expect_error([&] { (void)train::LoadedCheckpoint::read(p); }, ErrorKind::format, {"train_state.bin", "'state'"});
}

TEST_CASE("[loopus] fuzz found: a training state with counters outside the run is a format error") {
  // Adapter::load took step, data_epoch and data_pos as they came: a negative or too large
  // data_pos made the next batch read outside the data order.
  auto lw = test::synth_loopus(test::tiny_params(5), "0..0", "3..3");
  train::PackedData data(test::random_ids(6 * 4, 32, 1), 4);
  train::AdaptConfig cfg;
  cfg.batch = 2;
  cfg.seq_len = 4;
  cfg.max_steps = 3;
  cfg.step.n_steps = 2;
  cfg.step.n_supervision = 1;
  cfg.step.n_apply = 1;
  const auto dir = test::temp_dir("fuzz_found_state");
  const auto good = (dir / "good.bin").string(), bad = (dir / "train_state.bin").string();
  {
    train::TrainModel<Reference> m(lw, train::TrainSelect{}, 1);
    train::Adapter<Reference> a(m, data, cfg);
    a.step();
    a.save(good);
  }
  // The same file with one state field replaced (header rewritten, checksum recomputed).
  const auto with = [&](const std::string& key, const nlohmann::json& v) {
    const std::string b = test::read_text(good);
    uint64_t len;
    std::memcpy(&len, b.data() + 8, 8);
    nlohmann::json h = nlohmann::json::parse(b.substr(16, len));
    if (v.is_null()) h["state"].erase(key);
    else h["state"][key] = v;
    write_bytes(bad, checkpoint_bytes(h.dump(), b.substr(16 + len, b.size() - 24 - len)));
  };
  const auto load = [&] {
    train::TrainModel<Reference> m(lw, train::TrainSelect{}, 1);
    train::Adapter<Reference> a(m, data, cfg);
    (void)a.load(bad);
  };
  with("data_pos", 2);
  load();  // the unmodified value loads
  for (const auto& [key, v, needle] : {std::tuple<std::string, nlohmann::json, std::string>{"data_pos", -1, "outside"},
                                       {"data_pos", 7, "outside 0..6"},
                                       {"data_epoch", -2, "'data_epoch'"},
                                       {"step", 4, "'step'"},
                                       {"micro", "x", "'micro'"},
                                       {"rng", -1, "'rng'"},
                                       {"tokens", nullptr, "missing"},
                                       {"extra", 5, "'extra'"},
                                       {"config", "x", "'config'"},
                                       {"format", 1, "'format'"}}) {
    CAPTURE(key);
    with(key, v);
    expect_error(load, ErrorKind::format, {"train_state.bin", needle});
  }
}

TEST_CASE("[loopus] fuzz found: GGUF tensors may not share bytes") {
  // A small file naming one block of data under many tensor names made a converting loader
  // (dequantize to f32) allocate once per name: far more than the file holds. ggml lays tensors
  // out one after another; loopus now refuses overlapping ones.
  const auto dir = test::temp_dir("fuzz_found_overlap");
  const auto p = (dir / "overlap.gguf").string();
  // Two 64-element f32 tensors (256 bytes) written normally, then the second's offset set to 128
  // (its tensor info: u64 name length 1, "b", u32 dims 1, u64 ne 64, u32 type, u64 offset).
  std::vector<float> a(64, 1.f), b(64, 2.f);
  io::GgufWriter w;
  w.add_tensor("a", DType::kF32, {64}, a.data());
  w.add_tensor("b", DType::kF32, {64}, b.data());
  w.write(p);
  std::string bytes = test::read_text(p);
  const size_t info = bytes.find(std::string("\x01\0\0\0\0\0\0\0b", 9));
  REQUIRE(info != std::string::npos);
  const size_t at = info + 9 + 4 + 8 + 4;
  uint64_t off_b = 0;
  std::memcpy(&off_b, bytes.data() + at, 8);
  REQUIRE_EQ(off_b, 256u);
  const uint64_t patched = 128;
  bytes.replace(at, 8, std::string(reinterpret_cast<const char*>(&patched), 8));
  write_bytes(p, bytes);
  expect_error([&] { (void)io::open_gguf(p); }, ErrorKind::format, {"overlap.gguf", "'a' and 'b' overlap"});
  // Zero-size tensors may sit anywhere.
  io::GgufWriter z;
  z.add_tensor("a", DType::kF32, {64}, a.data());
  z.add_tensor("empty", DType::kF32, {0}, nullptr);
  z.write(p);
  CHECK_EQ(io::open_gguf(p).tensors.size(), 2u);
}

TEST_CASE("[loopus] fuzz found: head counts and sizes whose product overflows int are errors") {
  // fuzz_gguf: llama.attention.key_length = 1073741828 with 2 heads made HParams::q_dim()
  // (n_head * head_dim) overflow int (UBSan) while the weights were mapped. A head count of -1
  // with embedding length INT_MIN would have divided INT_MIN by -1 for the default head size.
  const auto dir = test::temp_dir("fuzz_found_hparams");
  const auto p = (dir / "heads.gguf").string();
  SynthParams sp;
  sp.dim = 8;
  sp.layers = 2;
  sp.heads = 2;
  sp.kv_heads = 1;
  sp.ff = 16;
  sp.vocab = 16;
  save_gguf(*synth_weights(sp), p);
  struct Case {
    std::vector<std::pair<std::string, nlohmann::json>> set;
    ErrorKind kind;
    std::string needle;
  };
  for (const Case& c :
       {Case{{{"llama.attention.key_length", 1073741828}}, ErrorKind::limit, "beyond loopus's limits"},
        Case{{{"llama.attention.head_count", 8192}, {"llama.attention.head_count_kv", 8192}},
             ErrorKind::limit,
             "beyond loopus's limits"},
        Case{{{"llama.attention.head_count", -1},
              {"llama.embedding_length", INT32_MIN},
              {"llama.attention.key_length", nullptr}},  // null: the default, d / heads
             ErrorKind::format,
             "dims must be positive"}}) {
    CAPTURE(c.needle);
    auto tf = std::make_shared<io::TensorFile>(io::open_gguf(p));
    for (const auto& [k, v] : c.set) tf->meta[k] = v;
    expect_error([&] { (void)load_weights(std::shared_ptr<const io::TensorFile>(tf)); }, c.kind,
                 {"heads.gguf", c.needle});
  }
}
