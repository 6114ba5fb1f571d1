// Tests for io/llama2c.hpp: stories260K.bin equals stories260K.gguf; v1 / v2 / unshared variants; bad files.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/io/llama2c.hpp"
#include "test_util.hpp"

using loopus::DType;
using nlohmann::json;
namespace io = loopus::io;
namespace fs = std::filesystem;

namespace {

using test::write_bytes;
std::string bytes_of(const io::TensorRecord& r) { return std::string(static_cast<const char*>(r.data), r.nbytes); }
template <class T> void put(std::string& b, T v) { b.append(reinterpret_cast<const char*>(&v), sizeof(T)); }

const int kL = 5;  // stories260K layers

/// Appends the GGUF tensors named by pattern ("{}" = layer) for every layer.
void put_layers(std::string& b, const io::TensorFile& g, const std::string& pat) {
  for (int l = 0; l < kL; ++l) {
    const auto at = pat.find("{}");
    b += bytes_of(g.get(pat.substr(0, at) + std::to_string(l) + pat.substr(at + 2)));
  }
}

void expect_l2c_error(const fs::path& p, const std::string& needle = "") {
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const std::string fname = p.filename().string();
    CAPTURE(fname);
    CAPTURE(needle);
    bool threw = false;
    try {
      (void)io::open_llama2c(p.string(), mode);
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

/// Every llama2.c tensor must equal the same-named GGUF tensor bit for bit.
void check_against_gguf(const io::TensorFile& bin, const io::TensorFile& gguf) {
  for (const auto& r : bin.tensors) {
    CAPTURE(r.name);
    const auto* g = gguf.find(r.name);
    REQUIRE(g);
    CHECK(r.dtype == DType::kF32);
    CHECK_EQ(r.shape, g->shape);
    CHECK_EQ(r.nbytes, g->nbytes);
    CHECK(bytes_of(r) == bytes_of(*g));
  }
}

}  // namespace

TEST_CASE("[loopus] io: open_llama2c stories260K.bin equals stories260K.gguf bit for bit") {
  const auto gguf = io::open_gguf(loopus::test::data_file("models/stories260K/stories260K.gguf"));
  const auto path = loopus::test::data_file("models/stories260K/stories260K.bin");
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto tf = io::open_llama2c(path, mode);
    CHECK_EQ(tf.format, "llama2c");
    CHECK_EQ(tf.tensors.size(), 47u);  // 48 in the GGUF minus output.weight (shared classifier)
    CHECK_FALSE(tf.find("output.weight"));
    check_against_gguf(tf, gguf);
    CHECK_EQ(tf.get("blk.4.attn_k.weight").shape, std::vector<int64_t>{32, 64});
    CHECK_EQ(tf.get("blk.0.ffn_down.weight").shape, std::vector<int64_t>{64, 172});
    const json& m = tf.meta;
    CHECK_EQ(m["general.architecture"], "llama");
    CHECK_EQ(m["llama.context_length"], 512);  // the .bin header's seq_len (the GGUF says 2048)
    CHECK_EQ(m["llama.vocab_size"], 512);
    for (const char* k : {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
                          "llama.attention.head_count", "llama.attention.head_count_kv",
                          "llama.rope.dimension_count", "llama.attention.layer_norm_rms_epsilon"}) {
      const std::string key = k;
      CAPTURE(key);
      CHECK_EQ(m[k].type(), gguf.meta[k].type());
      CHECK_EQ(m[k], gguf.meta[k]);
    }
    CHECK_EQ(m["llama.rope.freq_base"].get<double>(), 10000.0);
  }
}

TEST_CASE("[loopus] io: open_llama2c version 1 (ak42) and legacy unshared classifier") {
  const auto g = io::open_gguf(loopus::test::data_file("models/stories260K/stories260K.gguf"));
  const auto dir = loopus::test::temp_dir("io_l2c");
  // A distinct classifier, so "unshared" is visible.
  std::vector<float> cls(512 * 64);
  for (size_t i = 0; i < cls.size(); ++i) cls[i] = float(i % 97) * 0.01f - 0.3f;
  const std::string cls_bytes(reinterpret_cast<const char*>(cls.data()), cls.size() * 4);

  SUBCASE("v1, unshared") {
    std::string b;
    put<uint32_t>(b, 0x616b3432u);
    put<int32_t>(b, 1);
    for (int32_t v : {64, 172, 5, 8, 4, 512, 512}) put(b, v);
    b.push_back('\0');  // shared_classifier = false
    b.resize(256, '\0');
    put_layers(b, g, "blk.{}.attn_norm.weight");
    put_layers(b, g, "blk.{}.ffn_norm.weight");
    b += bytes_of(g.get("output_norm.weight"));
    b += bytes_of(g.get("token_embd.weight"));
    for (const char* p : {"blk.{}.attn_q.weight", "blk.{}.attn_k.weight", "blk.{}.attn_v.weight",
                          "blk.{}.attn_output.weight", "blk.{}.ffn_gate.weight", "blk.{}.ffn_down.weight",
                          "blk.{}.ffn_up.weight"})
      put_layers(b, g, p);
    b += cls_bytes;
    write_bytes(dir / "v1.bin", b);
    for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
      const auto tf = io::open_llama2c((dir / "v1.bin").string(), mode);
      CHECK_EQ(tf.tensors.size(), 48u);
      CHECK_EQ(tf.meta["llama2c.version"], 1);
      CHECK(bytes_of(tf.get("output.weight")) == cls_bytes);
      CHECK_EQ(tf.get("output.weight").shape, std::vector<int64_t>{512, 64});
      io::TensorFile rest;
      for (const auto& r : tf.tensors)
        if (r.name != "output.weight") rest.add(r);
      check_against_gguf(rest, g);
    }
    write_bytes(dir / "v1_short.bin", b.substr(0, b.size() - 4));
    expect_l2c_error(dir / "v1_short.bin", "truncated");
  }
  SUBCASE("legacy v0, unshared (negative vocab size)") {
    std::string b;
    for (int32_t v : {64, 172, 5, 8, 4, -512, 512}) put(b, v);
    b += bytes_of(g.get("token_embd.weight"));
    put_layers(b, g, "blk.{}.attn_norm.weight");
    for (const char* p : {"blk.{}.attn_q.weight", "blk.{}.attn_k.weight", "blk.{}.attn_v.weight",
                          "blk.{}.attn_output.weight"})
      put_layers(b, g, p);
    put_layers(b, g, "blk.{}.ffn_norm.weight");
    for (const char* p : {"blk.{}.ffn_gate.weight", "blk.{}.ffn_down.weight", "blk.{}.ffn_up.weight"})
      put_layers(b, g, p);
    b += bytes_of(g.get("output_norm.weight"));
    b.append(2 * 512 * 4 * 4, '\0');  // freq_cis real + imag: seq_len * head_size / 2 floats each
    b += cls_bytes;
    write_bytes(dir / "v0u.bin", b);
    const auto tf = io::open_llama2c((dir / "v0u.bin").string());
    CHECK_EQ(tf.tensors.size(), 48u);
    CHECK_EQ(tf.meta["llama.vocab_size"], 512);
    CHECK(bytes_of(tf.get("output.weight")) == cls_bytes);
    CHECK(bytes_of(tf.get("output_norm.weight")) == bytes_of(g.get("output_norm.weight")));
  }
}

