// Writing ModelWeights as Hugging Face safetensors folders or GGUF files (converting RoPE row order).
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/io/weight_map.hpp"
#include "loopus/model/weights.hpp"

namespace loopus {

namespace detail {

/// Reorders the rows of a Q or K projection between RoPE layouts. Within each
/// head, HF "half" row j*half + i pairs with GGUF "interleaved" row 2*i + j
/// (llama.cpp's convert permutation). to_interleaved picks the direction.
inline AlignedBuffer permute_rope_rows(const Weight& w, int n_head, int head_dim, bool to_interleaved) {
  const size_t row_bytes = w.row_bytes();
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

/// The rows of several matrices of one dtype and width, stacked into one buffer.
inline AlignedBuffer concat_rows(std::initializer_list<const Weight*> parts) {
  size_t total = 0;
  for (const Weight* p : parts) total += p->nbytes();
  AlignedBuffer out(total);
  size_t at = 0;
  for (const Weight* p : parts) {
    std::memcpy(out.data() + at, p->data, p->nbytes());
    at += p->nbytes();
  }
  return out;
}

/// The tensors of `w` under `names`, with Q/K rows converted to `want` RoPE layout.
/// Phi-3 writes its fused tensors (q/k/v -> names.wqkv, gate/up -> names.w_gate_up),
/// as Hugging Face and llama.cpp store them. Converted rows are kept alive in `keep`.
inline std::vector<io::TensorRecord> named_records(const ModelWeights& w, const NameScheme& names, RopeStyle want,
                                                   std::vector<AlignedBuffer>& keep, bool include_embd = true,
                                                   bool include_head = true) {
  const HParams& hp = w.hp;
  std::vector<io::TensorRecord> out;
  auto qk_rows = [&](const Weight& m, int n_head) {
    if (hp.rope_style == want) return m;
    keep.push_back(permute_rope_rows(m, n_head, hp.head_dim, want == RopeStyle::kInterleaved));
    Weight c = m;
    c.data = keep.back().data();
    return c;
  };
  auto qk = [&](const std::string& name, const Weight& m, int n_head) { out.push_back(record(name, qk_rows(m, n_head))); };
  auto fused = [&](const std::string& name, std::initializer_list<const Weight*> parts) {
    int64_t rows = 0;
    for (const Weight* p : parts) {
      if (p->dtype != (*parts.begin())->dtype || p->cols != (*parts.begin())->cols)
        throw UsageError(name + ": cannot fuse matrices of different dtypes or widths");
      rows += p->rows;
    }
    keep.push_back(concat_rows(parts));
    const Weight first = **parts.begin();
    out.push_back(record(name, Weight{keep.back().data(), first.dtype, rows, first.cols}));
  };
  const bool phi3 = hp.arch == Arch::kPhi3;
  if (include_embd) out.push_back(record(names.embd, w.tok_embd));
  for (int l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    const std::string p = names.layer_prefix(l);
    if (p.empty()) continue;  // layer not stored under this scheme
    out.push_back(record(p + names.attn_norm, L.attn_norm, true));
    if (phi3) {
      const Weight q = qk_rows(L.wq, hp.n_head), k = qk_rows(L.wk, hp.n_head_kv);
      fused(p + names.wqkv, {&q, &k, &L.wv});
    } else {
      qk(p + names.wq, L.wq, hp.n_head);
      qk(p + names.wk, L.wk, hp.n_head_kv);
      out.push_back(record(p + names.wv, L.wv));
    }
    out.push_back(record(p + names.wo, L.wo));
    if (hp.qk_norm) {
      out.push_back(record(p + names.q_norm, L.q_norm, true));
      out.push_back(record(p + names.k_norm, L.k_norm, true));
    }
    out.push_back(record(p + names.ffn_norm, L.ffn_norm, true));
    if (phi3) {
      fused(p + names.w_gate_up, {&L.w_gate, &L.w_up});
    } else {
      out.push_back(record(p + names.w_gate, L.w_gate));
      out.push_back(record(p + names.w_up, L.w_up));
    }
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

/// The RoPE layout a GGUF of this architecture stores Q/K rows in (llama.cpp's rope type).
inline RopeStyle gguf_rope_style(Arch a) { return a == Arch::kLlama ? RopeStyle::kInterleaved : RopeStyle::kHalf; }

/// The Hugging Face config.json of a model (LlamaForCausalLM / Qwen3ForCausalLM / Phi3ForCausalLM).
inline nlohmann::json hf_config(const HParams& hp, const std::string& dtype = "f32") {
  const char* cls = hp.arch == Arch::kQwen3 ? "Qwen3ForCausalLM"
                    : hp.arch == Arch::kPhi3 ? "Phi3ForCausalLM"
                                             : "LlamaForCausalLM";
  nlohmann::json c = {
      {"architectures", {cls}},
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
  if (hp.arch == Arch::kPhi3) {
    // Phi3Config's defaults assume the 32k Phi-3 vocabulary (pad_token_id 32000 breaks a small one).
    c["pad_token_id"] = nullptr;
    c["partial_rotary_factor"] = detail::short_float(float(hp.n_rot) / float(hp.head_dim));
    c["sliding_window"] = hp.sliding_window > 0 ? nlohmann::json(hp.sliding_window) : nlohmann::json(nullptr);
    c["resid_pdrop"] = 0.0;
    c["embd_pdrop"] = 0.0;
    c["attention_dropout"] = 0.0;
    const RopeScaling& r = hp.rope_scaling;
    c["original_max_position_embeddings"] = r.active() ? r.orig_ctx : hp.n_ctx_train;
    if (r.active()) {
      nlohmann::json sf = nlohmann::json::array(), lf = nlohmann::json::array();
      for (float x : r.short_factor) sf.push_back(detail::short_float(x));
      for (float x : r.long_factor) lf.push_back(detail::short_float(x));
      c["rope_scaling"] = {{"type", "longrope"}, {"short_factor", sf}, {"long_factor", lf}};
      if (std::abs(r.attn_factor - detail::longrope_attn_factor(hp.n_ctx_train, r.orig_ctx)) > 1e-6f)
        c["rope_scaling"]["attention_factor"] = detail::short_float(r.attn_factor);
    } else {
      c["rope_scaling"] = nullptr;
    }
  }
  return c;
}

/// Writes `dir/model.safetensors` + `dir/config.json` (io::write_model_folder:
/// a failed write leaves the folder's previous files unchanged).
inline void save_hf(const ModelWeights& w, const std::string& dir) {
  std::vector<AlignedBuffer> keep;
  auto recs = detail::named_records(w, NameScheme::hf(), RopeStyle::kHalf, keep);
  io::write_model_folder(dir, recs, {{"format", "pt"}}, hf_config(w.hp, w.matrix_dtype()).dump(2) + "\n");
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
  if (hp.arch == Arch::kPhi3) {
    g.set_u32(a + ".attention.sliding_window", uint32_t(hp.sliding_window));
    g.set_u32(a + ".rope.scaling.original_context_length",
              uint32_t(hp.rope_scaling.active() ? hp.rope_scaling.orig_ctx : hp.n_ctx_train));
    if (hp.rope_scaling.active()) g.set_f32(a + ".rope.scaling.attn_factor", hp.rope_scaling.attn_factor);
  }
}

/// Phi-3 longrope factors as llama.cpp's rope_factors_{long,short}.weight tensors (none when inactive).
inline void gguf_add_rope_factors(io::GgufWriter& g, const HParams& hp) {
  if (!hp.rope_scaling.active()) return;
  const NameScheme n = NameScheme::gguf();
  for (const auto& [name, v] : {std::pair{n.rope_long, &hp.rope_scaling.long_factor},
                                std::pair{n.rope_short, &hp.rope_scaling.short_factor}})
    g.add_tensor(io::TensorRecord{name, DType::kF32, {int64_t(v->size())}, v->data(), v->size() * 4});
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
/// order, qwen3 and phi3 in rotate-half (NEOX) order; phi3 with its fused
/// attn_qkv / ffn_up (gate rows first) and longrope factor tensors. The
/// vocabulary is copied from `vocab_meta` (tokenizer.* keys) when given, else a placeholder.
inline void save_gguf(const ModelWeights& w, const std::string& path, const nlohmann::json& vocab_meta = {}) {
  io::GgufWriter g;
  gguf_set_hparams(g, w.hp, std::filesystem::path(path).stem().string());
  gguf_set_vocab(g, vocab_meta, w.hp.n_vocab);
  std::vector<AlignedBuffer> keep;
  for (const auto& r : detail::named_records(w, NameScheme::gguf(), gguf_rope_style(w.hp.arch), keep)) g.add_tensor(r);
  gguf_add_rope_factors(g, w.hp);
  g.write(path);
}

}  // namespace loopus
