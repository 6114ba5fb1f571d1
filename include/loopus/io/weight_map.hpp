// Weight map: file-format tensor names and metadata -> ModelWeights/HParams. The model never sees formats.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/io/json_field.hpp"
#include "loopus/io/names.hpp"
#include "loopus/io/quant.hpp"
#include "loopus/io/tensor_file.hpp"
#include "loopus/model/weights.hpp"

namespace loopus {

/// Options applied while building ModelWeights.
struct WeightLoadOptions {
  /// Convert every matrix to this dtype (f32, f16 or bf16). Unset: keep the
  /// file's dtype, quantized ones included (see `dequantize`).
  std::optional<DType> matrix_dtype;
  /// With matrix_dtype unset: widen quantized matrices to f32 on load (what loopus did before the
  /// quantized kernels; `--dequantize` in the CLI).
  bool dequantize = false;
};

namespace detail {

inline const nlohmann::json& meta_req(const nlohmann::json& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null()) throw FormatError(path + ": missing metadata key '" + key + "'");
  return *it;
}
template <class T>
T meta_num(const nlohmann::json& m, const std::string& key, const std::string& path) {
  const auto& v = meta_req(m, key, path);
  if (!v.is_number()) throw FormatError(path + ": metadata key '" + key + "' should be a number");
  return io::json_as<T>(v, "metadata key '" + key + "'", path);
}
/// m[key] as T; `dflt` when absent or not a number; a FormatError naming `path` when it does not fit T.
template <class T>
T meta_num_or(const nlohmann::json& m, const std::string& key, T dflt, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end() || !it->is_number()) return dflt;
  return io::json_as<T>(*it, "metadata key '" + key + "'", path);
}

inline std::vector<float> float_list(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) throw FormatError(where + ": rope_scaling needs a number list '" + key + "'");
  std::vector<float> v;
  for (const auto& x : *it) {
    float f = 0;
    if (!io::json_to(x, &f)) throw FormatError(where + ": rope_scaling '" + key + "' must hold numbers");
    v.push_back(f);
  }
  return v;
}

}  // namespace detail

/// Hyperparameters from GGUF metadata (general.architecture = llama | qwen3).
inline HParams hparams_from_gguf(const nlohmann::json& m, const std::string& path) {
  using namespace detail;
  const auto& archj = meta_req(m, "general.architecture", path);
  const std::string arch = archj.is_string() ? archj.get<std::string>() : "";
  HParams hp;
  if (arch == "llama") {
    hp.arch = Arch::kLlama;
    hp.rope_style = RopeStyle::kInterleaved;  // GGUF llama Q/K rows are permuted for this layout
  } else if (arch == "qwen3") {
    hp.arch = Arch::kQwen3;
    hp.rope_style = RopeStyle::kHalf;  // llama.cpp: LLM_ARCH_QWEN3 uses NEOX rope
    hp.qk_norm = true;
  } else if (arch == "phi3") {
    hp.arch = Arch::kPhi3;
    hp.rope_style = RopeStyle::kHalf;  // llama.cpp: LLM_ARCH_PHI3 uses NEOX rope; Q/K rows as in HF
  } else {
    throw UnsupportedError(path + ": unsupported general.architecture '" + arch + "' (supported: llama, qwen3, phi3)");
  }
  const std::string p = arch + ".";
  hp.n_embd = meta_num<int>(m, p + "embedding_length", path);
  hp.n_layer = meta_num<int>(m, p + "block_count", path);
  hp.n_head = meta_num<int>(m, p + "attention.head_count", path);
  hp.n_head_kv = meta_num_or<int>(m, p + "attention.head_count_kv", hp.n_head, path);
  hp.n_ff = meta_num<int>(m, p + "feed_forward_length", path);
  hp.head_dim = meta_num_or<int>(m, p + "attention.key_length", hp.n_head > 0 ? hp.n_embd / hp.n_head : 0, path);
  hp.n_rot = meta_num_or<int>(m, p + "rope.dimension_count", hp.head_dim, path);
  hp.n_ctx_train = meta_num_or<int>(m, p + "context_length", 2048, path);
  hp.rms_eps = meta_num_or<float>(m, p + "attention.layer_norm_rms_epsilon", 1e-5f, path);
  hp.rope_theta = meta_num_or<float>(m, p + "rope.freq_base", 10000.f, path);
  if (auto it = m.find(p + "rope.scaling.type"); it != m.end() && it->is_string() && *it != "none")
    throw UnsupportedError(path + ": rope scaling '" + it->get<std::string>() + "' is not supported yet");
  if (hp.arch == Arch::kPhi3) {
    // llama.cpp writes 0 for "no window" (Phi-4); the longrope factors are tensors, read by build_weights.
    hp.sliding_window = meta_num_or<int>(m, p + "attention.sliding_window", 0, path);
    hp.rope_scaling.orig_ctx = meta_num_or<int>(m, p + "rope.scaling.original_context_length", hp.n_ctx_train, path);
    hp.rope_scaling.attn_factor = meta_num_or<float>(
        m, p + "rope.scaling.attn_factor",
        hp.rope_scaling.orig_ctx > 0 ? longrope_attn_factor(hp.n_ctx_train, hp.rope_scaling.orig_ctx) : 1.f, path);
  }
  hp.n_vocab = meta_num_or<int>(m, p + "vocab_size", 0, path);
  if (hp.n_vocab == 0)
    if (auto it = m.find("tokenizer.ggml.tokens"); it != m.end() && it->is_array()) hp.n_vocab = int(it->size());
  return hp;
}