TEST_CASE("[loopus] io: open_llama2c version 2 (int8 groups) dequantizes on load") {
  const auto dir = loopus::test::temp_dir("io_l2c_v2");
  const int d = 8, ff = 16, heads = 2, kvh = 1, V = 4, gs = 8;
  const int kv = kvh * (d / heads);
  std::string b;
  put<uint32_t>(b, 0x616b3432u);
  put<int32_t>(b, 2);
  for (int32_t v : {d, ff, 1, heads, kvh, V, 2}) put(b, v);
  b.push_back('\1');  // shared classifier
  put<int32_t>(b, gs);
  b.resize(256, '\0');
  // f32 norms: attn, ffn, final.
  for (int i = 0; i < 3 * d; ++i) put<float>(b, 1.f + float(i));
  struct T {
    const char* name;
    int rows, cols;
  };
  const T ts[] = {{"token_embd.weight", V, d},      {"blk.0.attn_q.weight", d, d},
                  {"blk.0.attn_k.weight", kv, d},   {"blk.0.attn_v.weight", kv, d},
                  {"blk.0.attn_output.weight", d, d}, {"blk.0.ffn_gate.weight", ff, d},
                  {"blk.0.ffn_down.weight", d, ff}, {"blk.0.ffn_up.weight", ff, d}};
  std::vector<std::vector<float>> want;
  int k = 0;
  for (const T& t : ts) {
    const int n = t.rows * t.cols;
    std::vector<int8_t> q(n);
    std::vector<float> s(n / gs), w(n);
    for (int i = 0; i < n; ++i) q[i] = int8_t((i * 37 + k * 11) % 255 - 127);
    for (int g = 0; g < n / gs; ++g) s[g] = 0.5f + 0.25f * float(g + k);
    for (int i = 0; i < n; ++i) w[i] = float(q[i]) * s[i / gs];
    b.append(reinterpret_cast<const char*>(q.data()), n);
    b.append(reinterpret_cast<const char*>(s.data()), s.size() * 4);
    want.push_back(w);
    ++k;
  }
  write_bytes(dir / "v2.bin", b);
  const auto tf = io::open_llama2c((dir / "v2.bin").string(), io::LoadMode::kMmap);
  CHECK_EQ(tf.tensors.size(), 11u);
  CHECK_EQ(tf.meta["llama2c.version"], 2);
  for (size_t i = 0; i < std::size(ts); ++i) {
    const std::string name = ts[i].name;
    CAPTURE(name);
    const auto& r = tf.get(ts[i].name);
    CHECK_EQ(r.shape, std::vector<int64_t>{ts[i].rows, ts[i].cols});
    std::vector<float> got(size_t(r.numel()));
    std::memcpy(got.data(), r.data, r.nbytes);
    CHECK_EQ(got, want[i]);
  }
  const auto& fn = tf.get("output_norm.weight");
  CHECK_EQ(static_cast<const float*>(fn.data)[0], 1.f + 2 * d);
  CHECK_EQ(static_cast<const float*>(tf.get("blk.0.ffn_norm.weight").data)[d - 1], float(2 * d));
  write_bytes(dir / "v2_extra.bin", b + "xx");
  expect_l2c_error(dir / "v2_extra.bin", "file has");
}

