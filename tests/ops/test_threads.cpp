// Thread defaults of ops/cpu/threads.hpp: the free cores without OMP_NUM_THREADS, OpenMP's own
// reading of it with it, and set_threads() leaving a team made from the variable alone.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "loopus/ops/cpu/threads.hpp"

TEST_CASE("threads: default_threads counts free cores, set_threads sets the team, OMP_NUM_THREADS wins") {
  namespace cpu = loopus::cpu;
  const char* saved = std::getenv("OMP_NUM_THREADS");
  const std::string keep = saved != nullptr ? saved : "";
  const int avail = cpu::available_cpus();
  CHECK(avail >= 1);
  CHECK(cpu::busy_cpus() >= 0);

  ::unsetenv("OMP_NUM_THREADS");
  CHECK_FALSE(cpu::omp_threads_from_env());
  const int d = cpu::default_threads();
  CHECK(d >= 1);
  CHECK(d <= avail);
  CHECK(cpu::set_threads(3) == 3);
#if defined(_OPENMP)
  CHECK(omp_get_max_threads() == 3);
#endif
  CHECK(cpu::set_threads(0) == d);  // no request, no variable: the default again

  // With the variable set, its team stands: set_threads(0) neither changes it nor re-reads the
  // string (OpenMP parsed it at start, nested lists included).
  ::setenv("OMP_NUM_THREADS", "2,1", 1);
  CHECK(cpu::omp_threads_from_env());
#if defined(_OPENMP)
  omp_set_num_threads(5);
  CHECK(cpu::default_threads() == 5);
  CHECK(cpu::set_threads(0) == 5);
  CHECK(omp_get_max_threads() == 5);
#endif
  CHECK(cpu::set_threads(2) == 2);  // an explicit request (-t) still wins
#if defined(_OPENMP)
  CHECK(omp_get_max_threads() == 2);
#endif

  if (saved != nullptr) ::setenv("OMP_NUM_THREADS", keep.c_str(), 1);
  else ::unsetenv("OMP_NUM_THREADS");
}
