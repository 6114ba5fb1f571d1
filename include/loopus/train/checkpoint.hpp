// Training-state files: a JSON header plus named binary blobs and a checksum, written atomically (temp file, fsync, rename).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/core/json_check.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/json_field.hpp"

namespace loopus::train {

/// Layout of a training-state file ("LPTRAIN1"):
///   8 bytes magic | u64 header length | header JSON | blobs back to back |
///   u64 FNV-1a 64 of every byte before it.
/// The header holds {"state": ..., "blobs": [{"name", "offset", "bytes"}]}.
/// A reader rejects a file whose size, magic or checksum is off, so a
/// truncated or torn file is never mistaken for a checkpoint; the writer goes
/// through io::AtomicFileWriter, so the previous file stays in place until the
/// new one is complete and synced.
inline constexpr char kCheckpointMagic[8] = {'L', 'P', 'T', 'R', 'A', 'I', 'N', '1'};

struct CheckpointBlob {
  std::string name;
  const void* data = nullptr;
  uint64_t bytes = 0;
};

namespace detail {
struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
};
}  // namespace detail

/// Writes state + blobs to path atomically.
inline void write_checkpoint(const std::string& path, const nlohmann::json& state,
                             const std::vector<CheckpointBlob>& blobs) {
  nlohmann::json h;
  h["state"] = state;
  h["blobs"] = nlohmann::json::array();
  uint64_t off = 0;
  for (const auto& b : blobs) {
    h["blobs"].push_back({{"name", b.name}, {"offset", off}, {"bytes", b.bytes}});
    off += b.bytes;
  }
  const std::string text = h.dump();
  io::AtomicFileWriter w(path);
  detail::Fnv1a sum;
  auto put = [&](const void* p, size_t n) {
    w.write(p, n);
    sum.add(p, n);
  };
  put(kCheckpointMagic, 8);
  const uint64_t len = text.size();
  put(&len, 8);
  put(text.data(), text.size());
  for (const auto& b : blobs) put(b.data, size_t(b.bytes));
  w.put(sum.h);
  w.commit();
}

/// A checkpoint read back and verified.
class LoadedCheckpoint {
 public:
  const nlohmann::json& state() const { return state_; }
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  /// The blob `name`, which must hold exactly `bytes` bytes.
  const void* blob(const std::string& name, uint64_t bytes) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw FormatError(path_ + ": checkpoint has no tensor '" + name + "'");
    if (it->second.second != bytes)
      throw FormatError(path_ + ": checkpoint tensor '" + name + "' has " + std::to_string(it->second.second) +
                        " bytes, expected " + std::to_string(bytes) + " (different model or settings?)");
    return data_.data() + it->second.first;
  }
  void copy(const std::string& name, void* dst, uint64_t bytes) const { std::memcpy(dst, blob(name, bytes), bytes); }

  static LoadedCheckpoint read(const std::string& path) {
    LoadedCheckpoint c;
    c.path_ = path;
    io::detail::InputFile f(path);
    const uint64_t size = f.size();
    if (size < 24)
      throw FormatError(path + ": not a loopus training checkpoint (too short: " + std::to_string(size) + " bytes)");
    std::vector<char> all(static_cast<size_t>(size));
    f.read_at(all.data(), size, 0, "checkpoint");
    if (std::memcmp(all.data(), kCheckpointMagic, 8) != 0)
      throw FormatError(path + ": not a loopus training checkpoint (bad magic)");
    detail::Fnv1a sum;
    sum.add(all.data(), size_t(size - 8));
    uint64_t want;
    std::memcpy(&want, all.data() + size - 8, 8);
    if (sum.h != want) throw FormatError(path + ": checkpoint checksum mismatch (torn or corrupted file)");
    uint64_t len;
    std::memcpy(&len, all.data() + 8, 8);
    if (len > size - 24)
      throw FormatError(path + ": checkpoint header length " + std::to_string(len) + " runs past EOF");
    nlohmann::json h;
    check_json_text(std::string_view(all.data() + 16, size_t(len)), path + ": checkpoint header");
    try {
      h = nlohmann::json::parse(all.begin() + 16, all.begin() + 16 + int64_t(len));
    } catch (const std::exception& e) {
      throw FormatError(path + ": checkpoint header is not valid JSON (" + e.what() + ")");
    }
    if (!h.is_object() || !h.contains("state") || !h.contains("blobs") || !h["blobs"].is_array())
      throw FormatError(path + ": checkpoint header lacks 'state' or 'blobs'");
    const uint64_t base = 16 + len, payload = size - 8 - base;
    size_t i = 0;
    for (const auto& b : h["blobs"]) {
      const std::string where = path + ": checkpoint blob #" + std::to_string(i++);
      if (!b.is_object()) throw FormatError(where + " is not an object");
      const auto name = io::json_required<std::string>(b, "name", where);
      const auto off = io::json_required<uint64_t>(b, "offset", where);
      const auto n = io::json_required<uint64_t>(b, "bytes", where);
      if (off > payload || n > payload - off)
        throw FormatError(path + ": checkpoint blob '" + name + "' runs past EOF");
      if (!c.index_.emplace(name, std::pair<size_t, size_t>{size_t(base + off), size_t(n)}).second)
        throw FormatError(path + ": checkpoint blob '" + name + "' appears twice");
    }
    c.state_ = std::move(h["state"]);
    c.data_ = std::move(all);
    return c;
  }

 private:
  std::string path_;
  nlohmann::json state_;
  std::vector<char> data_;
  std::map<std::string, std::pair<size_t, size_t>> index_;
};

}  // namespace loopus::train
