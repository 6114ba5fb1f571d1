// Helpers shared by the tests: data paths, tolerances.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

namespace loopus::test {

/// ../shared/data, or $LOOPUS_DATA_DIR when set.
inline std::filesystem::path data_dir() {
  if (const char* e = std::getenv("LOOPUS_DATA_DIR"); e && *e) return e;
  return LOOPUS_DEFAULT_DATA_DIR;
}
/// A file under the data dir; fails the test (never skips silently) when missing.
inline std::string data_file(const std::string& rel) {
  auto p = data_dir() / rel;
  REQUIRE_MESSAGE(std::filesystem::exists(p), "missing data file " << p.string()
                                                                    << " (set LOOPUS_DATA_DIR)");
  return p.string();
}
inline std::filesystem::path source_dir() { return LOOPUS_SOURCE_DIR; }
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
/// A fresh scratch directory under the build tree's temp dir.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("loopus_test_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

}  // namespace loopus::test
