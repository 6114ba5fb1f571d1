// Helpers shared by the tests: data paths, fetched models, tolerances.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
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

/// The model cache that scripts/get_models.sh fills: $LOOPUS_MODELS_DIR, else
/// $HOME/.cache/loopus/models (the script's default too).
inline std::filesystem::path models_dir() {
  if (const char* e = std::getenv("LOOPUS_MODELS_DIR"); e && *e) return e;
  const char* home = std::getenv("HOME");
  REQUIRE_MESSAGE((home && *home), "neither LOOPUS_MODELS_DIR nor HOME is set: cannot find the model cache");
  return std::filesystem::path(home) / ".cache" / "loopus" / "models";
}
/// LOOPUS_OFFLINE=1: nothing was downloaded, so a missing fetched model is a reported skip.
inline bool offline() {
  const char* e = std::getenv("LOOPUS_OFFLINE");
  return e && std::string(e) == "1";
}

/// What a skipped test prints, alone on a line. ctest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt)
/// matches it and lists the test as skipped, not passed. Doctest 2.4.9 has no runtime skip.
#define LOOPUS_SKIP_MARKER "LOOPUS-SKIP:"

/// Reports the running test as skipped (see LOOPUS_SKIP_MARKER); the caller then returns.
inline void report_skip(const std::string& reason) {
  std::cout << '\n' << LOOPUS_SKIP_MARKER << ' ' << reason << std::endl;
}

/// A model that scripts/get_models.sh fetches, by file name: `override_env` (a path to the file)
/// when that variable is set, else models_dir() / name. When the file is missing the test fails,
/// saying to run the script, except with LOOPUS_OFFLINE=1: then it returns "" after report_skip(),
/// and the caller returns (LOOPUS_MODEL_OR_SKIP does both).
inline std::string model_file(const std::string& name, const char* override_env = nullptr) {
  const char* o = override_env ? std::getenv(override_env) : nullptr;
  const bool overridden = o && *o;
  const std::filesystem::path p = overridden ? std::filesystem::path(o) : models_dir() / name;
  if (std::filesystem::exists(p)) return p.string();
  REQUIRE_MESSAGE(!overridden, override_env << "=" << p.string() << ": no such file (it should be " << name << ")");
  if (offline()) {
    report_skip(name + " is not in " + p.parent_path().string() + " and LOOPUS_OFFLINE=1 (bash scripts/get_models.sh fetches it)");
    return {};
  }
  FAIL("missing model " << p.string() << ": run `bash scripts/get_models.sh` (it fetches " << name
                        << " into $LOOPUS_MODELS_DIR, default ~/.cache/loopus/models), or set LOOPUS_OFFLINE=1 to skip");
  return {};
}

/// In a TEST_CASE body: declares `const std::string var`, the model's path; with LOOPUS_OFFLINE=1 and
/// the model missing, reports the test as skipped and returns from it.
#define LOOPUS_MODEL_OR_SKIP(var, ...)                                  \
  const std::string var = ::loopus::test::model_file(__VA_ARGS__);      \
  if (var.empty()) return

inline std::filesystem::path source_dir() { return LOOPUS_SOURCE_DIR; }
/// The whole file; fails the test when it cannot be opened.
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE_MESSAGE(f.is_open(), "cannot open " << p.string());
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
