// safetensors reader (single file, HF folder, sharded index) and atomic writer.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/json_check.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/tensor_file.hpp"

namespace loopus::io {

/// Largest JSON header we accept; the reference implementation's limit (100 MB).
inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

/// The safetensors dtype string of a DType; "" for types safetensors cannot store
/// (the ggml block formats).
constexpr std::string_view safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kF64: return "F64";
    default: return "";
  }
}

/// The DType of a safetensors dtype string; false for dtypes loopus does not support.
inline bool dtype_from_safetensors(std::string_view s, DType* out) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kF64})
    if (s == safetensors_dtype_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

namespace detail {

/// Order in which the reference writer lays out tensors: larger dtypes first (its
/// dtype enum, descending), which keeps every tensor aligned to its element size.
constexpr int safetensors_dtype_rank(DType t) {
  switch (t) {
    case DType::kF64: return 0;
    case DType::kF32: return 1;
    case DType::kI32: return 2;
    case DType::kBF16: return 3;
    case DType::kF16: return 4;
    default: return 5;
  }
}

inline nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  InputFile f(path);
  if (f.size() > kSafetensorsMaxHeader)
    throw FormatError(path + ": " + what + " is " + std::to_string(f.size()) + " bytes, too large");
  std::string s(size_t(f.size()), '\0');
  f.read_at(s.data(), f.size(), 0, what);
  check_json_text(s, path + ": " + what);
  nlohmann::json j = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw FormatError(path + ": " + what + " is not valid JSON");
  return j;
}

inline bool json_u64(const nlohmann::json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = uint64_t(v.get<int64_t>());
    return true;
  }
  return false;
}

/// Parses one .safetensors file and adds its tensors to tf. Returns its __metadata__ (or null).
inline nlohmann::json load_safetensors_file(TensorFile& tf, const std::string& path, LoadMode mode) {
  using nlohmann::json;
  InputFile f(path);
  if (f.size() < 8)
    throw FormatError(path + ": file is " + std::to_string(f.size()) + " bytes, too small for safetensors");
  uint64_t hlen = 0;
  f.read_at(&hlen, 8, 0, "header length");
  if (hlen > f.size() - 8)
    throw FormatError(path + ": header length " + std::to_string(hlen) + " runs past EOF (file is " +
                      std::to_string(f.size()) + " bytes; not safetensors, or truncated)");
  if (hlen > kSafetensorsMaxHeader)
    throw FormatError(path + ": header length " + std::to_string(hlen) + " exceeds the " +
                      std::to_string(kSafetensorsMaxHeader) + "-byte limit");
  std::string text(size_t(hlen), '\0');
  f.read_at(text.data(), hlen, 8, "JSON header");
  check_json_text(text, path + ": header");
  json h = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object()) throw FormatError(path + ": header is not a valid JSON object");
  const uint64_t data_start = 8 + hlen;
  const uint64_t data_size = f.size() - data_start;

  struct Item {
    TensorRecord r;
    uint64_t begin, end;
  };
  std::vector<Item> items;
  json metadata;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      metadata = v;
      continue;
    }
    const std::string tn = path + ": tensor '" + name + "'";
    if (!v.is_object()) throw FormatError(tn + ": header entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto of = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) throw FormatError(tn + ": missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) throw FormatError(tn + ": missing or non-array 'shape'");
    if (of == v.end() || !of->is_array() || of->size() != 2)
      throw FormatError(tn + ": 'data_offsets' must be [begin, end]");
    Item it;
    it.r.name = name;
    if (!dtype_from_safetensors(dt->get_ref<const std::string&>(), &it.r.dtype))
      throw UnsupportedError(tn + " has dtype '" + dt->get<std::string>() +
                             "' which loopus does not support (F32, F16, BF16, I32, F64)");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t x = 0;
      if (!json_u64(d, &x) || x > uint64_t(std::numeric_limits<int64_t>::max()) || !mul_u64(numel, x, &numel) ||
          numel > uint64_t(std::numeric_limits<int64_t>::max()))
        throw FormatError(tn + ": invalid or overflowing shape " + sh->dump());
      it.r.shape.push_back(int64_t(x));
    }
    uint64_t nbytes = 0;
    if (!mul_u64(numel, dtype_size(it.r.dtype), &nbytes)) throw FormatError(tn + ": byte size overflows");
    if (!json_u64((*of)[0], &it.begin) || !json_u64((*of)[1], &it.end) || it.begin > it.end)
      throw FormatError(tn + ": invalid data_offsets " + of->dump());
    if (it.end > data_size)
      throw FormatError(tn + ": data_offsets " + of->dump() + " run past EOF (data section is " +
                        std::to_string(data_size) + " bytes; truncated?)");
    if (it.end - it.begin != nbytes)
      throw FormatError(tn + ": data_offsets " + of->dump() + " span " + std::to_string(it.end - it.begin) +
                        " bytes but shape " + sh->dump() + " of " + dt->get<std::string>() + " needs " +
                        std::to_string(nbytes));
    it.r.nbytes = size_t(nbytes);
    items.push_back(std::move(it));
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t data_len = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0 && items[i].begin < items[i - 1].end)
      throw FormatError(path + ": tensors '" + items[i - 1].r.name + "' and '" + items[i].r.name +
                        "' overlap in the data section");
    data_len = std::max(data_len, items[i].end);
  }
  for (auto& it : items)  // names clash across shards: say which file added the second one
    if (tf.find(it.r.name)) throw FormatError(path + ": tensor '" + it.r.name + "' also appears in an earlier shard");

  const unsigned char* base = load_region(f, tf, mode, data_start, data_len);
  for (auto& it : items) {
    it.r.data = base ? base + it.begin : nullptr;
    tf.add(std::move(it.r));
  }
  return metadata;
}

