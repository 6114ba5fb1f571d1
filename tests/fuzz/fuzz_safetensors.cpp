// libFuzzer target: a .safetensors file (u64 header length, JSON header, data section) read by
// io::open_safetensors; every tensor's bytes are read back.
// SPDX-License-Identifier: MIT
#include <cstdint>

#include "fuzz_common.hpp"
#include "loopus/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string path = (fuzz::scratch_dir() / "model.safetensors").string();
  fuzz::write_file(path, data, size);
  fuzz::guarded("model.safetensors", size, [&] {
    const io::TensorFile tf = io::open_safetensors(path);
    unsigned sum = 0;
    for (const auto& r : tf.tensors)
      for (size_t i = 0; i < r.nbytes; ++i) sum += static_cast<const unsigned char*>(r.data)[i];
    volatile unsigned sink = sum;
    (void)sink;
  });
  return 0;
}
