// RopeStyle: how rotary position embedding pairs the dimensions of a head (the kernels' one model-level choice).
// SPDX-License-Identifier: MIT
#pragma once

namespace loopus {

/// How RoPE pairs dimensions inside a head.
enum class RopeStyle {
  kInterleaved,  ///< pairs (2i, 2i+1): llama2.c, GGUF llama (Q/K rows permuted vs HF)
  kHalf,         ///< pairs (i, i + rot/2), HF "rotate_half" (GGUF rope type NEOX, e.g. qwen3)
};

}  // namespace loopus
