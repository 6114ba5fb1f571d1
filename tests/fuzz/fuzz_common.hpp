// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp): scratch files, data files, the error
// contract and a per-input heap bound.
// SPDX-License-Identifier: MIT
//
// The contract every target checks: a reader given any bytes returns, or throws loopus::Error
// whose message names the file (or source) it was given. Any other exception, an Error of kind
// internal (a failed assertion), a sanitizer report, a timeout, or a peak heap use above
// LOOPUS_FUZZ_ALLOC_BASE_MB (default 16) MiB + LOOPUS_FUZZ_ALLOC_FACTOR (default 64) x the
// input size while one input runs, is a finding: the target aborts with a message.
#pragma once
#include <fcntl.h>
#include <unistd.h>
#include <sanitizer/allocator_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "loopus/core/error.hpp"

namespace loopus::fuzz {

[[noreturn]] inline void die(const std::string& msg) {
  std::fprintf(stderr, "\n==loopus-fuzz== FINDING: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

/// ../shared/data (LOOPUS_DEFAULT_DATA_DIR, set by CMake), or $LOOPUS_DATA_DIR.
inline std::filesystem::path data_dir() {
  if (const char* e = std::getenv("LOOPUS_DATA_DIR"); e && *e) return e;
  return LOOPUS_DEFAULT_DATA_DIR;
}

/// A file under the data dir. A target that needs one and cannot find it stops at once: a fuzz
/// run on a missing fixture would test nothing.
inline std::string data_file(const std::string& rel) {
  const auto p = data_dir() / rel;
  if (!std::filesystem::exists(p)) {
    std::fprintf(stderr, "loopus-fuzz: missing data file %s (set LOOPUS_DATA_DIR to the shared data folder)\n",
                 p.string().c_str());
    std::exit(2);
  }
  return p.string();
}

/// This process's scratch folder (tmpfs when there is one), removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string base = "/dev/shm";
    if (!std::filesystem::is_directory(base)) {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    std::string templ = base + "/loopus-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) {
      std::perror("loopus-fuzz: mkdtemp");
      std::exit(2);
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

/// Replaces the file at `path` with the given bytes.
inline void write_file(const std::string& path, const void* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("cannot create scratch file " + path);
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) die("cannot write scratch file " + path);
    p += w;
    n -= size_t(w);
  }
  ::close(fd);
}

/// Peak heap bytes allocated while one input runs (sanitizer allocator hooks). Frees of memory
/// allocated before the input lower the running count, so the peak is, if anything, underestimated.
class AllocMeter {
 public:
  static void start() {
    install();
    cur().store(0);
    peak().store(0);
    on().store(true);
  }
  static int64_t stop() {
    on().store(false);
    return peak().load();
  }

 private:
  static std::atomic<int64_t>& cur() {
    static std::atomic<int64_t> v{0};
    return v;
  }
  static std::atomic<int64_t>& peak() {
    static std::atomic<int64_t> v{0};
    return v;
  }
  static std::atomic<bool>& on() {
    static std::atomic<bool> v{false};
    return v;
  }
  static void on_malloc(const volatile void*, size_t n) {
    if (!on().load(std::memory_order_relaxed)) return;
    const int64_t c = cur().fetch_add(int64_t(n)) + int64_t(n);
    int64_t p = peak().load();
    while (c > p && !peak().compare_exchange_weak(p, c)) {
    }
  }
  static void on_free(const volatile void* p) {
    if (!p || !on().load(std::memory_order_relaxed)) return;
    cur().fetch_sub(int64_t(__sanitizer_get_allocated_size(const_cast<const void*>(p))));
  }
  static void install() {
    static const bool done = [] {
      __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
      return true;
    }();
    (void)done;
  }
};

inline int64_t env_int(const char* name, int64_t dflt) {
  const char* e = std::getenv(name);
  return e && *e ? std::strtoll(e, nullptr, 10) : dflt;
}

/// Checks an error a reader threw on fuzzed input: it must name `source` (a file name, or the
/// name a caller passed for errors), and must not be of kind internal (a failed assertion).
inline void check_error(const loopus::Error& e, std::string_view source) {
  const std::string msg = e.what();
  if (msg.empty()) die("loopus::Error with an empty message");
  if (e.kind() == loopus::ErrorKind::internal) die("internal error (a broken invariant): " + msg);
  if (!source.empty() && msg.find(source) == std::string::npos)
    die("error does not name '" + std::string(source) + "': " + msg);
}

/// Runs f() on one input of `size` bytes under the contract above. `source` is what every
/// error message must name ("" = no check). Returns true when f() returned normally.
template <class F>
bool guarded(std::string_view source, size_t size, F&& f) {
  static const int64_t base = env_int("LOOPUS_FUZZ_ALLOC_BASE_MB", 16) << 20;
  static const int64_t factor = env_int("LOOPUS_FUZZ_ALLOC_FACTOR", 64);
  bool ok = false;
  AllocMeter::start();
  try {
    f();
    ok = true;
  } catch (const loopus::Error& e) {
    AllocMeter::stop();
    check_error(e, source);
    static const bool verbose = env_int("LOOPUS_FUZZ_VERBOSE", 0) != 0;
    if (verbose) std::fprintf(stderr, "loopus-fuzz: rejected: %s\n", e.what());
  } catch (const std::exception& e) {
    AllocMeter::stop();
    die(std::string("an exception other than loopus::Error escaped: ") + e.what());
  }
  const int64_t peak = AllocMeter::stop();
  static const bool verbose = env_int("LOOPUS_FUZZ_VERBOSE", 0) != 0;
  if (verbose && ok) std::fprintf(stderr, "loopus-fuzz: accepted (peak heap %lld bytes)\n", (long long)peak);
  const int64_t bound = base + factor * int64_t(size);
  if (peak > bound)
    die("peak heap " + std::to_string(peak) + " bytes for a " + std::to_string(size) + "-byte input (bound " +
        std::to_string(bound) + " = " + std::to_string(base >> 20) + " MiB + " + std::to_string(factor) + " x size)");
  return ok;
}

/// A few texts the tokenizer targets encode with every tokenizer they build.
inline constexpr std::string_view kSampleTexts[] = {
    "Hello world! It's 2024, isn't it?  Numbers: 1234567 and 3.14.\n\nNew paragraph\ttab",
    "<s>Once upon a time</s> <|endoftext|><|im_start|>user\nhi<|im_end|> <unk> [CLS]",
    "Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 e\xcc\x81 \xe2\x80\x83x  \r\n",
    "",
    " ",
    "\xff\xfe invalid \xc3 utf8 \xed\xa0\x80",
};

}  // namespace loopus::fuzz
