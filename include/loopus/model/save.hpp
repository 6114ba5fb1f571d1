// Writing ModelWeights as Hugging Face safetensors folders or GGUF files (converting RoPE row order).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/model/weight_map.hpp"
#include "loopus/model/weights.hpp"

namespace loopus {

namespace detail {

/// Reorders the rows of a Q or K projection between RoPE layouts. Within each
/// head, HF "half" row j*half + i pairs with GGUF "interleaved" row 2*i + j
/// (llama.cpp's convert permutation). to_interleaved picks the direction.
inline AlignedBuffer permute_rope_rows(const Weight& w, int n_head, int head_dim, bool to_interleaved) {
  const size_t row_bytes = size_t(w.cols) * dtype_size(w.dtype);
  AlignedBuffer out(size_t(w.rows) * row_bytes);
  const auto* src = static_cast<const std::byte*>(w.data);
  const int half = head_dim / 2;
  for (int h = 0; h < n_head; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j) {
        const size_t inter = size_t(h * head_dim + 2 * i + j), halfr = size_t(h * head_dim + j * half + i);
        const size_t dst = to_interleaved ? inter : halfr, from = to_interleaved ? halfr : inter;
        std::memcpy(out.data() + dst * row_bytes, src + from * row_bytes, row_bytes);
      }
  return out;
}

inline io::TensorRecord record(const std::string& name, const Weight& w, bool vector = false) {
  io::TensorRecord r;
  r.name = name;
  r.dtype = w.dtype;
  r.shape = vector ? std::vector<int64_t>{w.cols} : std::vector<int64_t>{w.rows, w.cols};
  r.data = w.data;
  r.nbytes = w.nbytes();
  return r;
}

/// The tensors of `w` under `names`, with Q/K rows converted to `want` RoPE layout.
/// Converted rows are kept alive in `keep`.
inline std::vector<io::TensorRecord> named_records(const ModelWeights& w, const NameScheme& names, RopeStyle want,
                                                   std::vector<AlignedBuffer>& keep, bool include_embd = true,
                                                   bool include_head = true) {
  const HParams& hp = w.hp;
  std::vector<io::TensorRecord> out;
  auto qk = [&](const std::string& name, const Weight& m, int n_head) {
    if (hp.rope_style == want) return out.push_back(record(name, m));
    keep.push_back(permute_rope_rows(m, n_head, hp.head_dim, want == RopeStyle::kInterleaved));
    Weight c = m;
    c.data = keep.back().data();
    out.push_back(record(name, c));
  };
  if (include_embd) out.push_back(record(names.embd, w.tok_embd));
  for (int l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    const std::string p = names.layer_prefix(l);
    if (p.empty()) continue;  // layer not stored under this scheme
    out.push_back(record(p + names.attn_norm, L.attn_norm, true));
    qk(p + names.wq, L.wq, hp.n_head);
    qk(p + names.wk, L.wk, hp.n_head_kv);
    out.push_back(record(p + names.wv, L.wv));
    out.push_back(record(p + names.wo, L.wo));
    if (hp.qk_norm) {
      out.push_back(record(p + names.q_norm, L.q_norm, true));
      out.push_back(record(p + names.k_norm, L.k_norm, true));
    }
    out.push_back(record(p + names.ffn_norm, L.ffn_norm, true));
    out.push_back(record(p + names.w_gate, L.w_gate));
    out.push_back(record(p + names.w_up, L.w_up));
    out.push_back(record(p + names.w_down, L.w_down));
  }
  if (include_head) {
    out.push_back(record(names.out_norm, w.out_norm, true));
    if (!w.hp.tied_output) out.push_back(record(names.output, w.output));
  }
  return out;
}

/// A float as the shortest decimal that reads back to the same float, so
/// config.json says 1e-05, not 9.999999747378752e-06.
inline double short_float(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, double(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

inline std::string dtype_torch_name(const std::string& d) {
  return d == "bf16" ? "bfloat16" : d == "f16" ? "float16" : "float32";
}

}  // namespace detail

/// The Hugging Face config.json of a model (LlamaForCausalLM / Qwen3ForCausalLM).
inline nlohmann::json hf_config(const HParams& hp, const std::string& dtype = "f32") {
  nlohmann::json c = {
      {"architectures", {hp.arch == Arch::kQwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", hp.arch_name()},
      {"hidden_size", hp.n_embd},
      {"num_hidden_layers", hp.n_layer},
      {"num_attention_heads", hp.n_head},
      {"num_key_value_heads", hp.n_head_kv},
      {"head_dim", hp.head_dim},
      {"intermediate_size", hp.n_ff},
      {"vocab_size", hp.n_vocab},
      {"max_position_embeddings", hp.n_ctx_train},
      {"rms_norm_eps", detail::short_float(hp.rms_eps)},
      {"rope_theta", detail::short_float(hp.rope_theta)},
      {"tie_word_embeddings", hp.tied_output},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"torch_dtype", detail::dtype_torch_name(dtype)},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
  if (hp.arch == Arch::kLlama) c["mlp_bias"] = false;
  return c;
}

/// Writes `dir/config.json` + `dir/model.safetensors` (atomically each).
inline void save_hf(const ModelWeights& w, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  std::vector<AlignedBuffer> keep;
  auto recs = detail::named_records(w, NameScheme::hf(), RopeStyle::kHalf, keep);
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), recs, {{"format", "pt"}});
  io::AtomicFileWriter cw((fs::path(dir) / "config.json").string());
  const std::string text = hf_config(w.hp, w.matrix_dtype()).dump(2) + "\n";
  cw.write(text.data(), text.size());
  cw.commit();
}

/// GGUF architecture metadata (llama.cpp key names) for hp.
inline void gguf_set_hparams(io::GgufWriter& g, const HParams& hp, const std::string& name) {
  const std::string a = hp.arch_name();
  g.set_str("general.architecture", a);
  g.set_str("general.name", name);
  g.set_u32(a + ".context_length", uint32_t(hp.n_ctx_train));
  g.set_u32(a + ".embedding_length", uint32_t(hp.n_embd));
  g.set_u32(a + ".block_count", uint32_t(hp.n_layer));
  g.set_u32(a + ".feed_forward_length", uint32_t(hp.n_ff));
  g.set_u32(a + ".attention.head_count", uint32_t(hp.n_head));
  g.set_u32(a + ".attention.head_count_kv", uint32_t(hp.n_head_kv));
  g.set_u32(a + ".attention.key_length", uint32_t(hp.head_dim));
  g.set_u32(a + ".attention.value_length", uint32_t(hp.head_dim));
  g.set_u32(a + ".rope.dimension_count", uint32_t(hp.n_rot));
  g.set_f32(a + ".attention.layer_norm_rms_epsilon", hp.rms_eps);
  g.set_f32(a + ".rope.freq_base", hp.rope_theta);
  g.set_u32(a + ".vocab_size", uint32_t(hp.n_vocab));
}

/// A stand-in SentencePiece vocabulary (<unk>, <s>, </s>, 256 byte tokens,
/// then fillers) so a random-weight model runs through every CLI path.
inline void gguf_set_placeholder_vocab(io::GgufWriter& g, int n_vocab) {
  if (n_vocab < 259) return;
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0.f, 0.f, 0.f};
  std::vector<int32_t> types = {2, 3, 3};
  char buf[16];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    toks.emplace_back(buf);
    scores.push_back(0.f);
    types.push_back(6);
  }
  for (int i = int(toks.size()); i < n_vocab; ++i) {
    toks.push_back("\xe2\x96\x81tok" + std::to_string(i));
    scores.push_back(-float(i));
    types.push_back(1);
  }
  g.set_str("tokenizer.ggml.model", "llama");
  g.set_arr_str("tokenizer.ggml.tokens", toks);
  g.set_arr_f32("tokenizer.ggml.scores", scores);
  g.set_arr_i32("tokenizer.ggml.token_type", types);
  g.set_u32("tokenizer.ggml.bos_token_id", 1);
  g.set_u32("tokenizer.ggml.eos_token_id", 2);
  g.set_u32("tokenizer.ggml.unknown_token_id", 0);
}

/// Copies the tokenizer.* keys of `vocab_meta` (GGUF metadata as io::open_gguf
/// returns it) with the types llama.cpp expects; a placeholder vocabulary when
/// there are none.
inline void gguf_set_vocab(io::GgufWriter& g, const nlohmann::json& vocab_meta, int n_vocab) {
  bool has_vocab = false;
  if (vocab_meta.is_object())
    for (auto& [k, v] : vocab_meta.items())
      if (k.rfind("tokenizer.", 0) == 0) {
        if (k == "tokenizer.ggml.scores") g.set(k, v, io::GgufType::kF32);
        else if (k == "tokenizer.ggml.token_type") g.set(k, v, io::GgufType::kI32);
        else if (k.find("_id") != std::string::npos && v.is_number_integer()) g.set(k, v, io::GgufType::kU32);
        else g.set_json(k, v);
        has_vocab = true;
      }
  if (!has_vocab) gguf_set_placeholder_vocab(g, n_vocab);
}

/// Writes a GGUF that llama.cpp loads: llama Q/K rows in its interleaved
/// order, qwen3 in rotate-half (NEOX) order. The vocabulary is copied from
/// `vocab_meta` (tokenizer.* keys) when given, else a placeholder.
inline void save_gguf(const ModelWeights& w, const std::string& path, const nlohmann::json& vocab_meta = {}) {
  io::GgufWriter g;
  gguf_set_hparams(g, w.hp, std::filesystem::path(path).stem().string());
  gguf_set_vocab(g, vocab_meta, w.hp.n_vocab);
  const RopeStyle want = w.hp.arch == Arch::kQwen3 ? RopeStyle::kHalf : RopeStyle::kInterleaved;
  std::vector<AlignedBuffer> keep;
  for (const auto& r : detail::named_records(w, NameScheme::gguf(), want, keep)) g.add_tensor(r);
  g.write(path);
}

}  // namespace loopus
