// How many threads the CPU kernels should use by default: the cores not already busy.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace loopus::cpu {

/// Cores this process may run on (its CPU affinity mask on Linux), at least 1.
inline int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1, int(std::thread::hardware_concurrency()));
}

namespace detail {
/// Threads of this process that are running or runnable now (state R in /proc/self/task/*/stat):
/// the caller, and any pool a library started at load time (OpenBLAS spins up its own).
inline int own_running_threads() {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream f(e.path() / "stat");
    std::string line;
    std::getline(f, line);
    const auto close = line.rfind(')');  // the name may hold spaces and parentheses
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'R') ++n;
  }
  return std::max(n, 1);
}
}  // namespace detail

/// Threads of other programs that want a core right now: the kernel's count of runnable threads
/// (procs_running in /proc/stat) less this process's own, the least of `samples` readings 2 ms
/// apart, so a program that only passes through is not counted. 0 where /proc is unreadable.
inline int busy_cpus(int samples = 5) {
  int least = -1;
  for (int i = 0; i < samples; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int own = detail::own_running_threads();
    std::ifstream f("/proc/stat");
    std::string key;
    long long v = -1;
    while (f >> key) {
      if (key == "procs_running") {
        f >> v;
        break;
      }
      f.ignore(1 << 20, '\n');
    }
    if (v < 1) return 0;
    const int others = std::max(0, int(v) - own);
    least = least < 0 ? others : std::min(least, others);
  }
  return std::max(0, least);
}

/// Whether the user set OMP_NUM_THREADS (to anything: OpenMP itself parses and judges it).
inline bool omp_threads_from_env() {
  const char* e = std::getenv("OMP_NUM_THREADS");
  return e != nullptr && *e != '\0';
}

/// The default thread count: what OMP_NUM_THREADS gives the outer team when the user set it, else
/// the available cores less those other programs keep busy (at least 1). OpenMP teams that
/// spin-wait at their barriers lose badly to a program that holds a core: with one CPU-bound
/// program beside it on 2 cores, decode with 2 threads ran 3.7x slower than with 1
/// (docs/performance.md).
inline int default_threads() {
  if (omp_threads_from_env()) {
#if defined(_OPENMP)
    return omp_get_max_threads();  // OpenMP's reading of the variable (a nested list's first level)
#else
    return std::max(1, std::atoi(std::getenv("OMP_NUM_THREADS")));
#endif
  }
  return std::max(1, available_cpus() - busy_cpus());
}

/// Sets the OpenMP team size: `requested` when positive, else default_threads(). With no request
/// and OMP_NUM_THREADS set, the team OpenMP made from the variable is left as it is (nested
/// levels included). Returns the outer team's size.
inline int set_threads(int requested) {
  if (requested <= 0 && omp_threads_from_env()) return default_threads();
  const int n = requested > 0 ? requested : default_threads();
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  return n;
}

}  // namespace loopus::cpu
