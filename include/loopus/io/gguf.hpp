// GGUF (v2/v3) reader into TensorFile, and an atomic, typed GGUF writer.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/quant.hpp"
#include "loopus/io/tensor_file.hpp"

namespace loopus::io {

/// GGUF metadata value types; the numbers are the on-disk ids.
enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

inline constexpr uint32_t kGgufMagic = 0x46554747u;  ///< "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;
/// Deepest nesting of metadata arrays we accept (real files use 1; this bounds recursion).
inline constexpr int kGgufMaxArrayDepth = 8;
/// ggml's GGML_MAX_DIMS.
inline constexpr uint32_t kGgufMaxDims = 4;

/// ggml type id under which GGUF stores a DType.
constexpr uint32_t ggml_type_id(DType t) {
  switch (t) {
    case DType::kF32: return 0;
    case DType::kF16: return 1;
    case DType::kQ4_0: return 2;
    case DType::kQ4_1: return 3;
    case DType::kQ8_0: return 8;
    case DType::kQ4_K: return 12;
    case DType::kQ5_K: return 13;
    case DType::kQ6_K: return 14;
    case DType::kI32: return 26;
    case DType::kF64: return 28;
    case DType::kBF16: return 30;
  }
  return 0xffffffffu;
}

/// The DType of a ggml type id; false when loopus does not support that type.
constexpr bool dtype_from_ggml(uint32_t id, DType* out) {
  switch (id) {
    case 0: *out = DType::kF32; return true;
    case 1: *out = DType::kF16; return true;
    case 2: *out = DType::kQ4_0; return true;
    case 3: *out = DType::kQ4_1; return true;
    case 8: *out = DType::kQ8_0; return true;
    case 12: *out = DType::kQ4_K; return true;
    case 13: *out = DType::kQ5_K; return true;
    case 14: *out = DType::kQ6_K; return true;
    case 26: *out = DType::kI32; return true;
    case 28: *out = DType::kF64; return true;
    case 30: *out = DType::kBF16; return true;
    default: return false;
  }
}

/// ggml's name for a type id (for error messages); "" for ids ggml never defined.
constexpr std::string_view ggml_type_name(uint32_t id) {
  constexpr std::string_view kNames[] = {
      "f32", "f16", "q4_0", "q4_1", "", "", "q5_0", "q5_1", "q8_0", "q8_1", "q2_K", "q3_K",
      "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl",
      "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m", "bf16", "", "",
      "", "tq1_0", "tq2_0", "", "", "", "mxfp4"};
  return id < std::size(kNames) ? kNames[id] : std::string_view();
}

/// Name of a metadata value type id, "" when unknown.
constexpr std::string_view gguf_type_name(uint32_t id) {
  constexpr std::string_view kNames[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                         "bool", "string", "array", "u64", "i64", "f64"};
  return id < std::size(kNames) ? kNames[id] : std::string_view();
}

namespace detail {

/// Fixed on-disk size of a scalar metadata type, 0 for string/array/unknown.
constexpr uint64_t gguf_scalar_size(uint32_t type) {
  switch (GgufType(type)) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    default: return 0;
  }
}

/// The least bytes one value of this type can take, used to reject absurd
/// counts before allocating for them.
constexpr uint64_t gguf_min_size(uint32_t type) {
  if (type == uint32_t(GgufType::kString)) return 8;   // u64 length
  if (type == uint32_t(GgufType::kArray)) return 12;   // u32 type + u64 count
  return gguf_scalar_size(type);
}

/// Decodes one little-endian scalar into JSON: unsigned ids become unsigned JSON
/// numbers, signed ids signed ones, f32 the double of that float.
inline nlohmann::json gguf_scalar_json(uint32_t type, const unsigned char* p) {
  auto rd = [p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (GgufType(type)) {
    case GgufType::kU8: return uint64_t(rd(uint8_t{}));
    case GgufType::kI8: return int64_t(rd(int8_t{}));
    case GgufType::kU16: return uint64_t(rd(uint16_t{}));
    case GgufType::kI16: return int64_t(rd(int16_t{}));
    case GgufType::kU32: return uint64_t(rd(uint32_t{}));
    case GgufType::kI32: return int64_t(rd(int32_t{}));
    case GgufType::kF32: return double(rd(float{}));
    case GgufType::kBool: return rd(uint8_t{}) != 0;
    case GgufType::kU64: return rd(uint64_t{});
    case GgufType::kI64: return rd(int64_t{});
    case GgufType::kF64: return rd(double{});
    default: return nullptr;
  }
}

/// JSON text for error messages; never throws on strings that are not UTF-8.
inline std::string json_text(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

class GgufMetaReader {
 public:
  explicit GgufMetaReader(Cursor& c) : c_(c) {}

  std::string string(const std::string& what) {
    const uint64_t n = c_.get<uint64_t>(what);
    return c_.str(n, what);
  }

  nlohmann::json value(uint32_t type, const std::string& key, int depth) {
    const std::string what = "value of key '" + key + "'";
    if (const uint64_t sz = gguf_scalar_size(type)) {
      unsigned char b[8];
      c_.read(b, sz, what);
      return gguf_scalar_json(type, b);
    }
    if (type == uint32_t(GgufType::kString)) return string(what);
    if (type != uint32_t(GgufType::kArray))
      throw FormatError(c_.path() + ": key '" + key + "' has unknown value type id " + std::to_string(type) +
                        " (expected 0..12)");
    if (depth >= kGgufMaxArrayDepth)
      throw FormatError(c_.path() + ": key '" + key + "' nests arrays deeper than " +
                        std::to_string(kGgufMaxArrayDepth) + " levels");
    const uint32_t et = c_.get<uint32_t>("array type of key '" + key + "'");
    const uint64_t n = c_.get<uint64_t>("array length of key '" + key + "'");
    const uint64_t min = gguf_min_size(et);
    if (min == 0)
      throw FormatError(c_.path() + ": key '" + key + "' is an array of unknown value type id " + std::to_string(et) +
                        " (expected 0..12)");
    if (n > c_.remaining() / min)
      throw FormatError(c_.path() + ": key '" + key + "' claims an array of " + std::to_string(n) + " " +
                        std::string(gguf_type_name(et)) + " values at offset " + std::to_string(c_.pos()) +
                        ", more than the remaining " + std::to_string(c_.remaining()) +
                        " bytes can hold (corrupt or truncated file)");
    nlohmann::json arr = nlohmann::json::array();
    auto& vec = arr.get_ref<nlohmann::json::array_t&>();
    vec.reserve(size_t(n));
    if (const uint64_t sz = gguf_scalar_size(et)) {
      // Numeric arrays (scores, token types) can hold 100k+ entries: read them in one go.
      std::vector<unsigned char> raw(size_t(n * sz));
      c_.read(raw.data(), n * sz, what);
      for (uint64_t i = 0; i < n; ++i) vec.push_back(gguf_scalar_json(et, raw.data() + i * sz));
    } else if (et == uint32_t(GgufType::kString)) {  // vocabularies: 100k+ strings
      for (uint64_t i = 0; i < n; ++i) vec.push_back(string(what));
    } else {
      for (uint64_t i = 0; i < n; ++i) vec.push_back(value(et, key, depth + 1));
    }
    return arr;
  }

 private:
  Cursor& c_;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outermost-first
  DType dtype = DType::kF32;
  uint64_t offset = 0;         // relative to the data section
  uint64_t nbytes = 0;
};

}  // namespace detail

/// Opens a GGUF file (v2 or v3). Every metadata key/value goes into `meta` as
/// JSON under its GGUF key (unsigned ints as unsigned numbers, signed as signed,
/// f32 as the double of that float, strings as raw bytes). Tensor shapes are
/// outermost-first (GGUF ne = {in, out} becomes {out, in}); block-quantized
/// tensors point at their raw blocks. Throws Error naming the file (and tensor)
/// on any malformed or unsupported content.
inline TensorFile open_gguf(const std::string& path, LoadMode mode = LoadMode::kRead) {
  using nlohmann::json;
  detail::InputFile f(path);
  detail::Cursor c(f);
  TensorFile tf;
  tf.path = path;
  tf.format = "gguf";
  tf.meta = json::object();

  if (f.size() < 4) throw FormatError(path + ": file is " + std::to_string(f.size()) + " bytes, too small for GGUF");
  const uint32_t magic = c.get<uint32_t>("magic");
  if (magic != kGgufMagic) {
    char m[5] = {};
    std::memcpy(m, &magic, 4);
    for (char& ch : m)
      if (ch && (ch < 32 || ch > 126)) ch = '?';
    throw FormatError(path + ": not a GGUF file (magic '" + std::string(m) + "', expected 'GGUF')");
  }
  const uint32_t version = c.get<uint32_t>("version");
  if (version == 1)
    throw UnsupportedError(path + ": GGUF v1 is not supported (re-convert it with a current llama.cpp)");
  if ((version & 0xffffu) == 0 && version != 0)
    throw UnsupportedError(path + ": big-endian GGUF is not supported (version field " + std::to_string(version) + ")");
  if (version != 2 && version != 3)
    throw UnsupportedError(path + ": unsupported GGUF version " + std::to_string(version) + " (expected 2 or 3)");
  const uint64_t n_tensors = c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("metadata count");
  // A key/value takes at least 13 bytes and a tensor info at least 24.
  if (n_kv > c.remaining() / 13 || n_tensors > c.remaining() / 24)
    throw FormatError(path + ": header claims " + std::to_string(n_kv) + " metadata pairs and " +
                      std::to_string(n_tensors) + " tensors, more than a " + std::to_string(f.size()) +
                      "-byte file can hold (corrupt or truncated)");

  detail::GgufMetaReader mr(c);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = mr.string("metadata key #" + std::to_string(i));
    const uint32_t type = c.get<uint32_t>("type of key '" + key + "'");
    json v = mr.value(type, key, 0);
    if (tf.meta.contains(key)) throw FormatError(path + ": duplicate metadata key '" + key + "'");
    tf.meta[key] = std::move(v);
  }

  uint64_t alignment = kGgufDefaultAlignment;
  if (auto it = tf.meta.find("general.alignment"); it != tf.meta.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (int64_t(1) << 30) ||
        !std::has_single_bit(uint64_t(it->get<int64_t>())))
      throw FormatError(path + ": general.alignment = " + detail::json_text(*it) + " is not a power of two");
    alignment = uint64_t(it->get<int64_t>());
  }

