// loopus::Error, the one exception type loaders and config checks throw.
// SPDX-License-Identifier: MIT
#pragma once
#include <stdexcept>
#include <string>

#include "loopus/config.hpp"

namespace loopus {

/// Thrown by loaders, config checks and the CLI. The message names the file,
/// tensor or argument at fault and what was expected. Kernels never throw.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  throw Error(std::string("internal assertion failed: ") + expr + " at " + file + ":" +
              std::to_string(line));
}
}  // namespace detail

}  // namespace loopus
