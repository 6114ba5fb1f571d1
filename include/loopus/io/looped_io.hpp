// LoopUS checkpoints: read/write the official "lds" HF format and GGUF with loop metadata.
// SPDX-License-Identifier: MIT
#pragma once
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/io/json_field.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/names.hpp"
#include "loopus/io/quant.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/looped_weights.hpp"

namespace loopus {

namespace detail {

/// A tensor widened to f32, with its element count checked.
inline std::vector<float> f32_tensor(const io::TensorFile& f, const std::string& name, int64_t numel) {
  const io::TensorRecord& r = f.get(name);
  if (r.numel() != numel)
    throw FormatError(f.path + ": tensor '" + name + "' has " + std::to_string(r.numel()) + " elements, expected " +
                      std::to_string(numel));
  std::vector<float> v(static_cast<size_t>(numel));
  io::dequantize(r.dtype, r.data, numel, v.data());
  return v;
}

inline void read_gate_and_q(const io::TensorFile& f, LoopedWeights& lw, const std::string& gate_prefix,
                            const char* const q[4], std::set<std::string>& used) {
  const int64_t d = lw.base->hp.n_embd;
  const auto full = [&](std::string_view name) { return gate_prefix + std::string(name); };
  if (f.find(full(SelectiveGateWeights::kTensorNames[0]))) {
    lw.gate = std::make_shared<SelectiveGateWeights>(SelectiveGateWeights::read(
        d, [&](std::string_view name) { return f.get(full(name)).shape; },
        [&](std::string_view name, int64_t numel) {
          used.insert(full(name));
          return f32_tensor(f, full(name), numel);
        },
        f.path, gate_prefix));
  }
  if (f.find(q[0])) {
    auto h = std::make_shared<ConfidenceHead>();
    h->d = d;
    h->ln_w = f32_tensor(f, q[0], d);
    h->ln_b = f32_tensor(f, q[1], d);
    h->w = f32_tensor(f, q[2], d);
    h->b = f32_tensor(f, q[3], 1)[0];
    h->check(f.path);
    lw.q_head = h;
    for (int i = 0; i < 4; ++i) used.insert(q[i]);
  }
}

inline void reject_unused(const io::TensorFile& f, const std::set<std::string>& used) {
  std::vector<std::string> extra;
  for (const auto& r : f.tensors)
    if (!used.count(r.name)) extra.push_back(r.name);
  if (extra.empty()) return;
  std::string list;
  for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
  const bool lma = list.find(".lma.") != std::string::npos;
  throw FormatError(f.path + ": " + std::to_string(extra.size()) + " tensor(s) this loader does not know: " + list +
                    (extra.size() > 5 ? ", ..." : "") +
                    (lma ? " (Loop Memory Attention, reasoning.lma.*, is not supported)" : ""));
}

/// Names every plain-model tensor `names` maps, for the unused-tensor check.
inline void mark_model_tensors(const ModelWeights& w, const NameScheme& names, std::set<std::string>& used) {
  std::vector<AlignedBuffer> keep;
  for (const auto& r : named_records(w, names, w.hp.rope_style, keep)) used.insert(r.name);
  used.insert(names.output);
  if (w.hp.rope_scaling.active() && !names.rope_long.empty()) {
    used.insert(names.rope_long);
    used.insert(names.rope_short);
  }
}

inline std::vector<int> int_list(const nlohmann::json& c, const std::string& key, const std::string& where) {
  auto it = c.find(key);
  if (it == c.end() || !it->is_array()) throw FormatError(where + ": missing integer list '" + key + "'");
  std::vector<int> v;
  for (const auto& x : *it) {
    if (!x.is_number_integer()) throw FormatError(where + ": '" + key + "' must hold integers");
    v.push_back(io::json_as<int>(x, "an entry of '" + key + "'", where));
  }
  std::sort(v.begin(), v.end());
  return v;
}

inline void check_split(const LayerSplit& s, int n_layer, const std::string& where) {
  std::vector<int> all;
  for (auto* v : {&s.encoder, &s.reasoning, &s.decoder}) all.insert(all.end(), v->begin(), v->end());
  std::sort(all.begin(), all.end());
  bool ok = int(all.size()) == n_layer && !s.reasoning.empty();
  for (int i = 0; ok && i < n_layer; ++i) ok = all[size_t(i)] == i;
  if (!ok)
    throw FormatError(where + ": layer index lists " + s.text() + " must partition 0.." + std::to_string(n_layer - 1) +
                      " with a non-empty reasoning block");
}

/// Official key fixes: ".module." -> ".", legacy "plateau." -> "reasoning.".
inline std::shared_ptr<const io::TensorFile> normalise_lds_names(io::TensorFile&& f) {
  auto out = std::make_shared<io::TensorFile>();
  out->path = f.path;
  out->format = f.format;
  out->meta = std::move(f.meta);
  out->buffers = std::move(f.buffers);
  out->mappings = std::move(f.mappings);
  for (auto& r : f.tensors) {
    std::string n = r.name;
    for (size_t p; (p = n.find(".module.")) != std::string::npos;) n.erase(p + 1, 7);  // ".module." -> "."
    if (n.rfind("module.", 0) == 0) n = n.substr(7);
    if (n.rfind("plateau.", 0) == 0) n = "reasoning." + n.substr(8);
    r.name = n;
    out->add(std::move(r));
  }
  return out;
}

}  // namespace detail

/// Is this opened file a LoopUS checkpoint (HF "lds" folder, or GGUF with loopus.* keys)?
inline bool is_looped_checkpoint(const io::TensorFile& f) {
  if (f.format == "gguf") return f.meta.contains("loopus.reasoning_layers");
  return f.format == "safetensors" && model_format(f) == "lds";
}

/// Reads a LoopUS checkpoint: the official HF format (config.json model_type
/// "lds" + model.safetensors) or a loopus GGUF with loop metadata.
inline std::shared_ptr<LoopedWeights> load_looped_checkpoint(io::TensorFile&& file, const ModelLoadOptions& opt = {}) {
  auto lw = std::make_shared<LoopedWeights>();
  std::set<std::string> used;
  if (file.format == "gguf") {
    auto f = std::make_shared<const io::TensorFile>(std::move(file));
    const auto& m = f->meta;
    lw->split.encoder = detail::int_list(m, "loopus.encoder_layers", f->path);
    lw->split.reasoning = detail::int_list(m, "loopus.reasoning_layers", f->path);
    lw->split.decoder = detail::int_list(m, "loopus.decoder_layers", f->path);
    lw->base = load_weights(f, opt);
    detail::check_split(lw->split, lw->base->hp.n_layer, f->path);
    lw->defaults.n_loops = io::json_field<int>(m, "loopus.n_loops", 8, f->path);
    lw->defaults.q_threshold = io::json_field<float>(m, "loopus.q_threshold", 0.9f, f->path);
    lw->defaults.q_eval_interval = io::json_field<int>(m, "loopus.q_eval_interval", 1, f->path);
    lw->defaults.halting_strategy = io::json_field<std::string>(m, "loopus.halting_strategy", "threshold", f->path);
    lw->defaults.convergence_epsilon = io::json_field<float>(m, "loopus.convergence_epsilon", 1e-2f, f->path);
    detail::read_gate_and_q(*f, *lw, detail::kGgufGatePrefix, detail::kGgufQ, used);
    detail::mark_model_tensors(*lw->base, NameScheme::gguf(), used);
    detail::reject_unused(*f, used);
    return lw;
  }
  auto f = detail::normalise_lds_names(std::move(file));
  const std::string cfgp = f->path + "/config.json";
  const auto cit = f->meta.find("config");
  if (cit == f->meta.end() || !cit->is_object())
    throw FormatError(f->path + ": no config.json object beside the weights");
  const nlohmann::json& c = *cit;
  auto bit = c.find("base_config_dict");
  if (bit == c.end() || !bit->is_object()) throw FormatError(cfgp + ": missing object 'base_config_dict'");
  HParams hp = hparams_from_hf_config(*bit, f->path);
  hp.tied_output = false;  // the official format always stores decoder.lm_head.weight
  lw->split.encoder = detail::int_list(c, "encoder_layer_indices", cfgp);
  lw->split.reasoning = detail::int_list(c, "reasoning_layer_indices", cfgp);
  lw->split.decoder = detail::int_list(c, "decoder_layer_indices", cfgp);
  detail::check_split(lw->split, hp.n_layer, cfgp);
  if (io::json_field<int64_t>(c, "lma_window", 0, cfgp) > 0)
    throw UnsupportedError(cfgp + ": lma_window > 0 (Loop Memory Attention) is not supported");
  const NameScheme names = detail::lds_names(lw->split);
  lw->base = std::make_shared<ModelWeights>(build_weights(f, hp, names, opt.weights));
  lw->defaults.n_loops = io::json_field<int>(c, "N", 6, cfgp);
  lw->defaults.q_threshold = io::json_field<float>(c, "q_threshold", 0.9f, cfgp);
  lw->defaults.q_eval_interval = io::json_field<int>(c, "q_eval_interval", 1, cfgp);
  lw->defaults.halting_strategy = io::json_field<std::string>(c, "halting_strategy", "threshold", cfgp);
  lw->defaults.convergence_epsilon = io::json_field<float>(c, "convergence_epsilon", 1e-2f, cfgp);
  detail::read_gate_and_q(*f, *lw, detail::kLdsGatePrefix, detail::kLdsQ, used);
  detail::mark_model_tensors(*lw->base, names, used);
  detail::reject_unused(*f, used);
  return lw;
}

/// Opens any model as a looped model: a LoopUS checkpoint keeps its own split
/// (a non-empty enc/dec spec overrides nothing and is an error); a plain
/// model is recast with the given specs.
inline std::shared_ptr<LoopedWeights> load_looped(const std::string& path, const std::string& enc_spec,
                                                  const std::string& dec_spec, const ModelLoadOptions& opt = {}) {
  io::TensorFile f = io::open_any(path, opt.mode);
  if (is_looped_checkpoint(f)) {
    auto lw = load_looped_checkpoint(std::move(f), opt);
    if (!enc_spec.empty() || !dec_spec.empty()) {
      auto s = LayerSplit::from_specs(enc_spec.empty() ? "none" : enc_spec, dec_spec.empty() ? "none" : dec_spec,
                                      lw->base->hp.n_layer);
      if (s.encoder != lw->split.encoder || s.decoder != lw->split.decoder)
        throw UsageError(path + ": a LoopUS checkpoint fixes its split (" + lw->split.text() +
                         "); pass empty enc_spec and dec_spec");
    }
    return lw;
  }
  auto base = load_weights(std::make_shared<const io::TensorFile>(std::move(f)), opt);
  return recast(base, LayerSplit::from_specs(enc_spec.empty() ? "none" : enc_spec,
                                             dec_spec.empty() ? "none" : dec_spec, base->hp.n_layer));
}

/// The official config.json of a LoopUS checkpoint.
inline nlohmann::json lds_config(const LoopedWeights& lw, const std::string& base_name = "") {
  nlohmann::json base = hf_config(lw.base->hp, lw.base->matrix_dtype());
  base["tie_word_embeddings"] = false;
  return {{"model_type", "lds"},
          {"architectures", {"LDSForCausalLM"}},
          {"base_model_name_or_path", base_name},
          {"base_config_dict", base},
          {"hidden_size", lw.base->hp.n_embd},
          {"vocab_size", lw.base->hp.n_vocab},
          {"encoder_layer_indices", lw.split.encoder},
          {"reasoning_layer_indices", lw.split.reasoning},
          {"decoder_layer_indices", lw.split.decoder},
          {"N", lw.defaults.n_loops},
          {"q_threshold", detail::short_float(lw.defaults.q_threshold)},
          {"q_eval_interval", lw.defaults.q_eval_interval},
          {"halting_strategy", lw.defaults.halting_strategy},
          {"convergence_epsilon", detail::short_float(lw.defaults.convergence_epsilon)},
          {"lma_window", 0},
          {"lma_heads", 8}};
}

namespace detail {
inline io::TensorRecord f32_record(const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) {
  return {name, DType::kF32, std::move(shape), v.data(), v.size() * 4};
}
/// Gate and q-head tensors (f32) under the given names.
inline void loop_records(const LoopedWeights& lw, const std::string& gate_prefix, const char* const q[4],
                         std::vector<io::TensorRecord>& out, std::vector<float>& qbias) {
  if (lw.gate)
    lw.gate->for_each([&](std::string_view name, const std::vector<int64_t>& shape, const std::vector<float>& v, bool) {
      out.push_back(f32_record(gate_prefix + std::string(name), v, shape));
    });
  if (lw.q_head) {
    const auto& h = *lw.q_head;
    qbias = {h.b};
    out.push_back(f32_record(q[0], h.ln_w, {h.d}));
    out.push_back(f32_record(q[1], h.ln_b, {h.d}));
    out.push_back(f32_record(q[2], h.w, {1, h.d}));
    out.push_back(f32_record(q[3], qbias, {1}));
  }
}
}  // namespace detail

/// Writes the official LoopUS format: dir/model.safetensors + dir/config.json
/// (io::write_model_folder: a failed write leaves the folder's previous files
/// unchanged). Base tensors keep their dtype; the gate and q head are f32.
inline void save_lds(const LoopedWeights& lw, const std::string& dir, const std::string& base_name = "") {
  const ModelWeights& w = *lw.base;
  std::vector<AlignedBuffer> keep;
  auto recs = detail::named_records(w, detail::lds_names(lw.split), RopeStyle::kHalf, keep, true, false);
  recs.push_back(detail::record("decoder.norm.weight", w.out_norm, true));
  recs.push_back(detail::record("decoder.lm_head.weight", w.output));
  std::vector<float> qbias;
  detail::loop_records(lw, detail::kLdsGatePrefix, detail::kLdsQ, recs, qbias);
  io::write_model_folder(dir, recs, {{"format", "pt"}}, lds_config(lw, base_name).dump(2) + "\n");
}

/// The loopus.* metadata of a looped GGUF: the split and the checkpoint's loop defaults.
inline void gguf_set_loop_meta(io::GgufWriter& g, const LoopedWeights& lw) {
  auto ints = [](const std::vector<int>& v) { return std::vector<int32_t>(v.begin(), v.end()); };
  g.set_arr_i32("loopus.encoder_layers", ints(lw.split.encoder));
  g.set_arr_i32("loopus.reasoning_layers", ints(lw.split.reasoning));
  g.set_arr_i32("loopus.decoder_layers", ints(lw.split.decoder));
  g.set_u32("loopus.n_loops", uint32_t(lw.defaults.n_loops));
  g.set_f32("loopus.q_threshold", lw.defaults.q_threshold);
  g.set_u32("loopus.q_eval_interval", uint32_t(lw.defaults.q_eval_interval));
  g.set_str("loopus.halting_strategy", lw.defaults.halting_strategy);
  g.set_f32("loopus.convergence_epsilon", lw.defaults.convergence_epsilon);
}

/// Writes a GGUF with the base model (llama.cpp-compatible tensors) plus
/// loopus.* metadata and f32 gate / q-head tensors.
inline void save_looped_gguf(const LoopedWeights& lw, const std::string& path, const nlohmann::json& vocab_meta = {}) {
  const ModelWeights& w = *lw.base;
  io::GgufWriter g;
  gguf_set_hparams(g, w.hp, std::filesystem::path(path).stem().string());
  gguf_set_vocab(g, vocab_meta, w.hp.n_vocab);
  gguf_set_loop_meta(g, lw);
  std::vector<AlignedBuffer> keep;
  auto recs = detail::named_records(w, NameScheme::gguf(), gguf_rope_style(w.hp.arch), keep);
  std::vector<float> qbias;
  detail::loop_records(lw, detail::kGgufGatePrefix, detail::kGgufQ, recs, qbias);
  for (const auto& r : recs) g.add_tensor(r);
  gguf_add_rope_factors(g, w.hp);
  g.write(path);
}

}  // namespace loopus
