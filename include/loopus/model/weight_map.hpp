// Weight map: file-format tensor names and metadata -> ModelWeights/HParams. The model never sees formats.
// SPDX-License-Identifier: MIT
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/io/quant.hpp"
#include "loopus/io/tensor_file.hpp"
#include "loopus/model/weights.hpp"

namespace loopus {

/// Where each canonical tensor lives in a given file format.
struct NameScheme {
  std::string embd, out_norm, output;
  std::function<std::string(int layer)> layer_prefix;
  std::string attn_norm, wq, wk, wv, wo, q_norm, k_norm, ffn_norm, w_gate, w_up, w_down;

  /// GGUF / llama.cpp names (also what the llama2.c reader produces).
  static NameScheme gguf() {
    return {"token_embd.weight", "output_norm.weight", "output.weight",
            [](int l) { return "blk." + std::to_string(l) + "."; },
            "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
            "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight", "ffn_gate.weight",
            "ffn_up.weight", "ffn_down.weight"};
  }
  /// Hugging Face transformers names (LlamaForCausalLM, Qwen3ForCausalLM).
  static NameScheme hf() {
    return {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            [](int l) { return "model.layers." + std::to_string(l) + "."; },
            "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
            "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_norm.weight",
            "self_attn.k_norm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
            "mlp.up_proj.weight", "mlp.down_proj.weight"};
  }
};

/// Options applied while building ModelWeights.
struct WeightLoadOptions {
  /// Convert every matrix to this dtype (f32, f16 or bf16). Unset: keep the
  /// file's dtype; quantized types become f32.
  std::optional<DType> matrix_dtype;
};

namespace detail {

inline const nlohmann::json& meta_req(const nlohmann::json& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null())
    throw Error(path + ": missing metadata key '" + key + "'");
  return *it;
}
template <class T>
T meta_num(const nlohmann::json& m, const std::string& key, const std::string& path) {
  const auto& v = meta_req(m, key, path);
  if (!v.is_number()) throw Error(path + ": metadata key '" + key + "' should be a number");
  return v.get<T>();
}
template <class T>
T meta_num_or(const nlohmann::json& m, const std::string& key, T dflt) {
  auto it = m.find(key);
  return (it == m.end() || !it->is_number()) ? dflt : it->get<T>();
}

inline void check_hparams(const HParams& hp, const std::string& path) {
  auto bad = [&](const std::string& what) { throw Error(path + ": invalid hyperparameters: " + what); };
  if (hp.n_embd <= 0 || hp.n_layer <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 || hp.head_dim <= 0 ||
      hp.n_ff <= 0 || hp.n_vocab <= 0)
    bad("dims must be positive (d=" + std::to_string(hp.n_embd) + ", layers=" + std::to_string(hp.n_layer) +
        ", heads=" + std::to_string(hp.n_head) + "/" + std::to_string(hp.n_head_kv) +
        ", head_dim=" + std::to_string(hp.head_dim) + ", ff=" + std::to_string(hp.n_ff) +
        ", vocab=" + std::to_string(hp.n_vocab) + ")");
  if (hp.n_head % hp.n_head_kv != 0) bad("n_head must be a multiple of n_head_kv");
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2) bad("rope dims must be even and <= head_dim");
  if (!(hp.rms_eps > 0) || !(hp.rope_theta > 0)) bad("rms eps and rope theta must be > 0");
  if (hp.n_embd > (1 << 20) || hp.n_layer > 4096 || hp.n_vocab > (1 << 24) || hp.n_ff > (1 << 22))
    bad("dims are implausibly large");
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
  } else {
    throw Error(path + ": unsupported general.architecture '" + arch + "' (supported: llama, qwen3)");
  }
  const std::string p = arch + ".";
  hp.n_embd = meta_num<int>(m, p + "embedding_length", path);
  hp.n_layer = meta_num<int>(m, p + "block_count", path);
  hp.n_head = meta_num<int>(m, p + "attention.head_count", path);
  hp.n_head_kv = meta_num_or<int>(m, p + "attention.head_count_kv", hp.n_head);
  hp.n_ff = meta_num<int>(m, p + "feed_forward_length", path);
  hp.head_dim = meta_num_or<int>(m, p + "attention.key_length", hp.n_head ? hp.n_embd / hp.n_head : 0);
  hp.n_rot = meta_num_or<int>(m, p + "rope.dimension_count", hp.head_dim);
  hp.n_ctx_train = meta_num_or<int>(m, p + "context_length", 2048);
  hp.rms_eps = meta_num_or<float>(m, p + "attention.layer_norm_rms_epsilon", 1e-5f);
  hp.rope_theta = meta_num_or<float>(m, p + "rope.freq_base", 10000.f);
  if (auto it = m.find(p + "rope.scaling.type"); it != m.end() && it->is_string() && *it != "none")
    throw Error(path + ": rope scaling '" + it->get<std::string>() + "' is not supported yet");
  hp.n_vocab = meta_num_or<int>(m, p + "vocab_size", 0);
  if (hp.n_vocab == 0)
    if (auto it = m.find("tokenizer.ggml.tokens"); it != m.end() && it->is_array()) hp.n_vocab = int(it->size());
  return hp;
}

