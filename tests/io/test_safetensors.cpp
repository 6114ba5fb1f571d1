// Tests for io/safetensors.hpp: reference-library golden, byte-identical writer, folders, shards, bad files.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/safetensors.hpp"
#include "io/writer_golden.hpp"
#include "test_util.hpp"

using loopus::DType;
using nlohmann::json;
namespace io = loopus::io;
namespace fs = std::filesystem;

namespace {

using test::write_bytes;
template <class T> std::vector<T> values_of(const io::TensorRecord& r) {
  std::vector<T> v(r.nbytes / sizeof(T));
  if (r.nbytes) std::memcpy(v.data(), r.data, r.nbytes);
  return v;
}
std::string golden_path() { return (loopus::test::source_dir() / "tests/golden/py_written.safetensors").string(); }

/// A safetensors file from a header JSON text and a data section.
std::string st_file(const std::string& header, const std::string& data) {
  std::string b(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  return b + header + data;
}

void expect_st_error(const fs::path& p, const std::string& needle = "") {
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const std::string fname = p.filename().string();
    CAPTURE(fname);
    CAPTURE(needle);
    bool threw = false;
    try {
      (void)io::open_safetensors(p.string(), mode);
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

io::TensorRecord rec(const std::string& name, DType t, std::vector<int64_t> shape, const void* data) {
  io::TensorRecord r;
  r.name = name;
  r.dtype = t;
  r.shape = std::move(shape);
  r.data = data;
  r.nbytes = size_t(r.numel()) * loopus::dtype_size(t);
  return r;
}

}  // namespace

TEST_CASE("[loopus] io: open_safetensors reads a file written by the reference library") {
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_safetensors(golden_path(), mode);
    CHECK_EQ(tf.format, "safetensors");
    CHECK_EQ(tf.tensors.size(), 7u);
    CHECK_EQ(tf.meta["metadata"], json({{"format", "pt"}, {"note", "loopus golden"}}));
    CHECK_FALSE(tf.meta.contains("config"));
    const auto& f32 = tf.get("w.f32");
    CHECK(f32.dtype == DType::kF32);
    CHECK_EQ(f32.shape, std::vector<int64_t>{3, 4});
    const auto v = values_of<float>(f32);
    for (int i = 0; i < 12; ++i) CHECK_EQ(v[i], float(i) * 0.5f - 1.f);
    const auto h = values_of<uint16_t>(tf.get("w.f16"));
    REQUIRE_EQ(h.size(), 5u);
    for (int i = 0; i < 5; ++i) CHECK_EQ(loopus::f16_to_f32(h[i]), float(i) * 0.25f - 0.5f);
    const auto& bf = tf.get("w.bf16");
    CHECK(bf.dtype == DType::kBF16);
    CHECK_EQ(bf.shape, std::vector<int64_t>{2, 3});
    const auto b = values_of<uint16_t>(bf);
    for (int i = 0; i < 6; ++i) CHECK_EQ(loopus::bf16_to_f32(b[i]), float(i) * 1.5f + 2.f);
    CHECK_EQ(values_of<int32_t>(tf.get("w.i32")), std::vector<int32_t>{-1, 0, 7, 2147483647});
    CHECK_EQ(values_of<double>(tf.get("w.f64")), std::vector<double>{1.0 / 3.0, -1e300});
    CHECK_EQ(tf.get("empty").shape, std::vector<int64_t>{0, 3});
    CHECK_EQ(tf.get("empty").nbytes, 0u);
    for (const auto& r : tf.tensors)
      CHECK_EQ(reinterpret_cast<uintptr_t>(r.data) % loopus::dtype_size(r.dtype), 0u);
  }
}

TEST_CASE("[loopus] io: write_safetensors output is byte-identical to the reference library's") {
  const auto tf = io::open_safetensors(golden_path());
  const auto dir = loopus::test::temp_dir("io_st_same");
  // Reverse the input order: the writer must sort like the reference.
  std::vector<io::TensorRecord> ts(tf.tensors.rbegin(), tf.tensors.rend());
  io::write_safetensors((dir / "ours.safetensors").string(), ts, tf.meta["metadata"]);
  CHECK(loopus::test::read_text(dir / "ours.safetensors") == loopus::test::read_text(golden_path()));
  for (const auto& e : fs::directory_iterator(dir))
    CHECK_MESSAGE(e.path().filename() == "ours.safetensors", "leftover " << e.path());
}

TEST_CASE("[loopus] io: safetensors round trip, alignment, realigned odd files") {
  const auto dir = loopus::test::temp_dir("io_st_rt");
  const std::vector<uint16_t> h = {1, 2, 3};
  const std::vector<float> f = {1.5f, -2.f, 1e-20f, 7.f, 8.f};
  const std::vector<double> d = {0.1};
  const auto p = (dir / "rt.safetensors").string();
  io::write_safetensors(p, {rec("z.f16", DType::kF16, {3}, h.data()), rec("a.f32", DType::kF32, {5, 1}, f.data()),
                            rec("m.f64", DType::kF64, {1}, d.data())});
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_safetensors(p, mode);
    CHECK_FALSE(tf.meta.contains("metadata"));
    CHECK_EQ(values_of<uint16_t>(tf.get("z.f16")), h);
    CHECK_EQ(values_of<float>(tf.get("a.f32")), f);
    CHECK_EQ(tf.get("a.f32").shape, std::vector<int64_t>{5, 1});
    CHECK_EQ(values_of<double>(tf.get("m.f64")), d);
    for (const auto& r : tf.tensors)
      CHECK_EQ(reinterpret_cast<uintptr_t>(r.data) % loopus::dtype_size(r.dtype), 0u);
  }
  // A file another writer laid out badly: an f32 right after 3 f16s (byte offset 6).
  const std::string data = std::string("\x01\x00\x02\x00\x03\x00", 6) +
                           std::string(reinterpret_cast<const char*>(f.data()), 20);
  const auto odd = dir / "odd.safetensors";
  write_bytes(odd, st_file(R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
                           R"("f":{"dtype":"F32","shape":[5],"data_offsets":[6,26]}})",
                           data));
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_safetensors(odd.string(), mode);
    CHECK_EQ(reinterpret_cast<uintptr_t>(tf.get("f").data) % 4, 0u);
    CHECK_EQ(values_of<float>(tf.get("f")), f);
    CHECK_EQ(values_of<uint16_t>(tf.get("h")), h);
  }
}