namespace detail {

/// The Phi-3 parts of a config.json: partial_rotary_factor, rope_scaling
/// (none, or longrope / su) and sliding_window. Finishes hparams_from_hf_config.
inline HParams phi3_rope_from_hf(const nlohmann::json& c, const std::string& cfg, HParams hp) {
  // transformers >= 5 moves rope settings into rope_parameters; older configs keep them at the top
  // level (rope_theta, partial_rotary_factor) and in rope_scaling.
  const nlohmann::json* rp = nullptr;
  if (auto it = c.find("rope_parameters"); it != c.end() && it->is_object()) rp = &*it;
  const nlohmann::json* rs = nullptr;
  if (auto it = c.find("rope_scaling"); it != c.end() && it->is_object()) rs = &*it;
  if (!rs && rp) rs = rp;
  if (rp) hp.rope_theta = meta_num_or<float>(*rp, "rope_theta", hp.rope_theta, cfg);
  double prf = meta_num_or<double>(c, "partial_rotary_factor", 1.0, cfg);
  if (rp) prf = meta_num_or<double>(*rp, "partial_rotary_factor", prf, cfg);
  if (!(prf > 0 && prf <= 1)) throw FormatError(cfg + ": partial_rotary_factor must be in (0, 1]");
  hp.n_rot = int(double(hp.head_dim) * prf);  // transformers: int(head_dim * partial_rotary_factor)
  if (hp.n_rot % 2)
    throw FormatError(cfg + ": partial_rotary_factor " + std::to_string(prf) + " gives an odd rotary size " +
                      std::to_string(hp.n_rot));
  if (auto it = c.find("sliding_window"); it != c.end() && it->is_number_integer())
    hp.sliding_window = io::json_as<int>(*it, "'sliding_window'", cfg);
  const std::string type = rs ? io::json_field<std::string>(*rs, "rope_type",
                                                            io::json_field<std::string>(*rs, "type", "default", cfg),
                                                            cfg)
                              : "default";
  if (type == "default") return hp;
  if (type != "longrope" && type != "su")
    throw UnsupportedError(cfg + ": rope_scaling type '" + type +
                           "' is not supported for phi3 (supported: none, longrope, su)");
  RopeScaling& r = hp.rope_scaling;
  r.short_factor = float_list(*rs, "short_factor", cfg);
  r.long_factor = float_list(*rs, "long_factor", cfg);
  // transformers (Phi3Config): the top-level original_max_position_embeddings wins over the one in
  // rope_scaling / rope_parameters, and defaults to 4096.
  r.orig_ctx = meta_num_or<int>(*rs, "original_max_position_embeddings", 4096, cfg);
  r.orig_ctx = meta_num_or<int>(c, "original_max_position_embeddings", r.orig_ctx, cfg);
  if (r.orig_ctx <= 1)
    throw FormatError(cfg + ": rope_scaling '" + type + "' needs original_max_position_embeddings > 1");
  // The attention factor: rope_scaling.attention_factor if given, else from rope_scaling.factor if
  // given, else from max_position_embeddings / original_max_position_embeddings (the Phi-3 configs).
  const double factor = meta_num_or<double>(*rs, "factor", double(hp.n_ctx_train) / double(r.orig_ctx), cfg);
  r.attn_factor = factor <= 1.0 ? 1.f : float(std::sqrt(1.0 + std::log(factor) / std::log(double(r.orig_ctx))));
  if (auto it = rs->find("attention_factor"); it != rs->end() && it->is_number())
    r.attn_factor = io::json_as<float>(*it, "rope_scaling 'attention_factor'", cfg);
  return hp;
}

}  // namespace detail