TEST_CASE("[loopus] io: open_llama2c rejects malformed checkpoints with the file name") {
  const auto dir = loopus::test::temp_dir("io_l2c_bad");
  const std::string good = loopus::test::read_text(loopus::test::data_file("models/stories260K/stories260K.bin"));
  REQUIRE_EQ(good.size(), 1056540u);
  for (size_t cut : {size_t(0), size_t(10), size_t(28), size_t(5000), good.size() - 16384 - 4, good.size() - 1}) {
    const auto p = dir / ("trunc_" + std::to_string(cut) + ".bin");
    write_bytes(p, good.substr(0, cut));
    expect_l2c_error(p);
  }
  write_bytes(dir / "long.bin", good + std::string(4, '\0'));
  expect_l2c_error(dir / "long.bin", "1056544");
  auto patched = [&](const std::string& name, int field, int32_t v, const std::string& needle) {
    std::string b = good;
    std::memcpy(&b[size_t(field) * 4], &v, 4);
    write_bytes(dir / name, b);
    expect_l2c_error(dir / name, needle);
  };
  patched("dim0.bin", 0, 0, "dim=0");
  patched("heads.bin", 3, 7, "n_heads");
  patched("kvheads.bin", 4, 3, "n_kv_heads");
  patched("huge.bin", 0, 1 << 30, "implausibly");
  patched("layers.bin", 2, 6, "needs");  // consistent header, wrong size
  std::string v3;
  put<uint32_t>(v3, 0x616b3432u);
  put<int32_t>(v3, 3);
  v3.resize(300, '\0');
  write_bytes(dir / "v3.bin", v3);
  expect_l2c_error(dir / "v3.bin", "version 3");
}
