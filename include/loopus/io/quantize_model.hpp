// quantize_model: any model loopus reads -> a GGUF whose weight matrices are (re-)quantized to one type.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/quantize.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"

namespace loopus {

/// The type a matrix whose rows have `row_len` values gets when `want` is asked for. Rows must be whole
/// blocks: a K-quant (256-value blocks) falls back to q8_0 when the row is whole 32-value blocks, and
/// any block type falls back to f16 otherwise. (llama.cpp falls back to q5_0 / q5_1 for q4_K / q5_K,
/// which loopus does not store; q8_0 is the next type up that it does. q6_K -> q8_0 and the final f16
/// are llama.cpp's rule.) Plain types never fall back.
constexpr DType quantize_fallback(DType want, int64_t row_len) {
  if (row_len % dtype_block_size(want) == 0) return want;
  if (dtype_block_size(want) > 32 && row_len % 32 == 0) return DType::kQ8_0;
  return DType::kF16;
}

/// A type name as the CLI takes it: Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, F16, BF16, F32 (any case).
/// Throws UsageError naming `what` and the accepted names otherwise.
inline DType parse_quant_type(std::string_view s, const std::string& what = "QuantizeOptions::type") {
  std::string u(s);
  for (char& c : u) c = char(std::toupper(static_cast<unsigned char>(c)));
  static constexpr std::pair<std::string_view, DType> kNames[] = {{"Q8_0", DType::kQ8_0}, {"Q4_0", DType::kQ4_0},
                                                                  {"Q4_1", DType::kQ4_1}, {"Q4_K", DType::kQ4_K},
                                                                  {"Q5_K", DType::kQ5_K}, {"Q6_K", DType::kQ6_K},
                                                                  {"F16", DType::kF16},   {"BF16", DType::kBF16},
                                                                  {"F32", DType::kF32}};
  for (const auto& [name, t] : kNames)
    if (u == name) return t;
  throw UsageError(what + " '" + std::string(s) +
                   "': not a type loopus writes (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, "
                   "F16, BF16, F32)");
}

/// llama.cpp's general.file_type (llama_ftype) for a file whose matrices are mostly `t`; the K-quants
/// as their _S ("small", every matrix the same type) variants.
constexpr uint32_t gguf_file_type(DType t) {
  switch (t) {
    case DType::kF32: return 0;
    case DType::kF16: return 1;
    case DType::kQ4_0: return 2;
    case DType::kQ4_1: return 3;
    case DType::kQ8_0: return 7;
    case DType::kQ4_K: return 14;
    case DType::kQ5_K: return 16;
    case DType::kQ6_K: return 18;
    case DType::kBF16: return 32;
    default: return 0;
  }
}

/// One matrix's progress, for a progress line.
struct QuantizeProgress {
  size_t index = 0, count = 0;  ///< this is matrix index + 1 of count
  std::string name;             ///< its GGUF tensor name
};

struct QuantizeOptions {
  DType type = DType::kQ8_0;  ///< for the 2-D weight matrices (quantize_supported types)
  /// Tensors kept at their input precision (their stored bytes copied): GGUF tensor-name globs ('*' any
  /// run, '?' one character, e.g. "token_embd.weight", "blk.3.*", "blk.*.ffn_down.weight"), or for a
  /// looped checkpoint the block names "encoder", "reasoning", "decoder" (every tensor of those layers).
  /// Phi-3's fused attn_qkv / ffn_up are one tensor each. An entry that matches nothing is an error.
  std::vector<std::string> keep;
  /// The type for rows that are not whole blocks of `type`; unset: quantize_fallback().
  std::optional<DType> fallback;
  int threads = 0;  ///< 0: std::thread::hardware_concurrency()
  std::function<void(const QuantizeProgress&)> progress;
};

/// What happened to one tensor of the output.
struct QuantizedTensor {
  std::string name;
  int64_t rows = 0, cols = 0;
  DType from = DType::kF32, to = DType::kF32;
  bool kept = false;       ///< --keep: stored bytes copied
  bool fell_back = false;  ///< rows not whole blocks of the type asked for
};

struct QuantizeResult {
  std::string format;                     ///< the input's format ("gguf", "hf", "llama2c", "lds")
  bool looped = false;                    ///< a LoopUS checkpoint (written as a looped GGUF)
  bool has_vocab = false;                 ///< the output carries the input GGUF's vocabulary
  std::vector<QuantizedTensor> matrices;  ///< every 2-D weight matrix, in file order (a tied head once)
  uint64_t matrix_bytes_in = 0, matrix_bytes_out = 0;
};

namespace detail {

/// '*' matches any run of characters (dots included), '?' one character; everything else itself.
inline bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

/// The --keep entries as tensor-name globs: block names become "blk.<i>.*" for each of their layers.
inline std::vector<std::pair<std::string, std::vector<std::string>>> keep_patterns(const std::vector<std::string>& keep,
                                                                                   const LoopedWeights* lw,
                                                                                   const std::string& path) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const std::string& e : keep) {
    if (e.empty()) throw UsageError("QuantizeOptions::keep has an empty entry");
    std::vector<std::string> globs;
    if (e == "encoder" || e == "reasoning" || e == "decoder") {
      if (!lw)
        throw UsageError("QuantizeOptions::keep entry '" + e + "': " + path +
                         " is not a LoopUS checkpoint, so it has no " + e + " block; name its layers as blk.N.*");
      const auto& layers = e == "encoder"     ? lw->split.encoder
                           : e == "reasoning" ? lw->split.reasoning
                                              : lw->split.decoder;
      for (int l : layers) globs.push_back("blk." + std::to_string(l) + ".*");
    } else {
      globs.push_back(e);
    }
    out.emplace_back(e, std::move(globs));
  }
  return out;
}