TEST_CASE("[loopus] io: open_safetensors folders: config.json, model.safetensors, sharded index") {
  const auto root = loopus::test::temp_dir("io_st_dirs");
  const std::vector<float> a = {1, 2, 3, 4}, b = {5, 6}, c = {7};
  const json config = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 64}, {"rms_norm_eps", 1e-5}};

  SUBCASE("single model.safetensors") {
    const auto dir = root / "single";
    fs::create_directories(dir);
    io::write_safetensors((dir / "model.safetensors").string(), {rec("a", DType::kF32, {2, 2}, a.data())},
                          {{"format", "pt"}});
    write_bytes(dir / "config.json", config.dump());
    const auto tf = io::open_safetensors(dir.string());
    CHECK_EQ(tf.path, dir.string());
    CHECK_EQ(tf.meta["config"], config);
    CHECK_EQ(tf.meta["metadata"]["format"], "pt");
    CHECK_EQ(values_of<float>(tf.get("a")), a);
    // A single file does not pick up its folder's config.json.
    CHECK_FALSE(io::open_safetensors((dir / "model.safetensors").string()).meta.contains("config"));
    write_bytes(dir / "config.json", "{not json");
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("config.json"), loopus::Error);
  }
  SUBCASE("sharded") {
    const auto dir = root / "sharded";
    fs::create_directories(dir);
    io::write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                          {rec("a", DType::kF32, {4}, a.data()), rec("b", DType::kF32, {2}, b.data())},
                          {{"format", "pt"}, {"shard", "1"}});
    io::write_safetensors((dir / "model-00002-of-00002.safetensors").string(), {rec("c", DType::kF32, {1}, c.data())},
                          {{"shard", "2"}});
    json index = {{"metadata", {{"total_size", 28}}},
                  {"weight_map",
                   {{"a", "model-00001-of-00002.safetensors"},
                    {"b", "model-00001-of-00002.safetensors"},
                    {"c", "model-00002-of-00002.safetensors"}}}};
    write_bytes(dir / "model.safetensors.index.json", index.dump());
    write_bytes(dir / "config.json", config.dump());
    for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
      for (const auto& p : {dir, dir / "model.safetensors.index.json"}) {
        const auto tf = io::open_safetensors(p.string(), mode);
        CHECK_EQ(tf.tensors.size(), 3u);
        CHECK_EQ(values_of<float>(tf.get("a")), a);
        CHECK_EQ(values_of<float>(tf.get("b")), b);
        CHECK_EQ(values_of<float>(tf.get("c")), c);
        CHECK_EQ(tf.meta["config"], config);
        CHECK_EQ(tf.meta["metadata"]["format"], "pt");
        CHECK_EQ(tf.meta["metadata"]["shard"], "2");  // later shards win on key clashes
        if (mode == io::LoadMode::kMmap) CHECK_EQ(tf.mappings.size(), 2u);
      }
    }
    // Tensor listed under the wrong shard.
    index["weight_map"]["c"] = "model-00001-of-00002.safetensors";
    write_bytes(dir / "model.safetensors.index.json", index.dump());
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("tensor 'c'"), loopus::Error);
    // Missing shard.
    index["weight_map"]["c"] = "model-00003-of-00002.safetensors";
    write_bytes(dir / "model.safetensors.index.json", index.dump());
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("model-00003-of-00002"),
                         loopus::Error);
    // Path escaping the folder.
    index["weight_map"]["c"] = "../x.safetensors";
    write_bytes(dir / "model.safetensors.index.json", index.dump());
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("../x.safetensors"), loopus::Error);
    // The same tensor in two shards.
    io::write_safetensors((dir / "model-00002-of-00002.safetensors").string(),
                          {rec("c", DType::kF32, {1}, c.data()), rec("a", DType::kF32, {4}, a.data())});
    index["weight_map"]["c"] = "model-00002-of-00002.safetensors";
    write_bytes(dir / "model.safetensors.index.json", index.dump());
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("tensor 'a'"), loopus::Error);
    write_bytes(dir / "model.safetensors.index.json", "[1,2]");
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("weight_map"), loopus::Error);
  }
  SUBCASE("empty folder") {
    const auto dir = root / "empty";
    fs::create_directories(dir);
    CHECK_THROWS_WITH_AS(io::open_safetensors(dir.string()), doctest::Contains("model.safetensors"), loopus::Error);
  }
}

