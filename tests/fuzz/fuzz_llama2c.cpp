// libFuzzer target: a llama2.c checkpoint (legacy v0, v1 f32, v2 int8 groups) read by
// io::open_llama2c, then the model built from it.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <memory>

#include "fuzz_common.hpp"
#include "loopus/io/llama2c.hpp"
#include "loopus/io/load_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string path = (fuzz::scratch_dir() / "model.bin").string();
  fuzz::write_file(path, data, size);
  fuzz::guarded("model.bin", size,
                [&] { (void)load_weights(std::make_shared<const io::TensorFile>(io::open_llama2c(path))); });
  return 0;
}
