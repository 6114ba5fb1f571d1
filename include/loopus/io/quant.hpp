// Tensor-file helpers over the block layouts of core/quant.hpp: whole tensors as f32.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/io/tensor_file.hpp"

namespace loopus::io {

// The layouts, block sizes and dequantize() live in core (core/dtype.hpp, core/quant.hpp); the io::
// names are kept for the loaders and tests that use them.
using loopus::BlockQ4_0;
using loopus::BlockQ4_1;
using loopus::BlockQ4_K;
using loopus::BlockQ5_K;
using loopus::BlockQ6_K;
using loopus::BlockQ8_0;
using loopus::dequantize;
using loopus::dtype_block_bytes;
using loopus::dtype_block_size;
using loopus::dtype_bytes_checked;
using loopus::dtype_is_quantized;
using loopus::dtype_row_bytes;
using loopus::kQK32;
using loopus::kQK_K;

/// A whole tensor as f32 (dequantized / widened). Throws Error naming the tensor
/// when its byte size does not match its shape and dtype.
inline std::vector<float> tensor_to_f32(const TensorRecord& r) {
  const int64_t n = r.numel();
  uint64_t want = 0;
  if (!dtype_bytes_checked(r.dtype, n, &want) || want != r.nbytes || (n > 0 && !r.data))
    throw FormatError("tensor '" + r.name + "': " + std::to_string(r.nbytes) + " bytes do not hold " +
                      std::to_string(n) + " elements of " + std::string(dtype_name(r.dtype)));
  std::vector<float> out(static_cast<size_t>(n));
  if (n) dequantize(r.dtype, r.data, n, out.data());
  return out;
}

}  // namespace loopus::io
