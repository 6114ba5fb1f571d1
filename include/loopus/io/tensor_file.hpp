// TensorFile: what every loader produces: named tensors over owned or mapped bytes, plus metadata.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"

namespace loopus::io {

/// One tensor as stored in a file. shape is outermost-first (numpy/HF order),
/// so a GGUF tensor with ne = {in, out} has shape {out, in}.
/// For block-quantized dtypes `data` points at the raw blocks.
struct TensorRecord {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

/// How a loader brings tensor bytes into memory.
enum class LoadMode {
  kRead,  ///< read into the library's own aligned memory (default: stable speed)
  kMmap,  ///< map the file read-only (fast start; the kernel may page cold weights out)
};

/// A parsed file (or set of shards). Owns the bytes the records point into.
class TensorFile {
 public:
  std::string path;      ///< file or folder it came from (for error messages)
  std::string format;    ///< "gguf", "safetensors", "llama2c"
  nlohmann::json meta;   ///< GGUF key/values, or {"config": config.json, "metadata": header __metadata__}
  std::vector<TensorRecord> tensors;

  const TensorRecord* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors[it->second];
  }
  /// Throws Error("<path>: tensor '<name>' not found ...") when absent.
  const TensorRecord& get(const std::string& name) const {
    const TensorRecord* r = find(name);
    if (!r) throw FormatError(path + ": tensor '" + name + "' not found (is this the right model family?)");
    return *r;
  }
  void add(TensorRecord r) {
    if (index_.count(r.name)) throw FormatError(path + ": duplicate tensor '" + r.name + "'");
    index_[r.name] = tensors.size();
    tensors.push_back(std::move(r));
  }
  /// Storage kept alive as long as the file object lives.
  std::vector<AlignedBuffer> buffers;
  std::vector<std::shared_ptr<void>> mappings;

 private:
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace loopus::io
