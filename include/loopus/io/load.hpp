// open_any: picks the GGUF, safetensors or llama2.c loader for a path by magic, extension or folder.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "loopus/core/error.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/llama2c.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/io/tensor_file.hpp"

namespace loopus::io {

/// Which loader open_any would use for a path.
enum class FileFormat { kGguf, kSafetensors, kLlama2c };

/// Detects the format: a folder or `.json` index is safetensors; then the GGUF
/// magic; then a `.gguf` or `.safetensors` extension or a header that looks like one (u64
/// length, then '{'); then the llama2.c "ak42" magic or a `.bin` extension.
/// Throws Error listing the accepted formats when nothing fits.
inline FileFormat detect_format(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) return FileFormat::kSafetensors;
  if (!fs::exists(p, ec)) throw IoError(path + ": no such file or folder");
  const std::string ext = p.extension().string();
  if (ext == ".json") return FileFormat::kSafetensors;
  detail::InputFile f(path);
  unsigned char head[9] = {};
  const uint64_t n = std::min<uint64_t>(f.size(), sizeof(head));
  f.read_at(head, n, 0, "file header");
  uint32_t magic = 0;
  if (n >= 4) std::memcpy(&magic, head, 4);
  if (n >= 4 && magic == kGgufMagic) return FileFormat::kGguf;
  if (ext == ".gguf") return FileFormat::kGguf;  // let the GGUF loader say what is wrong
  if (ext == ".safetensors") return FileFormat::kSafetensors;
  if (n == 9) {
    uint64_t hlen = 0;
    std::memcpy(&hlen, head, 8);
    if (head[8] == '{' && hlen >= 2 && hlen <= f.size() - 8) return FileFormat::kSafetensors;
  }
  if ((n >= 4 && magic == kLlama2cMagic) || ext == ".bin") return FileFormat::kLlama2c;
  throw FormatError(path +
                    ": unrecognised model format; accepted: GGUF (magic 'GGUF', .gguf), safetensors "
                    "(.safetensors file, model.safetensors.index.json, or a Hugging Face folder), "
                    "llama2.c checkpoint (.bin)");
}

/// Opens any supported weights file or folder (see detect_format).
inline TensorFile open_any(const std::string& path, LoadMode mode = LoadMode::kRead) {
  switch (detect_format(path)) {
    case FileFormat::kGguf: return open_gguf(path, mode);
    case FileFormat::kSafetensors: return open_safetensors(path, mode);
    case FileFormat::kLlama2c: return open_llama2c(path, mode);
  }
  throw FormatError(path + ": unrecognised model format");
}

}  // namespace loopus::io