  std::vector<detail::GgufTensorInfo> infos;
  infos.reserve(size_t(n_tensors));
  std::unordered_set<std::string> seen;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    detail::GgufTensorInfo ti;
    ti.name = mr.string("name of tensor #" + std::to_string(i));
    const std::string tn = "tensor '" + ti.name + "'";
    if (!seen.insert(ti.name).second) throw FormatError(path + ": duplicate " + tn);
    const uint32_t n_dims = c.get<uint32_t>("dimension count of " + tn);
    if (n_dims > kGgufMaxDims)
      throw FormatError(path + ": " + tn + " has " + std::to_string(n_dims) + " dimensions (at most " +
                        std::to_string(kGgufMaxDims) + " supported)");
    uint64_t ne[kGgufMaxDims] = {1, 1, 1, 1};
    c.read(ne, uint64_t(n_dims) * 8, "dimensions of " + tn);
    int64_t numel = 1;
    std::string dims_text;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (d) dims_text += ',';
      dims_text += std::to_string(ne[d]);
      if (ne[d] > uint64_t(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, int64_t(ne[d]), &numel))
        throw FormatError(path + ": " + tn + " has dimensions overflowing int64 (ne = " + dims_text + ")");
    }
    for (uint32_t d = n_dims; d-- > 0;) ti.shape.push_back(int64_t(ne[d]));
    const uint32_t type = c.get<uint32_t>("type of " + tn);
    if (!dtype_from_ggml(type, &ti.dtype)) {
      const std::string_view known = ggml_type_name(type);
      throw UnsupportedError(path + ": " + tn + " has unsupported ggml type id " + std::to_string(type) +
                             (known.empty() ? " (unknown to ggml)" : " (" + std::string(known) + ")") +
                             "; supported: f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q6_K, i32, f64");
    }
    const int64_t bs = dtype_block_size(ti.dtype);
    if (n_dims > 0 && int64_t(ne[0]) % bs != 0)
      throw FormatError(path + ": " + tn + " row length " + std::to_string(ne[0]) + " is not a multiple of the " +
                        std::string(dtype_name(ti.dtype)) + " block size " + std::to_string(bs));
    if (!dtype_bytes_checked(ti.dtype, numel, &ti.nbytes))
      throw FormatError(path + ": " + tn + " element count " + std::to_string(numel) + " is not a whole number of " +
                        std::string(dtype_name(ti.dtype)) + " blocks");
    ti.offset = c.get<uint64_t>("data offset of " + tn);
    if (ti.offset % alignment != 0)
      throw FormatError(path + ": " + tn + " data offset " + std::to_string(ti.offset) +
                        " is not a multiple of the alignment " + std::to_string(alignment));
    infos.push_back(std::move(ti));
  }

  uint64_t data_start = 0;
  if (!detail::align_up_u64(c.pos(), alignment, &data_start))
    throw FormatError(path + ": data section offset overflows");
  uint64_t data_len = 0;  // bytes of the data section the tensors use
  for (const auto& ti : infos) {
    uint64_t end = 0, abs_end = 0;
    if (!detail::add_u64(ti.offset, ti.nbytes, &end) || !detail::add_u64(data_start, end, &abs_end) ||
        abs_end > f.size())
      throw FormatError(path + ": tensor '" + ti.name + "' (" + std::to_string(ti.nbytes) + " bytes at data offset " +
                        std::to_string(ti.offset) + ") ends past EOF at " + std::to_string(f.size()) +
                        " bytes (truncated download?)");
    data_len = std::max(data_len, end);
  }
  {  // Two tensors sharing bytes would alias each other's weights (ggml refuses such files too).
    std::vector<const decltype(infos)::value_type*> by_off;
    by_off.reserve(infos.size());
    for (const auto& ti : infos) by_off.push_back(&ti);
    std::sort(by_off.begin(), by_off.end(),
              [](auto* a, auto* b) { return std::pair(a->offset, a->nbytes) < std::pair(b->offset, b->nbytes); });
    for (size_t i = 1; i < by_off.size(); ++i)
      if (by_off[i - 1]->offset + by_off[i - 1]->nbytes > by_off[i]->offset)  // no overflow: both end in the file
        throw FormatError(path + ": tensors '" + by_off[i - 1]->name + "' and '" + by_off[i]->name +
                          "' overlap in the data section");
  }

  const unsigned char* base = detail::load_region(f, tf, mode, data_start, data_len);
  for (auto& ti : infos) {
    TensorRecord r;
    r.name = std::move(ti.name);
    r.dtype = ti.dtype;
    r.shape = std::move(ti.shape);
    r.nbytes = size_t(ti.nbytes);
    r.data = base ? base + ti.offset : nullptr;
    tf.add(std::move(r));
  }
  detail::realign_tensors(tf);  // only acts when general.alignment < element size
  return tf;
}

