// libFuzzer target: a Hugging Face config.json (llama / qwen3 / phi3, rope settings) or an
// official LoopUS config (model_type "lds": base_config_dict, layer index lists, loop defaults),
// loaded with valid weights beside it. The first byte picks the folder (fuzz_models.hpp), the
// rest is config.json.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "fuzz_common.hpp"
#include "fuzz_models.hpp"
#include "loopus/io/load.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::vector<std::string> dirs = [] {
    std::vector<std::string> d;
    for (int i = 0; i < fuzz::kConfigDirs; ++i) {
      d.push_back((fuzz::scratch_dir() / ("model" + std::to_string(i))).string());
      fuzz::write_config_dir(i, d.back());
    }
    return d;
  }();
  if (size < 1) return 0;
  const std::string& dir = dirs[data[0] % dirs.size()];
  fuzz::write_file(dir + "/config.json", data + 1, size - 1);
  fuzz::guarded(dir, size, [&] {
    io::TensorFile tf = io::open_any(dir);
    if (is_looped_checkpoint(tf)) (void)load_looped_checkpoint(std::move(tf));
    else (void)load_weights(std::make_shared<const io::TensorFile>(std::move(tf)));
  });
  return 0;
}
