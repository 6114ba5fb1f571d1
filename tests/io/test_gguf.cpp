// Tests for io/gguf.hpp: stories260K, a gguf-py written golden, writer round trips, malformed files.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "io/writer_golden.hpp"
#include "test_util.hpp"

using loopus::DType;
using nlohmann::json;
namespace io = loopus::io;
namespace fs = std::filesystem;

namespace {

using test::write_bytes;
std::string bytes_of(const io::TensorRecord& r) {
  return std::string(static_cast<const char*>(r.data), r.nbytes);
}

/// JSON equality including the number kinds (unsigned / signed / float) at every level.
bool same_typed(const json& a, const json& b) {
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!same_typed(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it)
      if (!b.contains(it.key()) || !same_typed(it.value(), b[it.key()])) return false;
    return true;
  }
  return a == b;
}

void check_same_tensors(const io::TensorFile& a, const io::TensorFile& b) {
  REQUIRE_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& r : a.tensors) {
    CAPTURE(r.name);
    const auto* o = b.find(r.name);
    REQUIRE(o);
    CHECK(o->dtype == r.dtype);
    CHECK_EQ(o->shape, r.shape);
    CHECK_EQ(o->nbytes, r.nbytes);
    CHECK(bytes_of(*o) == bytes_of(r));
  }
}

/// Expects open_gguf (both modes) to throw an Error whose message names the file and holds `needle`.
void expect_gguf_error(const fs::path& p, const std::string& needle = "") {
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const std::string fname = p.filename().string();
    CAPTURE(fname);
    CAPTURE(needle);
    bool threw = false;
    try {
      (void)io::open_gguf(p.string(), mode);
    } catch (const loopus::Error& e) {
      threw = true;
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(msg.find(p.filename().string()) != std::string::npos);
      if (!needle.empty()) CHECK(msg.find(needle) != std::string::npos);
    }
    CHECK(threw);
  }
}

/// Hand-rolled GGUF bytes (independent of io::GgufWriter) that remembers where fields are.
struct Builder {
  std::string b;
  size_t u32(uint32_t v) {
    const size_t at = b.size();
    b.append(reinterpret_cast<const char*>(&v), 4);
    return at;
  }
  size_t u64(uint64_t v) {
    const size_t at = b.size();
    b.append(reinterpret_cast<const char*>(&v), 8);
    return at;
  }
  size_t str(const std::string& s) {
    const size_t at = u64(s.size());
    b += s;
    return at;
  }
  void pad(size_t a) {
    while (b.size() % a) b.push_back('\0');
  }
  void set_u32(size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); }
  void set_u64(size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); }
};

/// A small valid GGUF: 3 KVs (one a string array), tensors "ta" f32 {2,8} and "tb" f32 {4}.
struct SmallGguf {
  Builder g;
  size_t n_tensors_at, key0_len_at, arr_count_at;
  size_t ta_name_at, ta_ndims_at, ta_ne0_at, ta_type_at, ta_off_at;
  size_t tb_name_at, tb_type_at, tb_off_at;
  size_t data_start;
  SmallGguf() {
    g.u32(io::kGgufMagic);
    g.u32(3);
    n_tensors_at = g.u64(2);
    g.u64(3);
    key0_len_at = g.str("general.architecture");
    g.u32(8);
    g.str("llama");
    g.str("llama.block_count");
    g.u32(4);
    g.u32(2);
    g.str("tokenizer.ggml.tokens");
    g.u32(9);
    g.u32(8);
    arr_count_at = g.u64(3);
    g.str("<s>");
    g.str("a");
    g.str("b");
    ta_name_at = g.str("ta");
    ta_ndims_at = g.u32(2);
    ta_ne0_at = g.u64(8);
    g.u64(2);
    ta_type_at = g.u32(0);
    ta_off_at = g.u64(0);
    tb_name_at = g.str("tb");
    g.u32(1);
    g.u64(4);
    tb_type_at = g.u32(0);
    tb_off_at = g.u64(64);
    g.pad(32);
    data_start = g.b.size();
    for (int i = 0; i < 16; ++i) {
      const float v = float(i) - 3.5f;
      g.b.append(reinterpret_cast<const char*>(&v), 4);
    }
    for (int i = 0; i < 4; ++i) {
      const float v = 100.f + float(i);
      g.b.append(reinterpret_cast<const char*>(&v), 4);
    }
  }
};

}  // namespace

