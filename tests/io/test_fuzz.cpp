// Mutation fuzzing of the loaders: any corrupted file must load or throw loopus::Error, nothing else.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "loopus/io/load.hpp"
#include "loopus/io/quant.hpp"
#include "test_util.hpp"

using loopus::DType;
namespace io = loopus::io;
namespace fs = std::filesystem;

namespace {

using test::write_bytes;

/// Applies 1-4 random edits (byte overwrite with random / extreme values, or a truncation).
std::string mutate(const std::string& in, std::mt19937_64& rng, size_t hot_prefix) {
  std::string b = in;
  const int edits = 1 + int(rng() % 4);
  for (int e = 0; e < edits && !b.empty(); ++e) {
    // Most edits hit the header, where the parsing happens.
    const size_t span = (rng() % 4 != 0 && hot_prefix < b.size()) ? hot_prefix : b.size();
    const size_t at = size_t(rng() % span);
    switch (rng() % 6) {
      case 0: b.resize(at); break;
      case 1: b[at] = char(0xff); break;
      case 2: b[at] = char(0); break;
      case 3: b[at] = char(b[at] ^ (1 << (rng() % 8))); break;
      default: b[at] = char(rng() % 256); break;
    }
  }
  return b;
}

/// Opens every mutant; counts loads and Errors, fails on any other exception.
void fuzz(const std::string& base, size_t hot_prefix, int iters, uint64_t seed, const fs::path& file,
          const std::function<io::TensorFile(const std::string&, io::LoadMode)>& open) {
  std::mt19937_64 rng(seed);
  // LOOPUS_FUZZ_SCALE=N runs N times more mutants (for a manual deep run, e.g. under ASan).
  if (const char* s = std::getenv("LOOPUS_FUZZ_SCALE"); s && std::atoi(s) > 1) iters *= std::atoi(s);
  int loaded = 0, rejected = 0;
  for (int i = 0; i < iters; ++i) {
    write_bytes(file, mutate(base, rng, hot_prefix));
    const auto mode = i % 2 ? io::LoadMode::kMmap : io::LoadMode::kRead;
    try {
      const auto tf = open(file.string(), mode);
      // Whatever loaded must be self-consistent: sizes match shapes, data readable.
      for (const auto& r : tf.tensors) {
        uint64_t want = 0;
        CHECK(io::dtype_bytes_checked(r.dtype, r.numel(), &want));
        CHECK_EQ(want, r.nbytes);
        volatile unsigned char sink = 0;
        for (size_t k = 0; k < r.nbytes; k += 61) sink = sink ^ static_cast<const unsigned char*>(r.data)[k];
      }
      ++loaded;
    } catch (const loopus::Error& e) {
      ++rejected;
      const std::string msg = e.what();
      CHECK_MESSAGE(msg.find(file.filename().string()) != std::string::npos, msg);
    } catch (const std::exception& e) {
      FAIL("mutant " << i << " threw a non-loopus exception: " << e.what());
    }
  }
  MESSAGE(file.filename().string() << ": " << loaded << " mutants loaded, " << rejected << " rejected");
  CHECK_GT(rejected, iters / 4);
}

}  // namespace

TEST_CASE("[loopus] io: fuzzed GGUF, safetensors and llama2.c files never crash") {
  const auto dir = loopus::test::temp_dir("io_fuzz");
  SUBCASE("gguf") {
    std::vector<float> f(64, 0.5f);
    std::vector<unsigned char> q(2 * 34, 1);
    io::GgufWriter w;
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_f32("f", 0.5f);
    w.set_arr_str("tokens", {"<s>", "a", "bc"});
    w.set_arr_f32("scores", {0.f, -1.f, -2.f});
    w.set("nested", nlohmann::json::array({nlohmann::json::array({1, 2}), nlohmann::json::array({3})}),
          io::GgufType::kI32);
    w.add_tensor("t.f32", DType::kF32, {2, 32}, f.data());
    w.add_tensor("t.q8", DType::kQ8_0, {2, 32}, q.data());
    w.add_tensor("t.f16", DType::kF16, {4}, f.data());
    const auto base_path = dir / "base.gguf";
    w.write(base_path.string());
    const std::string base = loopus::test::read_text(base_path);
    fuzz(base, base.size() - 64 * 4 - 96, 600, 1, dir / "m.gguf",
         [](const std::string& p, io::LoadMode m) { return io::open_gguf(p, m); });
  }
  SUBCASE("safetensors") {
    std::vector<float> f(6, 1.f);
    std::vector<io::TensorRecord> ts(2);
    ts[0].name = "a";
    ts[0].shape = {2, 3};
    ts[0].data = f.data();
    ts[0].nbytes = 24;
    ts[1].name = "b.h";
    ts[1].dtype = DType::kF16;
    ts[1].shape = {3};
    ts[1].data = f.data();
    ts[1].nbytes = 6;
    const auto base_path = dir / "base.safetensors";
    io::write_safetensors(base_path.string(), ts, {{"format", "pt"}});
    const std::string base = loopus::test::read_text(base_path);
    fuzz(base, base.size() - 30, 400, 2, dir / "m.safetensors",
         [](const std::string& p, io::LoadMode m) { return io::open_safetensors(p, m); });
  }
  SUBCASE("llama2c") {
    // dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 4, seq 2, shared classifier.
    std::string b;
    for (int32_t v : {8, 16, 1, 2, 1, 4, 2}) b.append(reinterpret_cast<const char*>(&v), 4);
    const size_t floats = 4 * 8 + 8 + 8 * 8 + 2 * 4 * 8 + 8 * 8 + 8 + 3 * 16 * 8 + 8 + 2 * 2 * 2;
    b.append(floats * 4, '\0');
    write_bytes(dir / "base.bin", b);
    CHECK_EQ(io::open_llama2c((dir / "base.bin").string()).tensors.size(), 11u);
    fuzz(b, 28, 200, 3, dir / "m.bin",
         [](const std::string& p, io::LoadMode m) { return io::open_any(p, m); });
  }
}