/// Rows of `src` widened to f32 and written as `to` into `dst`, split over `threads` threads by rows.
inline void convert_rows(const Weight& src, DType to, std::byte* dst, int threads) {
  const int64_t rows = src.rows, cols = src.cols;
  const size_t out_row = dtype_row_bytes(to, cols);
  const int64_t n_thr = std::max<int64_t>(1, std::min<int64_t>(threads, rows * cols / 65536 + 1));
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_rows(src, r, 1, buf.data());
      quantize_row(to, buf.data(), cols, dst + size_t(r) * out_row);
    }
  };
  if (n_thr == 1) return work(0, rows);
  std::vector<std::thread> pool;
  std::exception_ptr err;
  std::mutex mu;
  for (int64_t t = 0; t < n_thr; ++t)
    pool.emplace_back([&, t] {
      try {
        work(rows * t / n_thr, rows * (t + 1) / n_thr);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!err) err = std::current_exception();
      }
    });
  for (auto& th : pool) th.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace detail

/// Reads the model at `in` (GGUF, Hugging Face folder, llama2.c .bin, or a LoopUS checkpoint: loopus GGUF or
/// official folder) and writes `out`, a GGUF that llama.cpp reads (plus, for a LoopUS checkpoint, the loop
/// metadata and the gate / q-head tensors of io/looped_io.hpp, which stay f32). Every 2-D weight matrix is
/// widened to f32 (quantized ones dequantized, as the loader's `dequantize` option does) and written as
/// opt.type by quantize_row(): bit for bit what llama-quantize --pure writes from the same f32 values. Rows
/// that are not whole blocks get quantize_fallback(); --keep entries keep their stored bytes; 1-D tensors
/// (norms, Phi-3 rope factors) stay f32. The vocabulary of a GGUF input is copied; other inputs keep
/// theirs in a separate file, so `out` carries none (run it with a tokenizer file).
/// `out` is written atomically (temp file + rename) and may not be the input. Errors name the file or the
/// option: UsageError (bad type, --keep, out == in), IoError / FormatError / UnsupportedError from the
/// loaders.
inline QuantizeResult quantize_model(const std::string& in, const std::string& out, const QuantizeOptions& opt) {
  namespace fs = std::filesystem;
  if (!quantize_supported(opt.type))
    throw UsageError("QuantizeOptions::type " + std::string(dtype_name(opt.type)) + ": loopus cannot write this type");
  if (opt.fallback && dtype_block_size(*opt.fallback) > 32)
    throw UsageError("QuantizeOptions::fallback " + std::string(dtype_name(*opt.fallback)) +
                     ": the fallback must be a 32-value block type or a plain one (Q8_0, Q4_0, Q4_1, F16, BF16, F32)");
  if (out.empty()) throw UsageError("quantize_model: no output path given");
  if (!fs::exists(in)) throw IoError(in + ": no such file or folder (the model to quantize)");
  std::error_code ec;
  if (fs::exists(out) && (fs::equivalent(in, out, ec) || fs::is_directory(out)))
    throw UsageError("output " + out + (fs::is_directory(out) ? " is a folder" : " is the input model") +
                     ": quantize writes a new GGUF file and never overwrites its input");

  ModelLoadOptions lo;
  lo.mode = io::LoadMode::kMmap;  // matrices are read once; nothing is copied before conversion
  lo.weights.dequantize = false;  // keep stored bytes for --keep; convert_rows widens the others
  io::TensorFile file = io::open_any(in, lo.mode);
  QuantizeResult res;
  res.format = model_format(file);
  std::shared_ptr<const LoopedWeights> lw;
  std::shared_ptr<const ModelWeights> w;
  if (is_looped_checkpoint(file)) {
    lw = load_looped_checkpoint(std::move(file), lo);
    w = lw->base;
    res.looped = true;
  } else {
    w = load_weights(std::make_shared<const io::TensorFile>(std::move(file)), lo);
  }
  const HParams& hp = w->hp;
  const NameScheme names = NameScheme::gguf();
  const bool phi3 = hp.arch == Arch::kPhi3;

  // The matrices in the order save_gguf writes them, each with its GGUF name (Phi-3's fused parts share one).
  struct Mat {
    std::string name;
    std::vector<const Weight*> parts;  // in the input model
    std::vector<Weight*> outs;         // in the output model
  };
  auto q = std::make_shared<ModelWeights>();
  q->hp = w->hp;
  q->source = w->source;
  q->path = out;
  q->layers = w->layers;  // norms (f32) as loaded; matrices replaced below
  q->out_norm = w->out_norm;
  std::vector<Mat> mats;
  mats.push_back({names.embd, {&w->tok_embd}, {&q->tok_embd}});
  for (int l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = w->layers[size_t(l)];
    LayerWeights& Q = q->layers[size_t(l)];
    const std::string p = names.layer_prefix(l);
    if (phi3) {
      mats.push_back({p + names.wqkv, {&L.wq, &L.wk, &L.wv}, {&Q.wq, &Q.wk, &Q.wv}});
    } else {
      mats.push_back({p + names.wq, {&L.wq}, {&Q.wq}});
      mats.push_back({p + names.wk, {&L.wk}, {&Q.wk}});
      mats.push_back({p + names.wv, {&L.wv}, {&Q.wv}});
    }
    mats.push_back({p + names.wo, {&L.wo}, {&Q.wo}});
    if (phi3) {
      mats.push_back({p + names.w_gate_up, {&L.w_gate, &L.w_up}, {&Q.w_gate, &Q.w_up}});
    } else {
      mats.push_back({p + names.w_gate, {&L.w_gate}, {&Q.w_gate}});
      mats.push_back({p + names.w_up, {&L.w_up}, {&Q.w_up}});
    }
    mats.push_back({p + names.w_down, {&L.w_down}, {&Q.w_down}});
  }
  if (!hp.tied_output) mats.push_back({names.output, {&w->output}, {&q->output}});

  // --keep: every entry must match a tensor of the output (matrices, norms, loop tensors).
  const auto patterns = detail::keep_patterns(opt.keep, lw.get(), in);
  std::set<std::string> all_names = {names.out_norm};
  for (const Mat& m : mats) all_names.insert(m.name);
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = names.layer_prefix(l);
    for (const std::string* n : {&names.attn_norm, &names.ffn_norm}) all_names.insert(p + *n);
    if (hp.qk_norm)
      for (const std::string* n : {&names.q_norm, &names.k_norm}) all_names.insert(p + *n);
  }
  if (hp.rope_scaling.active()) all_names.insert({names.rope_long, names.rope_short});
  {
    if (lw) {
      std::vector<io::TensorRecord> recs;
      std::vector<float> qbias;
      detail::loop_records(*lw, detail::kGgufGatePrefix, detail::kGgufQ, recs, qbias);
      for (const auto& r : recs) all_names.insert(r.name);
    }
  }
  for (const auto& [entry, globs] : patterns) {
    bool hit = false;
    for (const auto& n : all_names)
      for (const auto& g : globs) hit = hit || detail::glob_match(g, n);
    if (!hit)
      throw UsageError("QuantizeOptions::keep entry '" + entry + "' matches no tensor of " + in +
                       " (tensor names as in GGUF, e.g. " + "token_embd.weight, blk.0.*, output.weight" +
                       (lw ? "; or encoder, reasoning, decoder)" : ")"));
  }
  auto kept = [&](const std::string& name) {
    for (const auto& pg : patterns)
      for (const auto& g : pg.second)
        if (detail::glob_match(g, name)) return true;
    return false;
  };

  const int threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  for (size_t mi = 0; mi < mats.size(); ++mi) {
    const Mat& m = mats[mi];
    if (opt.progress) opt.progress({mi + 1, mats.size(), m.name});
    const Weight& first = *m.parts.front();
    QuantizedTensor info{m.name, 0, first.cols, first.dtype, first.dtype, kept(m.name), false};
    for (const Weight* p : m.parts) info.rows += p->rows;
    if (!info.kept) {
      const DType fb = opt.fallback ? *opt.fallback : quantize_fallback(opt.type, first.cols);
      info.to = first.cols % dtype_block_size(opt.type) == 0 ? opt.type : fb;
      if (first.cols % dtype_block_size(info.to) != 0) info.to = DType::kF16;  // a 32-block --fallback on odd rows
      info.fell_back = info.to != opt.type;
    }
    for (size_t k = 0; k < m.parts.size(); ++k) {
      const Weight& src = *m.parts[k];
      res.matrix_bytes_in += src.nbytes();
      Weight dst = src;
      // Plain to the same plain type is the identity; quantized input is always re-quantized (from f32).
      if (!info.kept && !(src.dtype == info.to && !dtype_is_quantized(src.dtype))) {
        AlignedBuffer buf(size_t(src.rows) * dtype_row_bytes(info.to, src.cols));
        detail::convert_rows(src, info.to, buf.data(), threads);
        q->owned.push_back(std::move(buf));
        dst = Weight{q->owned.back().data(), info.to, src.rows, src.cols};
      }
      res.matrix_bytes_out += dst.nbytes();
      *m.outs[k] = dst;
    }
    res.matrices.push_back(std::move(info));
  }
  if (hp.tied_output) q->output = q->tok_embd;

  io::GgufWriter g;
  gguf_set_hparams(g, hp, fs::path(out).stem().string());
  const nlohmann::json* meta = w->source && w->source->format == "gguf" ? &w->source->meta : nullptr;
  if (meta && meta->contains("tokenizer.ggml.model")) {
    gguf_set_vocab(g, *meta, hp.n_vocab);
    res.has_vocab = true;
  }
  g.set_u32("general.quantization_version", 2);  // ggml's GGML_QNT_VERSION, as llama-quantize writes it
  g.set_u32("general.file_type", gguf_file_type(opt.type));
  std::vector<AlignedBuffer> keep_alive;
  auto recs = detail::named_records(*q, names, gguf_rope_style(hp.arch), keep_alive);
  std::vector<float> qbias;
  if (lw) {
    LoopedWeights qlw = *lw;
    qlw.base = q;
    gguf_set_loop_meta(g, qlw);
    detail::loop_records(qlw, detail::kGgufGatePrefix, detail::kGgufQ, recs, qbias);
  }
  for (const auto& r : recs) g.add_tensor(r);
  gguf_add_rope_factors(g, hp);
  g.write(out);
  return res;
}

}  // namespace loopus