/// Hyperparameters from a Hugging Face config.json (model_type llama | qwen3 | phi3).
inline HParams hparams_from_hf_config(const nlohmann::json& c, const std::string& path) {
  using namespace detail;
  const std::string cfg = path + "/config.json";
  const auto& mt = meta_req(c, "model_type", cfg);
  const std::string type = mt.is_string() ? mt.get<std::string>() : "";
  HParams hp;
  hp.rope_style = RopeStyle::kHalf;  // transformers' rotate_half
  if (type == "llama") {
    hp.arch = Arch::kLlama;
  } else if (type == "qwen3") {
    hp.arch = Arch::kQwen3;
    hp.qk_norm = true;
  } else if (type == "phi3") {
    hp.arch = Arch::kPhi3;
  } else {
    throw UnsupportedError(cfg + ": unsupported model_type '" + type + "' (supported: llama, qwen3, phi3)");
  }
  hp.n_embd = meta_num<int>(c, "hidden_size", cfg);
  hp.n_layer = meta_num<int>(c, "num_hidden_layers", cfg);
  hp.n_head = meta_num<int>(c, "num_attention_heads", cfg);
  hp.n_head_kv = meta_num_or<int>(c, "num_key_value_heads", hp.n_head, cfg);
  hp.n_ff = meta_num<int>(c, "intermediate_size", cfg);
  hp.n_vocab = meta_num<int>(c, "vocab_size", cfg);
  hp.head_dim = meta_num_or<int>(c, "head_dim", hp.n_head > 0 ? hp.n_embd / hp.n_head : 0, cfg);
  hp.n_rot = hp.head_dim;
  hp.n_ctx_train = meta_num_or<int>(c, "max_position_embeddings", 2048, cfg);
  hp.rms_eps = meta_num_or<float>(c, "rms_norm_eps", 1e-6f, cfg);
  hp.tied_output = io::json_field<bool>(c, "tie_word_embeddings", false, cfg);
  if (io::json_field<bool>(c, "attention_bias", false, cfg))
    throw UnsupportedError(cfg + ": attention_bias=true is not supported yet");
  if (auto it = c.find("hidden_act"); hp.arch == Arch::kPhi3 && it != c.end() && *it != "silu")
    throw UnsupportedError(cfg + ": hidden_act " + it->dump() + " is not supported (phi3 needs silu)");
  hp.rope_theta = meta_num_or<float>(c, "rope_theta", 10000.f, cfg);
  if (hp.arch == Arch::kPhi3) return detail::phi3_rope_from_hf(c, cfg, hp);
  if (auto it = c.find("rope_parameters"); it != c.end() && it->is_object()) {  // transformers >= 5
    hp.rope_theta = meta_num_or<float>(*it, "rope_theta", hp.rope_theta, cfg);
    if (auto rt = it->find("rope_type"); rt != it->end() && rt->is_string() && *rt != "default")
      throw UnsupportedError(cfg + ": rope_type '" + rt->get<std::string>() + "' is not supported yet");
  }
  if (auto it = c.find("rope_scaling"); it != c.end() && it->is_object()) {
    const auto t = io::json_field<std::string>(*it, "rope_type",
                                               io::json_field<std::string>(*it, "type", "default", cfg), cfg);
    if (t != "default") throw UnsupportedError(cfg + ": rope_scaling '" + t + "' is not supported yet");
  }
  return hp;
}