TEST_CASE("[loopus] io: open_safetensors rejects malformed files with file and tensor names") {
  const auto dir = loopus::test::temp_dir("io_st_bad");
  const std::string f8(8, '\0');
  auto one = [&](const std::string& name, const std::string& header, const std::string& data,
                 const std::string& needle) {
    write_bytes(dir / name, st_file(header, data));
    expect_st_error(dir / name, needle);
  };
  write_bytes(dir / "tiny.safetensors", "abc");
  expect_st_error(dir / "tiny.safetensors", "too small");
  {
    std::string b = st_file("{}", "");
    const uint64_t big = uint64_t(1) << 50;
    std::memcpy(b.data(), &big, 8);
    write_bytes(dir / "hlen.safetensors", b);
    expect_st_error(dir / "hlen.safetensors", "past EOF");
  }
  one("json.safetensors", R"({"a":{"dtype":)", f8, "JSON");
  one("array.safetensors", "[1,2]", f8, "JSON object");
  one("nodtype.safetensors", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f8, "tensor 'a'");
  one("dtype.safetensors", R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", f8, "F8_E4M3");
  one("dtype2.safetensors", R"({"w.q":{"dtype":"Q9","shape":[2],"data_offsets":[0,2]}})", f8, "tensor 'w.q'");
  one("eof.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f8, "past EOF");
  one("mismatch.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f8, "needs 12");
  one("order.safetensors", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f8, "tensor 'a'");
  one("overlap.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}})",
      f8, "overlap");
  one("negshape.safetensors", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8, "shape");
  one("bigshape.safetensors",
      R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", f8, "tensor 'a'");
  one("offsets.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", f8, "data_offsets");
  one("badutf8.safetensors", "{\"\xff\":1}", f8, "JSON");
  // Truncated copies of a valid file: every cut must fail cleanly.
  {
    const std::vector<float> a = {1, 2, 3, 4};
    io::write_safetensors((dir / "good.safetensors").string(), {rec("a", DType::kF32, {4}, a.data())});
    const std::string good = loopus::test::read_text(dir / "good.safetensors");
    for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(20), good.size() - 17, good.size() - 1}) {
      const auto p = dir / ("trunc_" + std::to_string(cut) + ".safetensors");
      write_bytes(p, good.substr(0, cut));
      expect_st_error(p);
    }
  }
  CHECK_THROWS_WITH_AS(io::open_safetensors((dir / "nope.safetensors").string()),
                       doctest::Contains("nope.safetensors"), loopus::Error);
}

TEST_CASE("[loopus] io: write_safetensors rejects bad input and leaves no file") {
  const auto dir = loopus::test::temp_dir("io_st_badwrite");
  const std::vector<float> a = {1, 2};
  const auto p = (dir / "x.safetensors").string();
  auto q = rec("q", DType::kF32, {2}, a.data());
  q.dtype = DType::kQ8_0;
  CHECK_THROWS_WITH_AS(io::write_safetensors(p, {q}), doctest::Contains("q8_0"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::write_safetensors(p, {rec("a", DType::kF32, {2}, a.data()), rec("a", DType::kF32, {2}, a.data())}),
                       doctest::Contains("'a'"), loopus::Error);
  auto wrong = rec("w", DType::kF32, {2}, a.data());
  wrong.nbytes = 4;
  CHECK_THROWS_WITH_AS(io::write_safetensors(p, {wrong}), doctest::Contains("'w'"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::write_safetensors(p, {rec("a", DType::kF32, {2}, a.data())}, {{"n", 1}}),
                       doctest::Contains("'n'"), loopus::Error);
  CHECK(fs::is_empty(dir));
}

TEST_CASE("[loopus] io: safetensors writer output equals the file the reference library checked (python cross-check)") {
  // Leaves ours.safetensors in $TMPDIR/loopus_test_io_pycheck_st for tests/reference/check_writers.py to read.
  const auto dir = loopus::test::temp_dir("io_pycheck_st");
  std::vector<float> f(2 * 3);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(i) * 0.5f - 1.f;
  std::vector<uint16_t> h(4), bf(3);
  for (size_t i = 0; i < h.size(); ++i) h[i] = loopus::f32_to_f16(float(i) + 0.25f);
  for (size_t i = 0; i < bf.size(); ++i) bf[i] = loopus::f32_to_bf16(float(i) * -2.f);
  const std::vector<int32_t> n = {-3, 4};
  io::write_safetensors((dir / "ours.safetensors").string(),
                        {rec("x.f16", DType::kF16, {4}, h.data()), rec("x.f32", DType::kF32, {2, 3}, f.data()),
                         rec("x.bf16", DType::kBF16, {3, 1}, bf.data()), rec("x.i32", DType::kI32, {2}, n.data())},
                        {{"format", "pt"}, {"by", "loopus"}});
  // tests/reference/check_writers.py read this file with the safetensors package, checked every value and
  // recorded its hash
  const auto path = dir / "ours.safetensors";
  loopus::test::check_writer_golden("safetensors", path, io::open_safetensors(path.string()), false);
  CHECK_EQ(io::open_safetensors(path.string()).meta["metadata"], json({{"format", "pt"}, {"by", "loopus"}}));
}