TEST_CASE("[loopus] io: open_gguf stories260K (48 tensors, 19 KV pairs, hparams)") {
  const auto path = loopus::test::data_file("models/stories260K/stories260K.gguf");
  const auto tf = io::open_gguf(path);
  CHECK_EQ(tf.format, "gguf");
  CHECK_EQ(tf.tensors.size(), 48u);
  CHECK_EQ(tf.meta.size(), 19u);
  const json& m = tf.meta;
  CHECK_EQ(m["general.architecture"], "llama");
  CHECK_EQ(m["llama.context_length"], 2048);
  CHECK_EQ(m["llama.embedding_length"], 64);
  CHECK_EQ(m["llama.feed_forward_length"], 172);
  CHECK_EQ(m["llama.block_count"], 5);
  CHECK_EQ(m["llama.attention.head_count"], 8);
  CHECK_EQ(m["llama.attention.head_count_kv"], 4);
  CHECK_EQ(m["llama.rope.dimension_count"], 8);
  CHECK(m["llama.embedding_length"].is_number_unsigned());
  CHECK_EQ(m["llama.attention.layer_norm_rms_epsilon"].get<double>(), double(1e-5f));
  CHECK_EQ(m["tokenizer.ggml.model"], "llama");
  REQUIRE(m["tokenizer.ggml.tokens"].is_array());
  CHECK_EQ(m["tokenizer.ggml.tokens"].size(), 512u);
  CHECK(m["tokenizer.ggml.tokens"][0].is_string());
  CHECK_EQ(m["tokenizer.ggml.scores"].size(), 512u);
  CHECK(m["tokenizer.ggml.scores"][300].is_number_float());
  CHECK_EQ(m["tokenizer.ggml.token_type"].size(), 512u);
  CHECK_EQ(m["tokenizer.ggml.bos_token_id"], 1);
  CHECK_EQ(m["tokenizer.ggml.eos_token_id"], 2);
  CHECK_EQ(m["tokenizer.ggml.unknown_token_id"], 0);

  const auto& emb = tf.get("token_embd.weight");
  CHECK(emb.dtype == DType::kF32);
  CHECK_EQ(emb.shape, std::vector<int64_t>{512, 64});
  CHECK_EQ(emb.nbytes, 512u * 64 * 4);
  CHECK_EQ(tf.get("blk.0.attn_q.weight").shape, std::vector<int64_t>{64, 64});
  CHECK_EQ(tf.get("blk.4.attn_k.weight").shape, std::vector<int64_t>{32, 64});
  CHECK_EQ(tf.get("blk.2.ffn_gate.weight").shape, std::vector<int64_t>{172, 64});
  CHECK_EQ(tf.get("blk.2.ffn_down.weight").shape, std::vector<int64_t>{64, 172});
  CHECK_EQ(tf.get("output_norm.weight").shape, std::vector<int64_t>{64});
  CHECK(bytes_of(tf.get("output.weight")) == bytes_of(emb));  // per PROVENANCE
  for (const auto& r : tf.tensors) CHECK_EQ(reinterpret_cast<uintptr_t>(r.data) % 32, 0u);
  CHECK_THROWS_WITH_AS(tf.get("nope"), doctest::Contains("stories260K.gguf"), loopus::Error);
}

TEST_CASE("[loopus] io: open_gguf vocab-only llama.cpp files (no tensors, big string arrays)") {
  const auto spm = io::open_gguf(loopus::test::data_file("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf"));
  CHECK(spm.tensors.empty());
  CHECK(spm.buffers.empty());
  CHECK_EQ(spm.meta.size(), 22u);
  CHECK_EQ(spm.meta["tokenizer.ggml.tokens"].size(), 32000u);
  CHECK_EQ(spm.meta["tokenizer.ggml.tokens"][15043], "\xe2\x96\x81Hello");
  CHECK_EQ(spm.meta["tokenizer.ggml.scores"].size(), 32000u);
  CHECK(spm.meta["tokenizer.ggml.token_type"][0].is_number_integer());
  CHECK_FALSE(spm.meta["tokenizer.ggml.token_type"][0].is_number_unsigned());  // INT32 array
  CHECK_EQ(spm.meta["tokenizer.ggml.add_bos_token"], true);
  CHECK_EQ(spm.meta["llama.vocab_size"], 32000);
  const auto gpt2 = io::open_gguf(loopus::test::data_file("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf"),
                                  io::LoadMode::kMmap);
  CHECK_EQ(gpt2.meta.size(), 16u);
  CHECK_EQ(gpt2.meta["tokenizer.ggml.tokens"].size(), 50257u);
  CHECK_EQ(gpt2.meta["tokenizer.ggml.merges"].size(), 50000u);
  CHECK_EQ(gpt2.meta["tokenizer.ggml.eos_token_id"], 50256);
}

