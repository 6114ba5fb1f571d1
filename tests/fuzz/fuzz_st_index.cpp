// libFuzzer target: model.safetensors.index.json (the sharded-checkpoint index) read by
// io::open_safetensors on its folder, which holds two valid shards written at start-up.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <filesystem>
#include <vector>

#include "fuzz_common.hpp"
#include "loopus/io/safetensors.hpp"

namespace {

/// The folder: shard-1.safetensors (a.weight, b.weight) and shard-2.safetensors (c.weight).
std::string make_dir() {
  using namespace loopus;
  const auto dir = loopus::fuzz::scratch_dir() / "sharded";
  std::filesystem::create_directories(dir);
  static const std::vector<float> a(6, 1.f), b(4, 2.f), c(3, 3.f);
  io::write_safetensors((dir / "shard-1.safetensors").string(), {{"a.weight", DType::kF32, {2, 3}, a.data(), 24},
                                                                 {"b.weight", DType::kF32, {4}, b.data(), 16}});
  io::write_safetensors((dir / "shard-2.safetensors").string(), {{"c.weight", DType::kF32, {3}, c.data(), 12}});
  return dir.string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string dir = make_dir();
  static const std::string path = dir + "/model.safetensors.index.json";
  fuzz::write_file(path, data, size);
  fuzz::guarded("", size, [&] {
    try {
      (void)io::open_safetensors(dir);
    } catch (const Error& e) {
      // Errors name the index or the shard at fault; both live in this folder.
      fuzz::check_error(e, dir);
      throw;
    }
  });
  return 0;
}