/// Hyperparameters from a Hugging Face config.json (model_type llama | qwen3).
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
  } else {
    throw Error(cfg + ": unsupported model_type '" + type + "' (supported: llama, qwen3)");
  }
  hp.n_embd = meta_num<int>(c, "hidden_size", cfg);
  hp.n_layer = meta_num<int>(c, "num_hidden_layers", cfg);
  hp.n_head = meta_num<int>(c, "num_attention_heads", cfg);
  hp.n_head_kv = meta_num_or<int>(c, "num_key_value_heads", hp.n_head);
  hp.n_ff = meta_num<int>(c, "intermediate_size", cfg);
  hp.n_vocab = meta_num<int>(c, "vocab_size", cfg);
  hp.head_dim = meta_num_or<int>(c, "head_dim", hp.n_head ? hp.n_embd / hp.n_head : 0);
  hp.n_rot = hp.head_dim;
  hp.n_ctx_train = meta_num_or<int>(c, "max_position_embeddings", 2048);
  hp.rms_eps = meta_num_or<float>(c, "rms_norm_eps", 1e-6f);
  hp.rope_theta = meta_num_or<float>(c, "rope_theta", 10000.f);
  if (auto it = c.find("rope_parameters"); it != c.end() && it->is_object()) {  // transformers >= 5
    hp.rope_theta = meta_num_or<float>(*it, "rope_theta", hp.rope_theta);
    if (auto rt = it->find("rope_type"); rt != it->end() && rt->is_string() && *rt != "default")
      throw Error(cfg + ": rope_type '" + rt->get<std::string>() + "' is not supported yet");
  }
  if (auto it = c.find("rope_scaling"); it != c.end() && it->is_object()) {
    auto t = it->value("rope_type", it->value("type", std::string("default")));
    if (t != "default") throw Error(cfg + ": rope_scaling '" + t + "' is not supported yet");
  }
  if (c.value("attention_bias", false)) throw Error(cfg + ": attention_bias=true is not supported yet");
  hp.tied_output = c.value("tie_word_embeddings", false);
  return hp;
}

namespace detail {

/// A file tensor as a Weight of shape [rows, cols], converted to `want`
/// (or kept, when unset and the stored type is plain). Checks the shape.
inline Weight take_weight(const io::TensorFile& f, const std::string& name, int64_t rows, int64_t cols,
                          std::optional<DType> want, std::vector<AlignedBuffer>& owned) {
  const io::TensorRecord& r = f.get(name);
  const int64_t n = r.numel();
  const bool shape_ok = (r.shape.size() == 2 && r.shape[0] == rows && r.shape[1] == cols) ||
                        (rows == 1 && r.shape.size() == 1 && r.shape[0] == cols);
  if (!shape_ok) {
    std::string got;
    for (auto s : r.shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    throw Error(f.path + ": tensor '" + name + "' has shape [" + got + "], expected [" +
                (rows == 1 ? "" : std::to_string(rows) + ", ") + std::to_string(cols) + "]");
  }
  const bool plain = r.dtype == DType::kF32 || r.dtype == DType::kF16 || r.dtype == DType::kBF16;
  DType target = want ? *want : (plain ? r.dtype : DType::kF32);
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
  const int64_t d = hp.n_embd, V = hp.n_vocab;
  w.tok_embd = detail::take_weight(f, names.embd, V, d, mat, w.owned);
  w.out_norm = detail::take_weight(f, names.out_norm, 1, d, vec, w.owned);
  if (f.find(names.output)) {
    w.output = detail::take_weight(f, names.output, V, d, mat, w.owned);
    w.hp.tied_output = false;
  } else {
    w.output = w.tok_embd;
    w.hp.tied_output = true;
  }
  w.layers.resize(size_t(hp.n_layer));
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = names.layer_prefix(l);
    LayerWeights& L = w.layers[size_t(l)];
    L.attn_norm = detail::take_weight(f, p + names.attn_norm, 1, d, vec, w.owned);
    L.wq = detail::take_weight(f, p + names.wq, hp.q_dim(), d, mat, w.owned);
    L.wk = detail::take_weight(f, p + names.wk, hp.kv_dim(), d, mat, w.owned);
    L.wv = detail::take_weight(f, p + names.wv, hp.kv_dim(), d, mat, w.owned);
    L.wo = detail::take_weight(f, p + names.wo, d, hp.q_dim(), mat, w.owned);
    if (hp.qk_norm) {
      L.q_norm = detail::take_weight(f, p + names.q_norm, 1, hp.head_dim, vec, w.owned);
      L.k_norm = detail::take_weight(f, p + names.k_norm, 1, hp.head_dim, vec, w.owned);
    }
    L.ffn_norm = detail::take_weight(f, p + names.ffn_norm, 1, d, vec, w.owned);
    L.w_gate = detail::take_weight(f, p + names.w_gate, hp.n_ff, d, mat, w.owned);
    L.w_up = detail::take_weight(f, p + names.w_up, hp.n_ff, d, mat, w.owned);
    L.w_down = detail::take_weight(f, p + names.w_down, d, hp.n_ff, mat, w.owned);
  }
  return w;
}

}  // namespace loopus