namespace detail {

/// A file tensor as a Weight of shape [rows, cols], converted to `want`
/// (or kept, when unset, unless it is quantized and `dequant` is set). Checks the shape.
inline Weight take_weight(const io::TensorFile& f, const std::string& name, int64_t rows, int64_t cols,
                          std::optional<DType> want, std::vector<AlignedBuffer>& owned, bool dequant = true) {
  const io::TensorRecord& r = f.get(name);
  const int64_t n = r.numel();
  const bool shape_ok = (r.shape.size() == 2 && r.shape[0] == rows && r.shape[1] == cols) ||
                        (rows == 1 && r.shape.size() == 1 && r.shape[0] == cols);
  if (!shape_ok) {
    std::string got;
    for (auto s : r.shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    throw FormatError(f.path + ": tensor '" + name + "' has shape [" + got + "], expected [" +
                      (rows == 1 ? "" : std::to_string(rows) + ", ") + std::to_string(cols) + "]");
  }
  const bool plain = r.dtype == DType::kF32 || r.dtype == DType::kF16 || r.dtype == DType::kBF16;
  const bool keep_quant = io::dtype_is_quantized(r.dtype) && !dequant && rows > 1;
  DType target = want ? *want : (plain || keep_quant ? r.dtype : DType::kF32);
  if (target == r.dtype) return Weight{r.data, r.dtype, rows, cols};
  // Convert: dequantize/widen to f32 first, then narrow if asked.
  AlignedBuffer f32buf(size_t(n) * 4);
  io::dequantize(r.dtype, r.data, n, f32buf.as<float>());
  if (target == DType::kF32) {
    owned.push_back(std::move(f32buf));
    return Weight{owned.back().data(), DType::kF32, rows, cols};
  }
  AlignedBuffer out(size_t(n) * 2);
  auto* o = out.as<uint16_t>();
  const float* s = f32buf.as<float>();
  for (int64_t i = 0; i < n; ++i) o[i] = target == DType::kBF16 ? f32_to_bf16(s[i]) : f32_to_f16(s[i]);
  owned.push_back(std::move(out));
  return Weight{owned.back().data(), target, rows, cols};
}

/// Rows [row0, row0 + rows) of a matrix, as a view (quantized rows are whole blocks).
inline Weight row_slice(const Weight& w, int64_t row0, int64_t rows) {
  LOOPUS_ASSERT(row0 >= 0 && row0 + rows <= w.rows);
  const auto* base = static_cast<const std::byte*>(w.data);
  return Weight{base + size_t(row0) * w.row_bytes(), w.dtype, rows, w.cols};
}

/// A 1-D f32 tensor of n values (longrope factors).
inline std::vector<float> f32_vector(const io::TensorFile& f, const std::string& name, int64_t n) {
  const io::TensorRecord& r = f.get(name);
  if (r.numel() != n)
    throw FormatError(f.path + ": tensor '" + name + "' has " + std::to_string(r.numel()) + " values, expected " +
                      std::to_string(n) + " (rope dims / 2)");
  std::vector<float> v(static_cast<size_t>(n));
  io::dequantize(r.dtype, r.data, n, v.data());
  return v;
}

}  // namespace detail

/// Builds ModelWeights from any parsed file. `names` says where tensors live;
/// `layer_ids` (default 0..n_layer-1) maps model layer l to the file's layer number.
inline ModelWeights build_weights(std::shared_ptr<const io::TensorFile> file, const HParams& hp,
                                  const NameScheme& names, const WeightLoadOptions& opt = {}) {
  detail::check_hparams(hp, file->path);
  ModelWeights w;
  w.hp = hp;
  w.source = file;
  w.path = file->path;
  const io::TensorFile& f = *file;
  const auto mat = opt.matrix_dtype;
  const auto vec = std::optional<DType>(DType::kF32);
  const bool dq = opt.dequantize;
  const int64_t d = hp.n_embd, V = hp.n_vocab;
  w.tok_embd = detail::take_weight(f, names.embd, V, d, mat, w.owned, dq);
  w.out_norm = detail::take_weight(f, names.out_norm, 1, d, vec, w.owned);
  if (f.find(names.output)) {
    w.output = detail::take_weight(f, names.output, V, d, mat, w.owned, dq);
    w.hp.tied_output = false;
  } else {
    w.output = w.tok_embd;
    w.hp.tied_output = true;
  }
  w.layers.resize(size_t(hp.n_layer));
  if (hp.arch == Arch::kPhi3 && !names.rope_long.empty()) {
    // llama.cpp keeps the longrope factors as tensors (metadata gives the original context and attn factor).
    const bool has_long = f.find(names.rope_long), has_short = f.find(names.rope_short);
    if (has_long != has_short)
      throw FormatError(f.path + ": tensor '" + (has_long ? names.rope_short : names.rope_long) +
                        "' is missing (longrope needs both rope factor tensors)");
    if (has_long) {
      w.hp.rope_scaling.long_factor = detail::f32_vector(f, names.rope_long, hp.n_rot / 2);
      w.hp.rope_scaling.short_factor = detail::f32_vector(f, names.rope_short, hp.n_rot / 2);
      detail::check_hparams(w.hp, f.path);
    }
  }
  // Phi-3 fuses q/k/v ([q; k; v] rows) and gate/up ([gate; up] rows); the
  // model sees the usual separate matrices, as row views of the fused tensor.
  const bool fused_qkv = hp.arch == Arch::kPhi3 && !names.wqkv.empty() && f.find(names.layer_prefix(0) + names.wqkv);
  const bool fused_ffn = hp.arch == Arch::kPhi3 && !names.w_gate_up.empty() && !f.find(names.layer_prefix(0) + names.w_gate);
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = names.layer_prefix(l);
    LayerWeights& L = w.layers[size_t(l)];
    L.attn_norm = detail::take_weight(f, p + names.attn_norm, 1, d, vec, w.owned);
    if (fused_qkv) {
      const Weight qkv = detail::take_weight(f, p + names.wqkv, hp.q_dim() + 2 * int64_t(hp.kv_dim()), d, mat, w.owned,
                                             dq);
      L.wq = detail::row_slice(qkv, 0, hp.q_dim());
      L.wk = detail::row_slice(qkv, hp.q_dim(), hp.kv_dim());
      L.wv = detail::row_slice(qkv, hp.q_dim() + int64_t(hp.kv_dim()), hp.kv_dim());
    } else {
      L.wq = detail::take_weight(f, p + names.wq, hp.q_dim(), d, mat, w.owned, dq);
      L.wk = detail::take_weight(f, p + names.wk, hp.kv_dim(), d, mat, w.owned, dq);
      L.wv = detail::take_weight(f, p + names.wv, hp.kv_dim(), d, mat, w.owned, dq);
    }
    L.wo = detail::take_weight(f, p + names.wo, d, hp.q_dim(), mat, w.owned, dq);
    if (hp.qk_norm) {
      L.q_norm = detail::take_weight(f, p + names.q_norm, 1, hp.head_dim, vec, w.owned);
      L.k_norm = detail::take_weight(f, p + names.k_norm, 1, hp.head_dim, vec, w.owned);
    }
    L.ffn_norm = detail::take_weight(f, p + names.ffn_norm, 1, d, vec, w.owned);
    if (fused_ffn) {
      const Weight gu = detail::take_weight(f, p + names.w_gate_up, 2 * int64_t(hp.n_ff), d, mat, w.owned, dq);
      L.w_gate = detail::row_slice(gu, 0, hp.n_ff);
      L.w_up = detail::row_slice(gu, hp.n_ff, hp.n_ff);
    } else {
      L.w_gate = detail::take_weight(f, p + names.w_gate, hp.n_ff, d, mat, w.owned, dq);
      L.w_up = detail::take_weight(f, p + names.w_up, hp.n_ff, d, mat, w.owned, dq);
    }
    L.w_down = detail::take_weight(f, p + names.w_down, d, hp.n_ff, mat, w.owned, dq);
  }
  return w;
}

}  // namespace loopus