TEST_CASE("[loopus] io: open_gguf mmap mode equals read mode") {
  const auto path = loopus::test::data_file("models/stories260K/stories260K.gguf");
  const auto a = io::open_gguf(path, io::LoadMode::kRead);
  const auto b = io::open_gguf(path, io::LoadMode::kMmap);
  CHECK_EQ(a.buffers.size(), 1u);
  CHECK(a.mappings.empty());
  CHECK_EQ(b.mappings.size(), 1u);
  CHECK(b.buffers.empty());
  CHECK(same_typed(a.meta, b.meta));
  check_same_tensors(a, b);
  for (size_t i = 0; i < a.tensors.size(); ++i) CHECK_EQ(a.tensors[i].name, b.tensors[i].name);
}

TEST_CASE("[loopus] io: open_gguf reads every value type from a gguf-py written file") {
  const auto path = (loopus::test::source_dir() / "tests/golden/quant_golden.gguf").string();
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_gguf(path, mode);
    const json& m = tf.meta;
    CHECK_EQ(m.size(), 21u);
    CHECK_EQ(m["general.alignment"], 64);
    CHECK_EQ(m["general.architecture"], "loopus-test");
    const json want = {
        {"test.u8", uint64_t(200)},
        {"test.i8", int64_t(-100)},
        {"test.u16", uint64_t(60000)},
        {"test.i16", int64_t(-30000)},
        {"test.u32", uint64_t(4000000000u)},
        {"test.i32", int64_t(-2000000000)},
        {"test.f32", double(0.1f)},
        {"test.bool", true},
        {"test.str", "h\xc3\xa9llo \xe2\x96\x81world"},
        {"test.u64", uint64_t(9223372036854775813ull)},
        {"test.i64", int64_t(-4611686018427387904ll)},
        {"test.f64", 0.1},
        {"test.bytes", std::string("\xff\xfe\0ab", 5)},
        {"test.arr_str", {"a", "\xe2\x96\x81" "b", "", "<s>"}},
        {"test.arr_f32", {0.5, -1.25, double(3.0e-5f)}},
        {"test.arr_i32", {int64_t(1), int64_t(-2), int64_t(3)}},
        {"test.arr_u8", {uint64_t(1), uint64_t(2), uint64_t(255)}},
        {"test.arr_bool", {true, false}},
        {"test.nested", {{int64_t(1), int64_t(2)}, {int64_t(3)}}},
    };
    for (const auto& [k, v] : want.items()) {
      const std::string key = k;  // clang 14 cannot capture a structured binding
      CAPTURE(key);
      REQUIRE(m.contains(k));
      CHECK(same_typed(m[k], v));
    }
    CHECK_EQ(tf.tensors.size(), 15u);
    const auto& src = tf.get("src");
    CHECK_EQ(src.shape, std::vector<int64_t>{2, 256});
    const auto& q = tf.get("q8_0");
    CHECK(q.dtype == DType::kQ8_0);
    CHECK_EQ(q.shape, std::vector<int64_t>{2, 128});
    CHECK_EQ(q.nbytes, 272u);
    CHECK(tf.get("q4_K").dtype == DType::kQ4_K);
    CHECK(tf.get("q6_K").dtype == DType::kQ6_K);
    CHECK(tf.get("bf16").dtype == DType::kBF16);
    CHECK(tf.get("f16").dtype == DType::kF16);
    // With alignment 64 honoured, the first f32 of src is a sane value, not header bytes.
    float first;
    std::memcpy(&first, src.data, 4);
    CHECK(std::fabs(first) < 5.f);
  }
}

