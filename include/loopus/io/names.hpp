// Tensor names of every file format (GGUF, Hugging Face, LoopUS lds and loopus GGUF loop parameters): strings only,
// so code that needs a name (training parameters, checkpoints) does not pull in the readers and writers.
// SPDX-License-Identifier: MIT
#pragma once
#include <functional>
#include <string>
#include <utility>

#include "loopus/model/layer_split.hpp"

namespace loopus {

/// Where each canonical tensor lives in a given file format.
struct NameScheme {
  std::string embd, out_norm, output;
  std::function<std::string(int layer)> layer_prefix;
  std::string attn_norm, wq, wk, wv, wo, q_norm, k_norm, ffn_norm, w_gate, w_up, w_down;
  /// Phi-3 fused projections: wqkv = [q; k; v] rows, w_gate_up = [gate; up] rows.
  std::string wqkv, w_gate_up;
  /// Phi-3 longrope factor tensors (GGUF only; HF keeps them in config.json).
  std::string rope_long, rope_short;

  /// GGUF / llama.cpp names (also what the llama2.c reader produces).
  static NameScheme gguf() {
    NameScheme n{"token_embd.weight",
                 "output_norm.weight",
                 "output.weight",
                 [](int l) { return "blk." + std::to_string(l) + "."; },
                 "attn_norm.weight",
                 "attn_q.weight",
                 "attn_k.weight",
                 "attn_v.weight",
                 "attn_output.weight",
                 "attn_q_norm.weight",
                 "attn_k_norm.weight",
                 "ffn_norm.weight",
                 "ffn_gate.weight",
                 "ffn_up.weight",
                 "ffn_down.weight",
                 "",
                 "",
                 "",
                 ""};
    n.wqkv = "attn_qkv.weight";
    n.w_gate_up = "ffn_up.weight";  // llama.cpp phi3: one [2*ff, d] ffn_up, gate rows first
    n.rope_long = "rope_factors_long.weight";
    n.rope_short = "rope_factors_short.weight";
    return n;
  }
  /// Hugging Face transformers names (LlamaForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM).
  static NameScheme hf() {
    NameScheme n{"model.embed_tokens.weight",
                 "model.norm.weight",
                 "lm_head.weight",
                 [](int l) { return "model.layers." + std::to_string(l) + "."; },
                 "input_layernorm.weight",
                 "self_attn.q_proj.weight",
                 "self_attn.k_proj.weight",
                 "self_attn.v_proj.weight",
                 "self_attn.o_proj.weight",
                 "self_attn.q_norm.weight",
                 "self_attn.k_norm.weight",
                 "post_attention_layernorm.weight",
                 "mlp.gate_proj.weight",
                 "mlp.up_proj.weight",
                 "mlp.down_proj.weight",
                 "",
                 "",
                 "",
                 ""};
    n.wqkv = "self_attn.qkv_proj.weight";
    n.w_gate_up = "mlp.gate_up_proj.weight";
    return n;
  }
};

namespace detail {

/// encoder.layers.j / reasoning.layers.j / decoder.layers.j for original layer l.
inline NameScheme lds_names(const LayerSplit& s) {
  NameScheme n = NameScheme::hf();
  n.embd = "encoder.embed_tokens.weight";
  n.out_norm = "decoder.norm.weight";
  n.output = "decoder.lm_head.weight";
  n.layer_prefix = [s](int l) -> std::string {
    for (auto [block, ids] : {std::pair{"encoder", &s.encoder}, {"reasoning", &s.reasoning}, {"decoder", &s.decoder}})
      for (size_t j = 0; j < ids->size(); ++j)
        if ((*ids)[j] == l) return std::string(block) + ".layers." + std::to_string(j) + ".";
    return "";
  };
  return n;
}

/// Prefixes of the gate's tensors (the gate names them: SelectiveGateWeights::kTensorNames) and the q
/// head's tensor names, in GGUF (kept in f32) and in a LoopUS folder.
inline constexpr const char* kGgufGatePrefix = "loopus.gate.";
inline constexpr const char* kLdsGatePrefix = "reasoning.gate.";
inline constexpr const char* kGgufQ[] = {"loopus.q_head.norm.weight", "loopus.q_head.norm.bias",
                                         "loopus.q_head.proj.weight", "loopus.q_head.proj.bias"};
inline constexpr const char* kLdsQ[] = {"q_head.0.weight", "q_head.0.bias", "q_head.1.weight", "q_head.1.bias"};

}  // namespace detail

}  // namespace loopus