inline void merge_metadata(nlohmann::json& meta, const nlohmann::json& md) {
  if (md.is_null()) return;
  if (!md.is_object() || !meta.contains("metadata")) {
    meta["metadata"] = md;
    return;
  }
  for (const auto& [k, v] : md.items()) meta["metadata"][k] = v;
}

}  // namespace detail

/// Opens safetensors weights: a `.safetensors` file; a folder holding
/// `model.safetensors.index.json` (every shard its weight_map names is loaded)
/// or `model.safetensors`; or such an index file itself. For a folder (or
/// index), `config.json` beside it goes to meta["config"]. The header
/// `__metadata__` (merged over shards) goes to meta["metadata"]. Every tensor's
/// data is aligned to its element size. Throws Error naming the file and tensor
/// on malformed input.
inline TensorFile open_safetensors(const std::string& path_or_dir, LoadMode mode = LoadMode::kRead) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  TensorFile tf;
  tf.path = path_or_dir;
  tf.format = "safetensors";
  tf.meta = json::object();

  std::error_code ec;
  const fs::path p(path_or_dir);
  const bool is_dir = fs::is_directory(p, ec);
  fs::path dir, index;
  if (is_dir) {
    dir = p;
    if (fs::exists(p / "model.safetensors.index.json", ec)) {
      index = p / "model.safetensors.index.json";
    } else if (!fs::exists(p / "model.safetensors", ec)) {
      throw IoError(path_or_dir + ": folder has neither model.safetensors nor model.safetensors.index.json");
    }
  } else if (p.extension() == ".json") {
    index = p;
    dir = p.parent_path();
  }

  if (!is_dir && index.empty()) {
    detail::merge_metadata(tf.meta, detail::load_safetensors_file(tf, path_or_dir, mode));
  } else if (index.empty()) {
    detail::merge_metadata(tf.meta, detail::load_safetensors_file(tf, (dir / "model.safetensors").string(), mode));
  } else {
    const std::string ip = index.string();
    json idx = detail::read_json_file(ip, "shard index");
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw FormatError(ip + ": expected an object with a 'weight_map' object");
    std::map<std::string, std::vector<std::string>> shards;  // file -> tensors it must hold
    for (const auto& [name, file] : idx["weight_map"].items()) {
      if (!file.is_string()) throw FormatError(ip + ": weight_map entry for '" + name + "' is not a string");
      const std::string& fn = file.get_ref<const std::string&>();
      const fs::path fp(fn);
      // Shards live beside the index; refuse paths that would leave the folder.
      if (fn.empty() || fp.is_absolute() || fp.has_parent_path())
        throw FormatError(ip + ": weight_map entry for '" + name + "' names '" + fn +
                          "', expected a file name in the same folder");
      shards[fn].push_back(name);
    }
    if (shards.empty()) throw FormatError(ip + ": weight_map is empty");
    for (const auto& [fn, names] : shards) {
      const std::string sp = (dir / fn).string();
      if (!fs::exists(sp, ec)) throw IoError(ip + ": shard " + sp + " is missing");
      detail::merge_metadata(tf.meta, detail::load_safetensors_file(tf, sp, mode));
      for (const auto& n : names) {
        if (!tf.find(n))
          throw FormatError(sp + ": tensor '" + n + "' listed in " + index.filename().string() +
                            " is not in this shard");
      }
    }
  }
  if (!dir.empty()) {
    const fs::path cfg = dir / "config.json";
    if (fs::exists(cfg, ec)) tf.meta["config"] = detail::read_json_file(cfg.string(), "config");
  }
  detail::realign_tensors(tf);
  return tf;
}

