// Tiny random models the fuzz targets and the seed generator write (a few kB each).
// SPDX-License-Identifier: MIT
#pragma once
#include <memory>
#include <string>

#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/reference/train.hpp"
#include "loopus/train/adapt.hpp"

namespace loopus::fuzz {

/// 3 layers, dim 8, 2 heads / 1 kv head, ff 16, vocab 16 (phi3: partial rotary, longrope).
inline SynthParams tiny_model(Arch arch, DType dtype = DType::kF32) {
  SynthParams p;
  p.arch = arch;
  p.dim = 8;
  p.layers = 3;
  p.heads = 2;
  p.kv_heads = 1;
  p.head_dim = arch == Arch::kQwen3 ? 6 : 0;
  p.ff = 16;
  p.vocab = 16;
  p.ctx = 64;
  p.dtype = dtype;
  p.seed = 7;
  if (arch == Arch::kPhi3) {
    p.partial_rotary = 0.5f;
    p.rope_orig_ctx = 32;
  }
  return p;
}

/// A LoopUS model: the tiny llama recast as 0..0 / 2..2 with a gate and a q head.
inline std::shared_ptr<LoopedWeights> tiny_looped() {
  auto w = synth_weights(tiny_model(Arch::kLlama));
  auto lw = recast(w, LayerSplit::from_specs("0..0", "2..2", w->hp.n_layer));
  synth_loop_parts(*lw, 7);
  return lw;
}

/// The folders fuzz_hf_config loads a fuzzed config.json into: HF llama, qwen3, phi3, and an
/// official LoopUS ("lds") checkpoint.
inline constexpr int kConfigDirs = 4;
inline void write_config_dir(int which, const std::string& dir) {
  if (which == 3) return save_lds(*tiny_looped(), dir, "tiny");
  const Arch arch = which == 0 ? Arch::kLlama : which == 1 ? Arch::kQwen3 : Arch::kPhi3;
  save_hf(*synth_weights(tiny_model(arch)), dir);
}

/// The adaptation run whose resume state fuzz_checkpoint reads (the seed generator saves one).
inline train::AdaptConfig tiny_adapt_config() {
  train::AdaptConfig c;
  c.batch = 2;
  c.seq_len = 4;
  c.accum = 2;
  c.max_steps = 8;
  c.step.n_steps = 2;
  c.step.n_supervision = 1;
  c.step.n_apply = 1;
  c.seed = 3;
  return c;
}
/// Its training data: 6 packed sequences of 4 tokens.
inline train::PackedData tiny_train_data() {
  std::vector<int32_t> ids(24);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % 16);
  return train::PackedData(ids, 4);
}

}  // namespace loopus::fuzz
