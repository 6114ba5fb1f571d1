// The writer tests' check against tests/golden/writers.json, the verdict of tests/reference/check_writers.py
// (the reference gguf / safetensors readers read these very files and checked every value).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/tensor_file.hpp"
#include "test_util.hpp"

namespace loopus::test {

/// FNV-1a 64 of bytes, as 16 lowercase hex digits (the script's fnv1a64).
inline std::string fnv1a64_hex(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

/// Checks the file at `written` (and what our reader parsed from it) against the
/// verdict recorded for `key`: same size and byte hash as the file the reference
/// reader accepted, and per tensor the same dtype, shape and data bytes.
/// GGUF lists dimensions fastest-first, so `gguf` reverses the golden's shapes.
inline void check_writer_golden(const std::string& key, const std::filesystem::path& written,
                                const io::TensorFile& parsed, bool gguf) {
  const auto golden_path = source_dir() / "tests/golden/writers.json";
  REQUIRE_MESSAGE(std::filesystem::exists(golden_path), "missing " << golden_path.string()
                                                                    << " (run tests/reference/check_writers.py)");
  const auto all = nlohmann::json::parse(read_text(golden_path));
  REQUIRE_MESSAGE(all.at("files").contains(key), "no verdict for '" << key << "' in writers.json");
  const auto& g = all.at("files").at(key);
  const std::string bytes = read_text(written);
  CAPTURE(key);
  CHECK_EQ(bytes.size(), g.at("size").get<size_t>());
  CHECK_MESSAGE(fnv1a64_hex(bytes) == g.at("fnv1a64").get<std::string>(),
                written.string() << " is not byte-identical to the file the reference reader checked; if the "
                                    "format change is intended, rerun tests/reference/check_writers.py --write");
  REQUIRE_EQ(parsed.tensors.size(), g.at("tensors").size());
  for (const auto& t : g.at("tensors")) {
    const std::string name = t.at("name");
    CAPTURE(name);
    const io::TensorRecord* r = parsed.find(name);
    REQUIRE(r);
    std::string dt = t.at("dtype");
    std::transform(dt.begin(), dt.end(), dt.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    std::string ours(dtype_name(r->dtype));
    std::transform(ours.begin(), ours.end(), ours.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    CHECK_EQ(ours, dt);
    std::vector<int64_t> shape = t.at("shape");
    if (gguf) std::reverse(shape.begin(), shape.end());
    CHECK_EQ(r->shape, shape);
    const std::string_view data(static_cast<const char*>(r->data), r->nbytes);
    CHECK_EQ(fnv1a64_hex(data), t.at("data_fnv1a64").get<std::string>());
  }
}

}  // namespace loopus::test
