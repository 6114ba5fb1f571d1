// Up-front memory checks: a request whose buffers cannot fit in this machine's memory is a LimitError
// naming what asked for it, before anything is allocated (not an OOM kill half way).
// SPDX-License-Identifier: MIT
#pragma once
#include <sys/sysinfo.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "loopus/core/error.hpp"

namespace loopus {

/// Bytes as "1.5 GiB" / "512.0 MiB" / "12 bytes", for messages.
inline std::string human_bytes(double b) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) {
    b /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f bytes", b);
  else std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

/// The most memory one request may plan to use: $LOOPUS_MEMORY_LIMIT when set
/// (bytes, or with a K, M, G or T suffix: powers of 1024), else this machine's
/// RAM plus swap, or the cgroup's memory.max when that is smaller (a container).
inline double memory_limit() {
  if (const char* e = std::getenv("LOOPUS_MEMORY_LIMIT"); e && *e) {
    char* end = nullptr;
    double v = std::strtod(e, &end);
    int shift = 0;  // a K, M, G or T suffix: powers of 1024
    if (end && *end) {
      static constexpr char kUnits[] = "KMGT";
      const char* u = std::strchr(kUnits, std::toupper(static_cast<unsigned char>(*end)));
      shift = u && end[1] == '\0' ? int(u - kUnits + 1) * 10 : -1;
    }
    if (end == e || shift < 0 || !(v > 0) || !std::isfinite(v))
      throw UsageError("LOOPUS_MEMORY_LIMIT='" + std::string(e) + "': expected a positive size such as 8G or 512M");
    v = std::ldexp(v, shift);
    return v;
  }
  double total = 0;
  struct sysinfo si {};
  if (::sysinfo(&si) == 0) total = (double(si.totalram) + double(si.totalswap)) * double(si.mem_unit);
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  std::string s;
  if (cg >> s && s != "max") {
    const double c = std::strtod(s.c_str(), nullptr);
    if (c > 0 && (total == 0 || c < total)) total = c;
  }
  return total > 0 ? total : 1e300;  // unknown: no limit
}

/// Throws a LimitError when a request's planned `bytes` exceed memory_limit():
/// "<what> needs about X, more than the Y of memory this machine has". `what`
/// names the request and the settings that size it (the CLI maps them to flags).
/// Called before the allocation, with a product computed in double (no overflow).
inline void check_memory(double bytes, const std::string& what) {
  const double limit = memory_limit();
  if (bytes <= limit) return;
  const bool env = std::getenv("LOOPUS_MEMORY_LIMIT") && *std::getenv("LOOPUS_MEMORY_LIMIT");
  throw LimitError(what + " needs about " + human_bytes(bytes) + " of memory, more than the " + human_bytes(limit) +
                   (env ? " LOOPUS_MEMORY_LIMIT allows" : " this machine has (RAM + swap)"));
}

}  // namespace loopus
