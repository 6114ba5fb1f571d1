// libFuzzer target: a GGUF file (header, metadata, tensor table, tensor data) read by
// io::open_gguf, every tensor dequantized to f32 (the q8_0 / q4_0 / q4_1 / q4_K / q6_K block
// decoders on fuzzed blocks), then the model built from it (hyperparameters, weight map, loop
// metadata of a loopus GGUF).
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_common.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/quant.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string path = (fuzz::scratch_dir() / "model.gguf").string();
  fuzz::write_file(path, data, size);
  fuzz::guarded("model.gguf", size, [&] {
    io::TensorFile tf = io::open_gguf(path);
    std::vector<float> f32;
    for (const auto& r : tf.tensors) {
      f32.resize(size_t(r.numel()));
      if (r.numel()) io::dequantize(r.dtype, r.data, r.numel(), f32.data());
    }
    if (is_looped_checkpoint(tf)) (void)load_looped_checkpoint(std::move(tf));
    else (void)load_weights(std::make_shared<const io::TensorFile>(std::move(tf)));
  });
  return 0;
}
