// Tests for io/load.hpp: open_any dispatches by magic, extension and folder.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "loopus/io/load.hpp"
#include "test_util.hpp"

using loopus::DType;
namespace io = loopus::io;
namespace fs = std::filesystem;

namespace {
using test::write_bytes;
}  // namespace

TEST_CASE("[loopus] io: open_any picks the loader") {
  const auto gguf = loopus::test::data_file("models/stories260K/stories260K.gguf");
  const auto bin = loopus::test::data_file("models/stories260K/stories260K.bin");
  CHECK(io::detect_format(gguf) == io::FileFormat::kGguf);
  CHECK(io::detect_format(bin) == io::FileFormat::kLlama2c);
  for (auto mode : {io::LoadMode::kRead, io::LoadMode::kMmap}) {
    const auto g = io::open_any(gguf, mode);
    CHECK_EQ(g.format, "gguf");
    CHECK_EQ(g.tensors.size(), 48u);
    const auto b = io::open_any(bin, mode);
    CHECK_EQ(b.format, "llama2c");
    CHECK_EQ(b.tensors.size(), 47u);
  }

  const auto dir = loopus::test::temp_dir("io_load");
  const std::vector<float> a = {1, 2, 3};
  io::TensorRecord r;
  r.name = "a";
  r.shape = {3};
  r.data = a.data();
  r.nbytes = 12;
  // Content wins over extension: a GGUF named .bin, safetensors without extension.
  io::write_gguf((dir / "renamed.bin").string(), {{"general.architecture", "llama"}}, {r});
  CHECK_EQ(io::open_any((dir / "renamed.bin").string()).format, "gguf");
  io::write_safetensors((dir / "weights").string(), {r});
  CHECK(io::detect_format((dir / "weights").string()) == io::FileFormat::kSafetensors);
  CHECK_EQ(io::open_any((dir / "weights").string()).format, "safetensors");

  const auto hf = dir / "hf";
  fs::create_directories(hf);
  io::write_safetensors((hf / "model.safetensors").string(), {r});
  write_bytes(hf / "config.json", R"({"hidden_size": 3})");
  const auto folder = io::open_any(hf.string(), io::LoadMode::kMmap);
  CHECK_EQ(folder.format, "safetensors");
  CHECK_EQ(folder.meta["config"]["hidden_size"], 3);
  CHECK_EQ(io::open_any((hf / "model.safetensors").string()).tensors.size(), 1u);

  write_bytes(dir / "notes.txt", "hello world, not a model");
  CHECK_THROWS_WITH_AS(io::open_any((dir / "notes.txt").string()), doctest::Contains("notes.txt"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::open_any((dir / "notes.txt").string()), doctest::Contains("GGUF"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::open_any((dir / "notes.txt").string()), doctest::Contains("safetensors"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::open_any((dir / "notes.txt").string()), doctest::Contains("llama2.c"), loopus::Error);
  CHECK_THROWS_WITH_AS(io::open_any((dir / "absent.gguf").string()), doctest::Contains("absent.gguf"), loopus::Error);
  write_bytes(dir / "empty.gguf", "");
  CHECK_THROWS_WITH_AS(io::open_any((dir / "empty.gguf").string()), doctest::Contains("empty.gguf"), loopus::Error);
  write_bytes(dir / "junk.bin", "junk");
  CHECK_THROWS_WITH_AS(io::open_any((dir / "junk.bin").string()), doctest::Contains("junk.bin"), loopus::Error);
}