TEST_CASE("[loopus] io: GgufWriter typed round trip (meta and bytes identical)") {
  const auto dir = loopus::test::temp_dir("io_gguf_rt");
  std::vector<float> f32(3 * 64);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = float(i) * 0.125f - 7.f;  // exact: the same bytes on every machine
  std::vector<uint16_t> f16(10), bf16(6);
  for (size_t i = 0; i < f16.size(); ++i) f16[i] = loopus::f32_to_f16(float(i) / 3);
  for (size_t i = 0; i < bf16.size(); ++i) bf16[i] = loopus::f32_to_bf16(float(i) * -7.25f);
  std::vector<unsigned char> q8(2 * 34);
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = uint8_t(i * 37 + 1);
  std::vector<int32_t> i32 = {-5, 0, 5};

  io::GgufWriter w;
  w.set_str("general.architecture", "llama");
  w.set_u8("t.u8", 250);
  w.set_i8("t.i8", -7);
  w.set_u16("t.u16", 65535);
  w.set_i16("t.i16", -32768);
  w.set_u32("t.u32", 4294967295u);
  w.set_i32("t.i32", -1);
  w.set_u64("t.u64", 18446744073709551615ull);
  w.set_i64("t.i64", -9223372036854775807ll - 1);
  w.set_f32("t.f32", 1e-5f);
  w.set_f64("t.f64", 1.0 / 3.0);
  w.set_bool("t.bool", false);
  w.set_str("t.bytes", std::string("\x80\x00z", 3));
  w.set_arr_str("t.arr_str", {"\xe2\x96\x81the", "", "x"});
  w.set_arr_f32("t.arr_f32", {1.5f, -0.1f});
  w.set_arr_i32("t.arr_i32", {-1, 2});
  w.set_arr_u32("t.arr_u32", {7});
  w.set_arr_u8("t.arr_u8", {});
  w.set_arr_i64("t.arr_i64", {-(int64_t(1) << 40)});
  w.set_arr_u64("t.arr_u64", {uint64_t(1) << 63});
  w.set_arr_f64("t.arr_f64", {0.1});
  w.set_arr_bool("t.arr_bool", {true, true, false});
  w.set("t.nested", json::array({json::array({1, 2}), json::array()}), io::GgufType::kU16);
  w.set_json("t.json_u", 5u);
  w.set_json("t.json_i", -5);
  w.set_json("t.json_big", uint64_t(1) << 40);
  w.set_u32("t.replaced", 1);
  w.set_u32("t.replaced", 2);
  w.add_tensor("w.f32", DType::kF32, {3, 64}, f32.data());
  w.add_tensor("w.f16", DType::kF16, {10}, f16.data());
  w.add_tensor("w.bf16", DType::kBF16, {2, 3}, bf16.data());
  w.add_tensor("w.q8", DType::kQ8_0, {1, 64}, q8.data(), q8.size());
  w.add_tensor("w.i32", DType::kI32, {3}, i32.data());
  w.add_tensor("w.empty", DType::kF32, {0, 4}, nullptr);
  CHECK_EQ(w.kv_count(), 27u);
  const auto path = dir / "rt.gguf";
  w.write(path.string());
  for (const auto& e : fs::directory_iterator(dir))
    CHECK_MESSAGE(e.path().filename() == "rt.gguf", "leftover " << e.path());

  const json want = {
      {"general.architecture", "llama"},
      {"t.u8", uint64_t(250)},
      {"t.i8", int64_t(-7)},
      {"t.u16", uint64_t(65535)},
      {"t.i16", int64_t(-32768)},
      {"t.u32", uint64_t(4294967295u)},
      {"t.i32", int64_t(-1)},
      {"t.u64", uint64_t(18446744073709551615ull)},
      {"t.i64", int64_t(-9223372036854775807ll - 1)},
      {"t.f32", double(1e-5f)},
      {"t.f64", 1.0 / 3.0},
      {"t.bool", false},
      {"t.bytes", std::string("\x80\x00z", 3)},
      {"t.arr_str", {"\xe2\x96\x81the", "", "x"}},
      {"t.arr_f32", {double(1.5f), double(-0.1f)}},
      {"t.arr_i32", {int64_t(-1), int64_t(2)}},
      {"t.arr_u32", {uint64_t(7)}},
      {"t.arr_u8", json::array()},
      {"t.arr_i64", {-(int64_t(1) << 40)}},
      {"t.arr_u64", {uint64_t(1) << 63}},
      {"t.arr_f64", {0.1}},
      {"t.arr_bool", {true, true, false}},
      {"t.nested", {{uint64_t(1), uint64_t(2)}, json::array()}},
      {"t.json_u", uint64_t(5)},
      {"t.json_i", int64_t(-5)},
      {"t.json_big", uint64_t(1) << 40},
      {"t.replaced", uint64_t(2)},
  };
  // and gguf-py read this very file (tests/reference/check_writers.py): every type and value as written
  loopus::test::check_writer_golden("gguf_typed", path, io::open_gguf(path.string()), true);
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_gguf(path.string(), mode);
    CHECK(same_typed(tf.meta, want));
    REQUIRE_EQ(tf.tensors.size(), 6u);
    CHECK_EQ(tf.tensors[0].name, "w.f32");  // file order kept
    CHECK_EQ(tf.get("w.f32").shape, std::vector<int64_t>{3, 64});
    CHECK(bytes_of(tf.get("w.f32")) == std::string(reinterpret_cast<const char*>(f32.data()), f32.size() * 4));
    CHECK(bytes_of(tf.get("w.f16")) == std::string(reinterpret_cast<const char*>(f16.data()), 20));
    CHECK(bytes_of(tf.get("w.bf16")) == std::string(reinterpret_cast<const char*>(bf16.data()), 12));
    CHECK(bytes_of(tf.get("w.q8")) == std::string(reinterpret_cast<const char*>(q8.data()), q8.size()));
    CHECK(tf.get("w.q8").dtype == DType::kQ8_0);
    CHECK(bytes_of(tf.get("w.i32")) == std::string(reinterpret_cast<const char*>(i32.data()), 12));
    CHECK_EQ(tf.get("w.empty").shape, std::vector<int64_t>{0, 4});
    CHECK_EQ(tf.get("w.empty").nbytes, 0u);
  }
}

