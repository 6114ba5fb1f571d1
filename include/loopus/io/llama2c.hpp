// llama2.c checkpoint reader (legacy v0, v1 f32, v2 int8 groups) exposing GGUF llama tensor names.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/tensor_file.hpp"

namespace loopus::io {

/// "ak42" read as a little-endian u32: marks the versioned llama2.c export formats.
inline constexpr uint32_t kLlama2cMagic = 0x616b3432u;
/// Header size of the versioned formats (v1, v2).
inline constexpr uint64_t kLlama2cHeaderV1 = 256;

/// The seven int32 header fields shared by every llama2.c format, plus flags.
struct Llama2cHeader {
  int version = 0;   ///< 0 = legacy (no magic), 1 = f32, 2 = int8 groups
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  int32_t group_size = 0;  ///< v2 only
  uint64_t header_bytes = 0;
};

namespace detail {

/// Reads and checks the header. Sizes are bounded so that every later product fits uint64.
inline Llama2cHeader read_llama2c_header(const InputFile& f) {
  const std::string& path = f.path();
  Llama2cHeader h;
  if (f.size() < 28)
    throw FormatError(path + ": file is " + std::to_string(f.size()) +
                      " bytes, too small for a llama2.c checkpoint (28-byte header)");
  uint32_t magic = 0;
  f.read_at(&magic, 4, 0, "header");
  int32_t cfg[7];
  if (magic == kLlama2cMagic) {
    if (f.size() < kLlama2cHeaderV1)
      throw FormatError(path + ": llama2.c header is 256 bytes but the file has only " + std::to_string(f.size()));
    unsigned char raw[kLlama2cHeaderV1];
    f.read_at(raw, kLlama2cHeaderV1, 0, "header");
    int32_t version;
    std::memcpy(&version, raw + 4, 4);
    if (version != 1 && version != 2)
      throw UnsupportedError(path + ": llama2.c export version " + std::to_string(version) +
                             " is not supported (expected 1 = f32 or 2 = int8)");
    h.version = version;
    std::memcpy(cfg, raw + 8, sizeof(cfg));
    h.shared_classifier = raw[36] != 0;
    if (version == 2) std::memcpy(&h.group_size, raw + 37, 4);  // packed right after the flag byte
    h.header_bytes = kLlama2cHeaderV1;
  } else {
    f.read_at(cfg, sizeof(cfg), 0, "header");
    h.header_bytes = 28;
  }
  h.dim = cfg[0];
  h.hidden_dim = cfg[1];
  h.n_layers = cfg[2];
  h.n_heads = cfg[3];
  h.n_kv_heads = cfg[4];
  h.vocab_size = cfg[5];
  h.seq_len = cfg[6];
  if (h.version == 0) {
    // Legacy files flag an unshared classifier with a negative vocab size.
    h.shared_classifier = h.vocab_size > 0;
    if (h.vocab_size < 0 && h.vocab_size != INT32_MIN) h.vocab_size = -h.vocab_size;
  }
  auto bad = [&](const std::string& why) {
    return FormatError(path + ": not a valid llama2.c checkpoint: " + why + " (header dim=" + std::to_string(cfg[0]) +
                       " hidden_dim=" + std::to_string(cfg[1]) + " n_layers=" + std::to_string(cfg[2]) +
                       " n_heads=" + std::to_string(cfg[3]) + " n_kv_heads=" + std::to_string(cfg[4]) +
                       " vocab_size=" + std::to_string(cfg[5]) + " seq_len=" + std::to_string(cfg[6]) + ")");
  };
  auto in = [](int32_t v, int32_t hi) { return v > 0 && v <= hi; };
  if (!in(h.dim, 1 << 20) || !in(h.hidden_dim, 1 << 22) || !in(h.n_layers, 1 << 12) ||
      !in(h.n_heads, 1 << 12) || !in(h.n_kv_heads, 1 << 12) || !in(h.vocab_size, 1 << 24) ||
      !in(h.seq_len, 1 << 24))
    throw bad("a size is zero, negative or implausibly large");
  if (h.dim % h.n_heads != 0) throw bad("dim is not a multiple of n_heads");
  if (h.n_heads % h.n_kv_heads != 0) throw bad("n_heads is not a multiple of n_kv_heads");
  if ((h.dim / h.n_heads) % 2 != 0) throw bad("head size is odd (RoPE needs pairs)");
  if (h.version == 2 && (h.group_size <= 0 || h.dim % h.group_size != 0 || h.hidden_dim % h.group_size != 0))
    throw bad("group size " + std::to_string(h.group_size) + " does not divide dim and hidden_dim");
  return h;
}

/// One stored array: `count` tensors of `numel` elements each, or skipped bytes.
struct L2cSeg {
  std::string name;  ///< GGUF name; "{}" is replaced by the layer index; "" = skipped
  std::vector<int64_t> shape;
  uint64_t count = 1;
};

}  // namespace detail

/// Opens a llama2.c checkpoint: legacy v0 (7 x int32 header, f32 weights, the
/// sign of vocab_size flags an unshared classifier), version 1 (magic "ak42",
/// f32) or version 2 (int8 groups, dequantized to f32 on load; mode is then
/// ignored). Tensors get GGUF llama names and {out, in} shapes (token_embd.weight,
/// blk.N.attn_q.weight, ..., output_norm.weight; output.weight only when the
/// classifier is not shared), and meta gets the matching llama.* keys, so
/// downstream code can treat the result like a GGUF llama file. The file size
/// must match the header exactly.
inline TensorFile open_llama2c(const std::string& path, LoadMode mode = LoadMode::kRead) {
  using nlohmann::json;
  detail::InputFile f(path);
  const Llama2cHeader h = detail::read_llama2c_header(f);
  const int64_t d = h.dim, ff = h.hidden_dim, V = h.vocab_size, L = h.n_layers;
  const int64_t hs = h.dim / h.n_heads, kv = int64_t(h.n_kv_heads) * hs;

  using Seg = detail::L2cSeg;
  const Seg tok{"token_embd.weight", {V, d}, 1};
  const Seg att_norm{"blk.{}.attn_norm.weight", {d}, uint64_t(L)};
  const Seg ffn_norm{"blk.{}.ffn_norm.weight", {d}, uint64_t(L)};
  const Seg wq{"blk.{}.attn_q.weight", {d, d}, uint64_t(L)};
  const Seg wk{"blk.{}.attn_k.weight", {kv, d}, uint64_t(L)};
  const Seg wv{"blk.{}.attn_v.weight", {kv, d}, uint64_t(L)};
  const Seg wo{"blk.{}.attn_output.weight", {d, d}, uint64_t(L)};
  const Seg w1{"blk.{}.ffn_gate.weight", {ff, d}, uint64_t(L)};
  const Seg w2{"blk.{}.ffn_down.weight", {d, ff}, uint64_t(L)};
  const Seg w3{"blk.{}.ffn_up.weight", {ff, d}, uint64_t(L)};
  const Seg fin{"output_norm.weight", {d}, 1};
  const Seg freq{"", {int64_t(h.seq_len) * hs / 2}, 2};  // freq_cis real + imag, unused (RoPE is computed)
  const Seg cls{"output.weight", {V, d}, 1};

  std::vector<Seg> segs;  // in file order
  std::vector<Seg> f32_first;  // v2: the norms, stored as f32 before the int8 tensors
  if (h.version == 0) {
    segs = {tok, att_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, fin, freq};
  } else if (h.version == 1) {
    segs = {att_norm, ffn_norm, fin, tok, wq, wk, wv, wo, w1, w2, w3};
  } else {
    f32_first = {att_norm, ffn_norm, fin};
    segs = {tok, wq, wk, wv, wo, w1, w2, w3};
  }
  if (!h.shared_classifier) segs.push_back(cls);

  auto seg_numel = [](const Seg& s) {
    uint64_t n = 1;
    for (int64_t x : s.shape) n *= uint64_t(x);  // bounded by the header limits: no overflow
    return n;
  };
  // Bytes of one tensor of a segment as stored in this version.
  const uint64_t gs = uint64_t(h.group_size);
  auto stored_bytes = [&](const Seg& s) {
    const uint64_t n = seg_numel(s);
    return h.version == 2 ? n + n / gs * 4 : n * 4;
  };
  uint64_t want = h.header_bytes;
  for (const auto& s : f32_first) want += seg_numel(s) * 4 * s.count;
  for (const auto& s : segs) want += stored_bytes(s) * s.count;
  if (want != f.size()) {
    std::string detail = "llama2.c v" + std::to_string(h.version) + " with dim=" + std::to_string(d) +
                         " hidden_dim=" + std::to_string(ff) + " n_layers=" + std::to_string(L) +
                         " n_heads=" + std::to_string(h.n_heads) + " n_kv_heads=" +
                         std::to_string(h.n_kv_heads) + " vocab=" + std::to_string(V) + " seq_len=" +
                         std::to_string(h.seq_len) + (h.shared_classifier ? " (shared" : " (unshared") +
                         " classifier) needs " + std::to_string(want) + " bytes";
    throw FormatError(path + ": " + detail + ", file has " + std::to_string(f.size()) +
                      (want > f.size() ? " (truncated?)" : " (not a llama2.c checkpoint, or wrong header?)"));
  }

  TensorFile tf;
  tf.path = path;
  tf.format = "llama2c";
  auto name_of = [](const std::string& pat, uint64_t l) {
    const auto at = pat.find("{}");
    return at == std::string::npos ? pat : pat.substr(0, at) + std::to_string(l) + pat.substr(at + 2);
  };
  auto add_f32 = [&](const Seg& s, const unsigned char* p) {
    const uint64_t n = seg_numel(s);
    for (uint64_t l = 0; l < s.count; ++l) {
      if (!s.name.empty()) {
        TensorRecord r;
        r.name = name_of(s.name, l);
        r.dtype = DType::kF32;
        r.shape = s.shape;
        r.nbytes = size_t(n * 4);
        r.data = p;
        tf.add(std::move(r));
      }
      p += n * 4;
    }
    return p;
  };

  const uint64_t payload = f.size() - h.header_bytes;
  if (h.version != 2) {
    const unsigned char* p = nullptr;
    if (mode == LoadMode::kMmap) {
      auto m = f.map();
      p = static_cast<const unsigned char*>(m.get()) + h.header_bytes;
      tf.mappings.push_back(std::move(m));
    } else {
      AlignedBuffer buf{static_cast<size_t>(payload)};
      f.read_at(buf.data(), payload, h.header_bytes, "weights");
      p = reinterpret_cast<const unsigned char*>(buf.data());
      tf.buffers.push_back(std::move(buf));
    }
    for (const auto& s : segs) p = add_f32(s, p);
  } else {
    // Dequantize every int8 tensor (values, then one f32 scale per group) into one f32 buffer.
    AlignedBuffer raw{static_cast<size_t>(payload)};
    f.read_at(raw.data(), payload, h.header_bytes, "weights");
    uint64_t out_floats = 0;
    for (const auto& s : f32_first) out_floats += seg_numel(s) * s.count;
    for (const auto& s : segs) out_floats += seg_numel(s) * s.count;
    AlignedBuffer out{static_cast<size_t>(out_floats * 4)};
    const auto* src = reinterpret_cast<const unsigned char*>(raw.data());
    auto* dst = out.as<float>();
    const unsigned char* o = reinterpret_cast<const unsigned char*>(out.data());
    uint64_t norm_bytes = 0;
    for (const auto& s : f32_first) norm_bytes += seg_numel(s) * 4 * s.count;
    std::memcpy(dst, src, size_t(norm_bytes));
    src += norm_bytes;
    dst += norm_bytes / 4;
    for (const auto& s : segs) {
      const uint64_t n = seg_numel(s);
      for (uint64_t l = 0; l < s.count; ++l) {
        const auto* q = reinterpret_cast<const int8_t*>(src);
        const unsigned char* sc = src + n;
        for (uint64_t g = 0; g < n / gs; ++g) {
          float scale;
          std::memcpy(&scale, sc + g * 4, 4);
          for (uint64_t i = 0; i < gs; ++i) dst[g * gs + i] = float(q[g * gs + i]) * scale;
        }
        src += n + n / gs * 4;
        dst += n;
      }
    }
    for (const auto& s : f32_first) o = add_f32(s, o);
    for (const auto& s : segs) o = add_f32(s, o);
    tf.buffers.push_back(std::move(out));
  }

  // Same keys and JSON types as a GGUF llama file read by open_gguf (u32 -> unsigned, f32 -> double of float).
  json& m = tf.meta;
  m = json::object();
  m["general.architecture"] = "llama";
  m["llama.embedding_length"] = uint64_t(d);
  m["llama.feed_forward_length"] = uint64_t(ff);
  m["llama.block_count"] = uint64_t(L);
  m["llama.attention.head_count"] = uint64_t(h.n_heads);
  m["llama.attention.head_count_kv"] = uint64_t(h.n_kv_heads);
  m["llama.context_length"] = uint64_t(h.seq_len);
  m["llama.rope.dimension_count"] = uint64_t(hs);
  m["llama.vocab_size"] = uint64_t(V);
  m["llama.attention.layer_norm_rms_epsilon"] = double(1e-5f);  // llama2.c hard-codes both
  m["llama.rope.freq_base"] = double(10000.0f);
  m["llama2c.version"] = uint64_t(h.version);
  return tf;
}

}  // namespace loopus::io
