// Helpers shared by the tests: data paths, fetched models, tolerances.
// SPDX-License-Identifier: MIT
#pragma once
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "loopus/core/error.hpp"

namespace loopus::test {

/// n values drawn from N(0, scale²) with a std::mt19937 seeded by seed (the same values on every
/// platform's libstdc++).
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

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

/// Writes b to p, replacing the file (removed first: rewriting in place makes ext4 flush on truncate, slowly).
inline void write_bytes(const std::filesystem::path& p, const std::string& b) {
  std::filesystem::remove(p);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), std::streamsize(b.size()));
}
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

/// How a child process ended: `code` is its exit status, or 128 + the signal that killed it;
/// `out` / `err` what it printed (run_cli), or `err` the message of the exception that ended it
/// (run_limited).
struct ChildResult {
  int code = -1;
  std::string out, err;
};

namespace detail {
inline int wait_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}
/// In a child: files may grow to at most `bytes` (0: no limit); a write past it fails with
/// EFBIG (SIGXFSZ ignored), as a write to a full disk fails with ENOSPC.
inline void limit_file_size(uint64_t bytes) {
  if (bytes == 0) return;
  std::signal(SIGXFSZ, SIG_IGN);
  const struct rlimit rl = {rlim_t(bytes), rlim_t(bytes)};
  if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) ::_exit(120);
}
}  // namespace detail

/// Runs fn in a forked child whose files may grow to at most `fsize_limit` bytes (0: no limit).
/// The child exits 0 when fn returns, int(e.kind()) when it throws a loopus::Error, 125 on any other
/// exception; the exception's message comes back in `err`. fn must not start OpenMP work (the
/// parent's thread pool does not survive fork()).
template <class Fn>
ChildResult run_limited(uint64_t fsize_limit, Fn&& fn) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    detail::limit_file_size(fsize_limit);
    int code = 0;
    std::string msg;
    try {
      fn();
    } catch (const ::loopus::Error& e) {
      code = int(e.kind());
      msg = e.what();
    } catch (const std::exception& e) {
      code = 125;
      msg = e.what();
    }
    for (size_t off = 0; off < msg.size();) {
      const ssize_t w = ::write(fds[1], msg.data() + off, msg.size() - off);
      if (w <= 0) break;
      off += size_t(w);
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  ChildResult r;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    r.err.append(buf, size_t(n));
  }
  ::close(fds[0]);
  r.code = detail::wait_code(pid);
  return r;
}

/// The loopus CLI this build made (LOOPUS_CLI_PATH); "" after report_skip() when the build has no CLI
/// (LOOPUS_BUILD_TOOLS=OFF): the caller then returns.
inline std::string cli_path() {
  const std::string p = LOOPUS_CLI_PATH;
  if (p.empty()) report_skip("the loopus CLI is not built (LOOPUS_BUILD_TOOLS=OFF)");
  else REQUIRE_MESSAGE(std::filesystem::exists(p), "the loopus CLI " << p << " is missing: build loopus_cli");
  return p;
}

/// Runs the CLI with `args` and the extra environment `env`; its files may grow to at most
/// `fsize_limit` bytes (0: no limit, see detail::limit_file_size). Standard output goes to
/// `stdout_path` when given (e.g. /dev/full), else it is captured in `out`; standard error in `err`.
inline ChildResult run_cli(const std::string& cli, const std::vector<std::string>& args, uint64_t fsize_limit = 0,
                           const std::string& stdout_path = "",
                           const std::vector<std::pair<std::string, std::string>>& env = {}) {
  static int calls = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("loopus_test_cli_" + std::to_string(::getpid()) + "_" + std::to_string(calls++));
  std::filesystem::create_directories(dir);
  const std::string out_file = stdout_path.empty() ? (dir / "out").string() : stdout_path;
  const std::string err_file = (dir / "err").string();
  std::vector<std::string> argv_s{cli};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::cout.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int o = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) ::_exit(121);
    detail::limit_file_size(fsize_limit);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::execv(cli.c_str(), argv.data());
    ::_exit(122);
  }
  ChildResult r;
  r.code = detail::wait_code(pid);
  if (stdout_path.empty()) r.out = read_text(out_file);
  r.err = read_text(err_file);
  std::filesystem::remove_all(dir);
  return r;
}

/// Files in `dir` (not recursive) whose name contains ".tmp.": temporaries a writer left behind.
inline std::vector<std::string> temp_files_in(const std::filesystem::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) v.push_back(e.path().string());
  return v;
}

}  // namespace loopus::test