TEST_CASE("[loopus] io: write_gguf(meta json) round-trips stories260K, and custom alignment") {
  const auto src = io::open_gguf(loopus::test::data_file("models/stories260K/stories260K.gguf"));
  const auto dir = loopus::test::temp_dir("io_gguf_rewrite");
  const auto p = (dir / "copy.gguf").string();
  io::write_gguf(p, src.meta, src.tensors);
  const auto back = io::open_gguf(p);
  CHECK(same_typed(back.meta, src.meta));  // u32 / i32 / f32 / string / arrays kept
  check_same_tensors(src, back);

  const auto p2 = (dir / "aligned.gguf").string();
  io::write_gguf(p2, {{"general.architecture", "llama"}}, {src.get("output_norm.weight"), src.get("blk.0.ffn_norm.weight")},
                 256);
  const auto a2 = io::open_gguf(p2, io::LoadMode::kMmap);
  CHECK_EQ(a2.meta["general.alignment"], 256);
  // The mapping is page-aligned, so 256-aligned offsets give 256-aligned pointers.
  for (const auto& r : a2.tensors) CHECK_EQ(reinterpret_cast<uintptr_t>(r.data) % 256, 0u);
  check_same_tensors(a2, io::open_gguf(p2));
}

TEST_CASE("[loopus] io: GgufWriter rejects bad input") {
  float x[64] = {};
  io::GgufWriter w;
  w.add_tensor("a", DType::kF32, {64}, x);
  CHECK_THROWS_WITH_AS(w.add_tensor("a", DType::kF32, {64}, x), doctest::Contains("'a'"), loopus::Error);
  CHECK_THROWS_AS(w.add_tensor("q", DType::kQ8_0, {33}, x), loopus::Error);
  CHECK_THROWS_AS(w.add_tensor(std::string(64, 'n'), DType::kF32, {1}, x), loopus::Error);
  CHECK_THROWS_AS(w.add_tensor("five", DType::kF32, {1, 1, 1, 1, 1}, x), loopus::Error);
  CHECK_THROWS_AS(w.add_tensor("sz", DType::kF32, {4}, x, 12), loopus::Error);
  CHECK_THROWS_AS(w.set("k", json("str"), io::GgufType::kU32), loopus::Error);
  CHECK_THROWS_AS(w.set("k", json(300), io::GgufType::kU8), loopus::Error);
  CHECK_THROWS_AS(w.set("k", json(-1), io::GgufType::kU64), loopus::Error);
  CHECK_THROWS_AS(w.set("k", json::array({1, json::array({2})}), io::GgufType::kI32), loopus::Error);
  CHECK_THROWS_AS(w.set_json("k", json::object()), loopus::Error);
  CHECK_THROWS_AS(w.set_json("k", json::array({1, "a"})), loopus::Error);
  CHECK_THROWS_AS(w.set_u32("general.alignment", 48), loopus::Error);
  CHECK_THROWS_AS(io::GgufWriter(0), loopus::Error);
  const auto dir = loopus::test::temp_dir("io_gguf_bad_write");
  CHECK_THROWS_WITH_AS(w.write((dir / "no_such_dir" / "x.gguf").string()), doctest::Contains("x.gguf"),
                       loopus::Error);
  CHECK_THROWS_WITH_AS(io::write_gguf((dir / "m.gguf").string(), {{"k", nullptr}}, {}),
                       doctest::Contains("m.gguf"), loopus::Error);
  CHECK(fs::is_empty(dir));
}

