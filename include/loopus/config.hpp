// Library-wide configuration: version, namespace, assertion and host/device macros.
// SPDX-License-Identifier: MIT
#pragma once

#define LOOPUS_VERSION_MAJOR 0
#define LOOPUS_VERSION_MINOR 1
#define LOOPUS_VERSION_PATCH 0
#define LOOPUS_CONFIG_INCLUDED 1

#if defined(__CUDACC__)
#define LOOPUS_HOST_DEVICE __host__ __device__
#else
#define LOOPUS_HOST_DEVICE
#endif

#if defined(_MSC_VER)
#define LOOPUS_RESTRICT __restrict
#else
#define LOOPUS_RESTRICT __restrict__
#endif

#include <cstdio>
#include <cstdlib>

// LOOPUS_ASSERT: an internal invariant. Compiled out under NDEBUG unless
// LOOPUS_FORCE_ASSERT is set (tests set it, and then it throws loopus::Error).
#if !defined(NDEBUG) || defined(LOOPUS_FORCE_ASSERT)
#define LOOPUS_ASSERT(cond)                                                            \
  do {                                                                                 \
    if (!(cond)) ::loopus::detail::assert_fail(#cond, __FILE__, __LINE__);             \
  } while (0)
#else
#define LOOPUS_ASSERT(cond) ((void)0)
#endif

namespace loopus::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);
}  // namespace loopus::detail