/// Builds a GGUF v3 file: typed metadata setters, tensors, then an atomic write.
/// Tensor data is not copied: it must stay valid until write() returns.
///
///   GgufWriter w;
///   w.set_str("general.architecture", "llama");
///   w.set_u32("llama.block_count", 5);
///   w.add_tensor("token_embd.weight", DType::kF32, {512, 64}, emb.data());
///   w.write("model.gguf");
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = kGgufDefaultAlignment) {
    check_alignment(alignment);
    alignment_ = alignment;
    if (alignment != kGgufDefaultAlignment) set_u32("general.alignment", alignment);
  }

  void set_u8(const std::string& k, uint8_t v) { scalar(k, GgufType::kU8, v); }
  void set_i8(const std::string& k, int8_t v) { scalar(k, GgufType::kI8, v); }
  void set_u16(const std::string& k, uint16_t v) { scalar(k, GgufType::kU16, v); }
  void set_i16(const std::string& k, int16_t v) { scalar(k, GgufType::kI16, v); }
  void set_u32(const std::string& k, uint32_t v) {
    if (k == "general.alignment") {
      check_alignment(v);
      alignment_ = v;
    }
    scalar(k, GgufType::kU32, v);
  }
  void set_i32(const std::string& k, int32_t v) { scalar(k, GgufType::kI32, v); }
  void set_u64(const std::string& k, uint64_t v) { scalar(k, GgufType::kU64, v); }
  void set_i64(const std::string& k, int64_t v) { scalar(k, GgufType::kI64, v); }
  void set_f32(const std::string& k, float v) { scalar(k, GgufType::kF32, v); }
  void set_f64(const std::string& k, double v) { scalar(k, GgufType::kF64, v); }
  void set_bool(const std::string& k, bool v) { scalar(k, GgufType::kBool, uint8_t(v ? 1 : 0)); }
  void set_str(const std::string& k, std::string_view v) {
    std::string b;
    put_u32(b, uint32_t(GgufType::kString));
    put_str(b, v);
    kv(k, std::move(b));
  }
  void set_arr_str(const std::string& k, const std::vector<std::string>& v) {
    std::string b = arr_head(GgufType::kString, v.size());
    for (const auto& s : v) put_str(b, s);
    kv(k, std::move(b));
  }
  void set_arr_u8(const std::string& k, const std::vector<uint8_t>& v) { arr(k, GgufType::kU8, v); }
  void set_arr_i32(const std::string& k, const std::vector<int32_t>& v) { arr(k, GgufType::kI32, v); }
  void set_arr_u32(const std::string& k, const std::vector<uint32_t>& v) { arr(k, GgufType::kU32, v); }
  void set_arr_i64(const std::string& k, const std::vector<int64_t>& v) { arr(k, GgufType::kI64, v); }
  void set_arr_u64(const std::string& k, const std::vector<uint64_t>& v) { arr(k, GgufType::kU64, v); }
  void set_arr_f32(const std::string& k, const std::vector<float>& v) { arr(k, GgufType::kF32, v); }
  void set_arr_f64(const std::string& k, const std::vector<double>& v) { arr(k, GgufType::kF64, v); }
  void set_arr_bool(const std::string& k, const std::vector<bool>& v) {
    std::string b = arr_head(GgufType::kBool, v.size());
    for (bool x : v) b.push_back(char(x ? 1 : 0));
    kv(k, std::move(b));
  }

  /// Stores a JSON value with an explicit type: a scalar of `leaf`, or a
  /// (possibly nested) array whose scalars are all of type `leaf`.
  void set(const std::string& k, const nlohmann::json& v, GgufType leaf) {
    if (leaf == GgufType::kArray) throw UsageError("gguf key '" + k + "': leaf type cannot be array");
    if (k == "general.alignment") {
      if (leaf != GgufType::kU32 || !v.is_number_integer())
        throw UsageError("gguf key 'general.alignment' must be a u32");
      const int64_t a = v.get<int64_t>();
      if (a <= 0 || a > int64_t(UINT32_MAX)) throw UsageError("gguf key 'general.alignment' out of range");
      set_u32(k, uint32_t(a));
      return;
    }
    std::string b;
    if (v.is_array()) {
      put_u32(b, uint32_t(GgufType::kArray));
      put_array_body(b, k, v, leaf, 0);
    } else {
      put_u32(b, uint32_t(leaf));
      put_leaf(b, k, v, leaf);
    }
    kv(k, std::move(b));
  }

  /// Stores a JSON value, picking the GGUF type from it: bool, string; unsigned
  /// JSON integers as u32 (u64 when larger), signed ones as i32 (i64 when larger);
  /// floats as f32; arrays (nested too) by the same rule over all their scalars.
  /// This round-trips what open_gguf produces for u32/i32/u64/i64/f32/bool/string
  /// values; u8/u16/i8/i16 widen to 32 bits and f64 narrows to f32, so use the
  /// typed setters when the exact type matters (llama.cpp checks types).
  void set_json(const std::string& k, const nlohmann::json& v) {
    if (k == "general.alignment" && v.is_number_integer()) return set(k, v, GgufType::kU32);
    set(k, v, infer_leaf(k, v));
  }

  /// Adds a tensor. shape is outermost-first; data must hold the tensor's bytes
  /// (for block types, raw blocks; the innermost dimension must be whole blocks)
  /// and stay valid until write(). nbytes 0 means "compute from shape".
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                  size_t nbytes = 0) {
    if (name.empty() || name.size() > 63)
      throw UsageError("gguf tensor '" + name + "': name must be 1..63 bytes (ggml limit)");
    if (tensor_index_.count(name)) throw UsageError("gguf tensor '" + name + "' added twice");
    if (shape.size() > kGgufMaxDims)
      throw UsageError("gguf tensor '" + name + "': " + std::to_string(shape.size()) + " dimensions (at most 4)");
    int64_t numel = 1;
    for (int64_t s : shape)
      if (s < 0 || __builtin_mul_overflow(numel, s, &numel))
        throw UsageError("gguf tensor '" + name + "': invalid shape");
    const int64_t bs = dtype_block_size(dtype);
    if (!shape.empty() && shape.back() % bs != 0)
      throw UsageError("gguf tensor '" + name + "': innermost dimension " + std::to_string(shape.back()) +
                       " is not a multiple of the " + std::string(dtype_name(dtype)) + " block size " +
                       std::to_string(bs));
    uint64_t want = 0;
    if (!dtype_bytes_checked(dtype, numel, &want)) throw UsageError("gguf tensor '" + name + "': size overflows");
    if (nbytes != 0 && nbytes != want)
      throw UsageError("gguf tensor '" + name + "': " + std::to_string(nbytes) + " bytes given, shape and " +
                       std::string(dtype_name(dtype)) + " need " + std::to_string(want));
    if (want > 0 && !data) throw UsageError("gguf tensor '" + name + "': null data");
    TensorRecord r;
    r.name = name;
    r.dtype = dtype;
    r.shape = std::move(shape);
    r.data = data;
    r.nbytes = size_t(want);
    tensor_index_[name] = tensors_.size();
    tensors_.push_back(std::move(r));
  }
  void add_tensor(const TensorRecord& r) { add_tensor(r.name, r.dtype, r.shape, r.data, r.nbytes); }

  size_t kv_count() const { return kvs_.size(); }
  size_t tensor_count() const { return tensors_.size(); }
  uint32_t alignment() const { return alignment_; }

  /// Writes the file atomically (temp file, fsync, rename).
  void write(const std::string& path) const {
    AtomicFileWriter w(path);
    w.put(kGgufMagic);
    w.put(uint32_t(3));
    w.put(uint64_t(tensors_.size()));
    w.put(uint64_t(kvs_.size()));
    for (const auto& [key, bytes] : kvs_) {
      std::string kb;
      put_str(kb, key);
      w.write(kb.data(), kb.size());
      w.write(bytes.data(), bytes.size());
    }
    uint64_t off = 0;
    std::vector<uint64_t> offsets;
    for (const auto& r : tensors_) {
      std::string tb;
      put_str(tb, r.name);
      put_u32(tb, uint32_t(r.shape.size()));
      for (size_t d = r.shape.size(); d-- > 0;) put_u64(tb, uint64_t(r.shape[d]));
      put_u32(tb, ggml_type_id(r.dtype));
      put_u64(tb, off);
      w.write(tb.data(), tb.size());
      offsets.push_back(off);
      off = (off + r.nbytes + alignment_ - 1) / alignment_ * alignment_;
    }
    w.pad_to(alignment_);
    [[maybe_unused]] const uint64_t data_start = w.pos();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      LOOPUS_ASSERT(w.pos() == data_start + offsets[i]);
      w.write(tensors_[i].data, tensors_[i].nbytes);
      w.pad_to(alignment_);
    }
    w.commit();
  }

 private:
  static void check_alignment(uint64_t a) {
    if (a == 0 || !std::has_single_bit(a) || a > (uint64_t(1) << 30))
      throw UsageError("gguf writer: alignment " + std::to_string(a) + " is not a power of two");
  }
  static void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
  static void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
  static void put_str(std::string& b, std::string_view s) {
    put_u64(b, s.size());
    b.append(s.data(), s.size());
  }
  static std::string arr_head(GgufType et, size_t n) {
    std::string b;
    put_u32(b, uint32_t(GgufType::kArray));
    put_u32(b, uint32_t(et));
    put_u64(b, n);
    return b;
  }
  template <class T> void scalar(const std::string& k, GgufType t, T v) {
    std::string b;
    put_u32(b, uint32_t(t));
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    kv(k, std::move(b));
  }
  template <class T> void arr(const std::string& k, GgufType t, const std::vector<T>& v) {
    std::string b = arr_head(t, v.size());
    if (!v.empty()) b.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
    kv(k, std::move(b));
  }
  void kv(const std::string& k, std::string bytes) {
    if (k.empty()) throw UsageError("gguf writer: empty metadata key");
    if (auto it = kv_index_.find(k); it != kv_index_.end()) {
      kvs_[it->second].second = std::move(bytes);  // re-setting a key replaces it in place
      return;
    }
    kv_index_[k] = kvs_.size();
    kvs_.emplace_back(k, std::move(bytes));
  }

  [[noreturn]] static void type_error(const std::string& k, const nlohmann::json& v, GgufType t) {
    std::string shown = v.is_string() ? "a string" : detail::json_text(v);
    throw UsageError("gguf key '" + k + "': value " + shown + " cannot be stored as " +
                     std::string(gguf_type_name(uint32_t(t))));
  }
  static void put_leaf(std::string& b, const std::string& k, const nlohmann::json& v, GgufType t) {
    auto put_int = [&](auto tag) {
      using T = decltype(tag);
      if (!v.is_number_integer()) type_error(k, v, t);
      T x;
      if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u > uint64_t(std::numeric_limits<T>::max())) type_error(k, v, t);
        x = T(u);
      } else {
        const int64_t s = v.get<int64_t>();
        if (s < int64_t(std::numeric_limits<T>::min()) ||
            (s > 0 && uint64_t(s) > uint64_t(std::numeric_limits<T>::max())))
          type_error(k, v, t);
        x = T(s);
      }
      b.append(reinterpret_cast<const char*>(&x), sizeof(T));
    };
    switch (t) {
      case GgufType::kU8: return put_int(uint8_t{});
      case GgufType::kI8: return put_int(int8_t{});
      case GgufType::kU16: return put_int(uint16_t{});
      case GgufType::kI16: return put_int(int16_t{});
      case GgufType::kU32: return put_int(uint32_t{});
      case GgufType::kI32: return put_int(int32_t{});
      case GgufType::kU64: return put_int(uint64_t{});
      case GgufType::kI64: return put_int(int64_t{});
      case GgufType::kF32: {
        if (!v.is_number()) type_error(k, v, t);
        const float x = v.get<float>();
        b.append(reinterpret_cast<const char*>(&x), 4);
        return;
      }
      case GgufType::kF64: {
        if (!v.is_number()) type_error(k, v, t);
        const double x = v.get<double>();
        b.append(reinterpret_cast<const char*>(&x), 8);
        return;
      }
      case GgufType::kBool:
        if (!v.is_boolean()) type_error(k, v, t);
        b.push_back(char(v.get<bool>() ? 1 : 0));
        return;
      case GgufType::kString:
        if (!v.is_string()) type_error(k, v, t);
        put_str(b, v.get_ref<const std::string&>());
        return;
      case GgufType::kArray: break;
    }
    type_error(k, v, t);
  }
  /// Array body (element type, count, elements); nested arrays recurse.
  static void put_array_body(std::string& b, const std::string& k, const nlohmann::json& v, GgufType leaf,
                             int depth) {
    if (depth >= kGgufMaxArrayDepth) throw UsageError("gguf key '" + k + "': arrays nested too deeply");
    const bool nested = !v.empty() && v.front().is_array();
    for (const auto& e : v)
      if (e.is_array() != nested) throw UsageError("gguf key '" + k + "': array mixes arrays and scalars");
    put_u32(b, uint32_t(nested ? GgufType::kArray : leaf));
    put_u64(b, v.size());
    for (const auto& e : v) {
      if (nested)
        put_array_body(b, k, e, leaf, depth + 1);
      else
        put_leaf(b, k, e, leaf);
    }
  }
  /// Collects what kinds of scalars a (nested) value holds, for set_json.
  struct Kinds {
    bool str = false, boolean = false, flt = false, sgn = false, uns = false, wide = false;
  };
  static void scan(const std::string& k, const nlohmann::json& v, Kinds& kd) {
    switch (v.type()) {
      case nlohmann::json::value_t::array:
        for (const auto& e : v) scan(k, e, kd);
        return;
      case nlohmann::json::value_t::string: kd.str = true; return;
      case nlohmann::json::value_t::boolean: kd.boolean = true; return;
      case nlohmann::json::value_t::number_float: kd.flt = true; return;
      case nlohmann::json::value_t::number_unsigned:
        kd.uns = true;
        if (v.get<uint64_t>() > UINT32_MAX) kd.wide = true;
        return;
      case nlohmann::json::value_t::number_integer: {
        kd.sgn = true;
        const int64_t s = v.get<int64_t>();
        if (s < INT32_MIN || s > INT32_MAX) kd.wide = true;
        return;
      }
      default: throw UsageError("gguf key '" + k + "': JSON " + std::string(v.type_name()) + " has no GGUF equivalent");
    }
  }
  static GgufType infer_leaf(const std::string& k, const nlohmann::json& v) {
    Kinds kd;
    scan(k, v, kd);
    const int kinds = int(kd.str) + int(kd.boolean) + int(kd.flt || kd.sgn || kd.uns);
    if (kinds > 1) throw UsageError("gguf key '" + k + "': array mixes strings, bools and numbers");
    if (kd.str) return GgufType::kString;
    if (kd.boolean) return GgufType::kBool;
    if (kd.flt) return GgufType::kF32;
    if (kd.sgn) return kd.wide ? GgufType::kI64 : GgufType::kI32;
    if (kd.uns) return kd.wide ? GgufType::kU64 : GgufType::kU32;
    return GgufType::kI32;  // an empty array: any element type will do
  }

  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<std::pair<std::string, std::string>> kvs_;  // key, type id + value bytes
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorRecord> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

/// Writes meta (each key via GgufWriter::set_json, see its type rules) and the
/// tensors to a GGUF v3 file, atomically. A "general.alignment" key in meta
/// overrides `alignment`.
inline void write_gguf(const std::string& path, const nlohmann::json& meta,
                       const std::vector<TensorRecord>& tensors,
                       uint32_t alignment = kGgufDefaultAlignment) {
  if (!meta.is_null() && !meta.is_object()) throw UsageError(path + ": GGUF metadata must be a JSON object");
  GgufWriter w;
  try {
    w = GgufWriter(alignment);
    if (meta.is_object())
      for (const auto& [k, v] : meta.items()) w.set_json(k, v);
    for (const auto& r : tensors) w.add_tensor(r);
  } catch (const Error& e) {
    throw Error(e.kind(), path + ": " + e.what());  // the writer's messages name the key or tensor
  }
  w.write(path);
}

}  // namespace loopus::io