TEST_CASE("[loopus] io: open_gguf rejects malformed files with the file name in the error") {
  const auto dir = loopus::test::temp_dir("io_gguf_bad");
  const SmallGguf base;
  const std::string& good = base.g.b;
  {
    const auto p = dir / "good.gguf";
    write_bytes(p, good);
    const auto tf = io::open_gguf(p.string());
    CHECK_EQ(tf.get("ta").shape, std::vector<int64_t>{2, 8});
    CHECK_EQ(reinterpret_cast<const float*>(tf.get("ta").data)[15], 11.5f);
    CHECK_EQ(reinterpret_cast<const float*>(tf.get("tb").data)[3], 103.f);
    CHECK_EQ(tf.meta["tokenizer.ggml.tokens"], json({"<s>", "a", "b"}));
    // GGUF v2 has the same layout as v3.
    Builder v2{good};
    v2.set_u32(4, 2);
    write_bytes(dir / "v2.gguf", v2.b);
    const auto tf2 = io::open_gguf((dir / "v2.gguf").string(), io::LoadMode::kMmap);
    CHECK_EQ(tf2.meta, tf.meta);
    CHECK(bytes_of(tf2.get("ta")) == bytes_of(tf.get("ta")));
  }
  auto variant = [&](const std::string& name, const std::function<void(Builder&)>& edit,
                     const std::string& needle) {
    Builder b{good};
    edit(b);
    const auto p = dir / name;
    write_bytes(p, b.b);
    expect_gguf_error(p, needle);
  };

  SUBCASE("truncated at many offsets, including mid-tensor") {
    const size_t cuts[] = {0, 2, 4, 7, 12, 20, 26, base.key0_len_at + 10, base.arr_count_at + 4,
                           base.ta_name_at + 9, base.ta_ne0_at + 3, base.tb_off_at + 4,
                           base.data_start + 10, good.size() - 1};
    for (size_t cut : cuts) {
      const auto p = dir / ("trunc_" + std::to_string(cut) + ".gguf");
      write_bytes(p, good.substr(0, cut));
      expect_gguf_error(p);
    }
    // The data section's own error says which tensor ends past EOF.
    const auto p = dir / "trunc_data.gguf";
    write_bytes(p, good.substr(0, good.size() - 4));
    expect_gguf_error(p, "tensor 'tb'");
  }
  SUBCASE("header fields") {
    variant("magic.gguf", [](Builder& b) { b.b[3] = 'X'; }, "magic");
    variant("v1.gguf", [](Builder& b) { b.set_u32(4, 1); }, "v1");
    variant("v9.gguf", [](Builder& b) { b.set_u32(4, 9); }, "version 9");
    variant("bigendian.gguf", [](Builder& b) { b.set_u32(4, 0x03000000u); }, "big-endian");
    variant("ntensors.gguf", [&](Builder& b) { b.set_u64(base.n_tensors_at, uint64_t(1) << 60); }, "tensors");
    variant("keylen.gguf", [&](Builder& b) { b.set_u64(base.key0_len_at, uint64_t(1) << 62); }, "past EOF");
    variant("arrlen.gguf", [&](Builder& b) { b.set_u64(base.arr_count_at, uint64_t(1) << 60); },
            "tokenizer.ggml.tokens");
    variant("kvtype.gguf", [&](Builder& b) { b.set_u32(base.key0_len_at + 8 + 20, 13); }, "type id 13");
  }
  SUBCASE("tensor infos") {
    variant("offset_eof.gguf", [&](Builder& b) { b.set_u64(base.tb_off_at, uint64_t(1) << 40); }, "past EOF");
    variant("offset_wrap.gguf", [&](Builder& b) { b.set_u64(base.tb_off_at, ~uint64_t(31)); }, "tensor 'tb'");
    variant("misaligned.gguf", [&](Builder& b) { b.set_u64(base.tb_off_at, 65); }, "alignment");
    variant("ndims5.gguf", [&](Builder& b) { b.set_u32(base.ta_ndims_at, 5); }, "5 dimensions");
    variant("overflow.gguf", [&](Builder& b) {
      b.set_u64(base.ta_ne0_at, uint64_t(1) << 40);
      b.set_u64(base.ta_ne0_at + 8, uint64_t(1) << 40);
    }, "overflow");
    variant("negdim.gguf", [&](Builder& b) { b.set_u64(base.ta_ne0_at, ~uint64_t(0)); }, "tensor 'ta'");
    variant("type99.gguf", [&](Builder& b) { b.set_u32(base.ta_type_at, 99); }, "type id 99");
    variant("type_q5k.gguf", [&](Builder& b) { b.set_u32(base.ta_type_at, 13); }, "q5_K");
    variant("blocks.gguf", [&](Builder& b) { b.set_u32(base.ta_type_at, 8); }, "block size");
    variant("dup.gguf", [&](Builder& b) { b.b[base.tb_name_at + 9] = 'a'; }, "duplicate tensor 'ta'");
  }
  SUBCASE("hand-made headers: nesting bomb, bad alignment, duplicate key") {
    auto header = [](uint64_t n_kv) {
      Builder b;
      b.u32(io::kGgufMagic);
      b.u32(3);
      b.u64(0);
      b.u64(n_kv);
      return b;
    };
    Builder deep = header(1);
    deep.str("deep");
    deep.u32(9);
    for (int i = 0; i < 100; ++i) {
      deep.u32(9);
      deep.u64(1);
    }
    write_bytes(dir / "deep.gguf", deep.b);
    expect_gguf_error(dir / "deep.gguf", "deep");

    Builder al = header(1);
    al.str("general.alignment");
    al.u32(4);
    al.u32(3);
    write_bytes(dir / "align3.gguf", al.b);
    expect_gguf_error(dir / "align3.gguf", "alignment");

    Builder dk = header(2);
    for (int i = 0; i < 2; ++i) {
      dk.str("k");
      dk.u32(7);
      dk.b.push_back(1);
    }
    write_bytes(dir / "dupkey.gguf", dk.b);
    expect_gguf_error(dir / "dupkey.gguf", "duplicate metadata key 'k'");

    // A vocab-only file (no tensors, no data section) is valid.
    Builder vo = header(1);
    vo.str("k");
    vo.u32(7);
    vo.b.push_back(1);
    write_bytes(dir / "vocab_only.gguf", vo.b);
    const auto tf = io::open_gguf((dir / "vocab_only.gguf").string(), io::LoadMode::kMmap);
    CHECK(tf.tensors.empty());
    CHECK_EQ(tf.meta["k"], true);
  }
  CHECK_THROWS_WITH_AS(io::open_gguf((dir / "missing.gguf").string()), doctest::Contains("missing.gguf"),
                       loopus::Error);
  CHECK_THROWS_WITH_AS(io::open_gguf(dir.string()), doctest::Contains("directory"), loopus::Error);
}

TEST_CASE("[loopus] io: GgufWriter output equals the file gguf-py checked (python cross-check, tests/golden/writers.json)") {
  // Leaves ours.gguf in $TMPDIR/loopus_test_io_pycheck_gguf for tests/reference/check_writers.py to read.
  const auto dir = loopus::test::temp_dir("io_pycheck_gguf");
  std::vector<float> a(2 * 32);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f - 3.f;
  std::vector<uint16_t> b(3);
  for (size_t i = 0; i < b.size(); ++i) b[i] = loopus::f32_to_f16(float(i) + 0.5f);
  io::GgufWriter w;
  w.set_str("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_arr_str("tokenizer.ggml.tokens", {"<unk>", "\xe2\x96\x81hi"});
  w.set_arr_i32("tokenizer.ggml.token_type", {2, 1});
  w.add_tensor("a", DType::kF32, {2, 32}, a.data());
  w.add_tensor("b", DType::kF16, {3}, b.data());
  w.write((dir / "ours.gguf").string());
  // tests/reference/check_writers.py read this file with gguf-py, checked every value and recorded its hash
  loopus::test::check_writer_golden("gguf", dir / "ours.gguf", io::open_gguf((dir / "ours.gguf").string()), true);
}