namespace detail {
/// write_safetensors() into an open writer, not committed (a folder writer finishes every file first).
inline void write_safetensors_to(AtomicFileWriter& w, const std::vector<TensorRecord>& tensors,
                                 const nlohmann::json& metadata) {
  const std::string& path = w.path();
  std::vector<const TensorRecord*> order;
  std::set<std::string> names;
  for (const auto& r : tensors) {
    const std::string tn = path + ": tensor '" + r.name + "'";
    if (r.name.empty() || r.name == "__metadata__") throw UsageError(tn + ": invalid name");
    if (!names.insert(r.name).second) throw UsageError(tn + " given twice");
    if (safetensors_dtype_name(r.dtype).empty())
      throw UsageError(tn + ": safetensors cannot store " + std::string(dtype_name(r.dtype)));
    uint64_t n = 1;
    for (int64_t s : r.shape)
      if (s < 0 || !detail::mul_u64(n, uint64_t(s), &n)) throw UsageError(tn + ": invalid shape");
    uint64_t nbytes = 0;
    if (!detail::mul_u64(n, dtype_size(r.dtype), &nbytes) || nbytes != r.nbytes)
      throw UsageError(tn + ": nbytes " + std::to_string(r.nbytes) + " does not match its shape and dtype");
    if (nbytes && !r.data) throw UsageError(tn + ": null data");
    order.push_back(&r);
  }
  std::sort(order.begin(), order.end(), [](const TensorRecord* a, const TensorRecord* b) {
    const int ra = detail::safetensors_dtype_rank(a->dtype), rb = detail::safetensors_dtype_rank(b->dtype);
    return ra != rb ? ra < rb : a->name < b->name;
  });

  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.is_null() && !(metadata.is_object() && metadata.empty())) {
    if (!metadata.is_object()) throw UsageError(path + ": safetensors metadata must be an object of strings");
    for (const auto& [k, v] : metadata.items()) {
      if (!v.is_string()) throw UsageError(path + ": safetensors metadata value for '" + k + "' must be a string");
      h["__metadata__"][k] = v.get<std::string>();
    }
  }
  uint64_t off = 0;
  for (const TensorRecord* r : order) {
    nlohmann::ordered_json e;
    e["dtype"] = std::string(safetensors_dtype_name(r->dtype));
    e["shape"] = r->shape;
    e["data_offsets"] = {off, off + r->nbytes};
    h[r->name] = std::move(e);
    off += r->nbytes;
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception&) {
    throw UsageError(path + ": tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  w.put(uint64_t(text.size()));
  w.write(text.data(), text.size());
  for (const TensorRecord* r : order) w.write(r->data, r->nbytes);
}
}  // namespace detail

/// Writes tensors to a .safetensors file atomically (temp file, fsync, rename),
/// in the reference library's layout: tensors ordered by dtype (largest first)
/// then name, header padded with spaces to a multiple of 8 bytes. metadata is
/// null/empty or an object of string values (stored as `__metadata__`).
inline void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                              const nlohmann::json& metadata = {}) {
  AtomicFileWriter w(path);
  detail::write_safetensors_to(w, tensors, metadata);
  w.commit();
}

/// Writes a model folder: `dir/model.safetensors` and `dir/config.json` (the
/// folder is created when missing). What "atomic" means for a folder: each file
/// is written to a temporary name and fsynced, both before either is renamed
/// into place, weights first and config.json last. A failed write (full disk,
/// size limit, I/O error) renames nothing: the folder keeps its previous model
/// and files. Only a crash between the two renames (microseconds) can leave the
/// new weights beside the previous config.json; a first save that never got its
/// config.json is not a model folder to the loaders. Other files in `dir`
/// (a training run's state and log) are left alone.
inline void write_model_folder(const std::string& dir, const std::vector<TensorRecord>& tensors,
                               const nlohmann::json& metadata, const std::string& config_text) {
  namespace fs = std::filesystem;
  make_dirs(dir);
  AtomicFileWriter wt((fs::path(dir) / "model.safetensors").string());
  detail::write_safetensors_to(wt, tensors, metadata);
  wt.finish();
  AtomicFileWriter wc((fs::path(dir) / "config.json").string());
  wc.write(config_text.data(), config_text.size());
  wc.finish();
  wt.publish();
  wc.publish();
}

}  // namespace loopus::io
