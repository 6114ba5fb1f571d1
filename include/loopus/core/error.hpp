// loopus::Error and its kinds: the exceptions loaders, config checks and the CLI throw.
// SPDX-License-Identifier: MIT
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

#include "loopus/config.hpp"

namespace loopus {

/// What went wrong, coarsely; the CLI exits with this number (docs/security.md).
enum class ErrorKind : int {
  internal = 1,     ///< a broken invariant inside loopus (a bug: please report it)
  usage = 2,        ///< a bad argument, option or configuration value from the caller
  io = 3,           ///< a file that cannot be opened, read, written or renamed; not a regular file; disk full
  format = 4,       ///< an input file whose content is malformed, corrupt or truncated
  unsupported = 5,  ///< well-formed input that loopus does not support (architecture, dtype, version)
  limit = 6,        ///< a size or count beyond a documented limit, or memory exhausted
};

/// The kind's name as the CLI prints it ("usage", "io", ...).
constexpr std::string_view kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::internal: return "internal";
    case ErrorKind::usage: return "usage";
    case ErrorKind::io: return "io";
    case ErrorKind::format: return "format";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::limit: return "limit";
  }
  return "internal";
}

/// The one exception family loopus throws. The message names the file, tensor
/// or argument at fault and what was expected. Kernels never throw. Catch
/// Error for all of them, or a subclass for one kind.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// A bad argument, option or configuration value given by the caller.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(ErrorKind::usage, what) {}
};
/// A file that cannot be opened, read, written or renamed (or is not a regular file).
class IoError : public Error {
 public:
  explicit IoError(const std::string& what) : Error(ErrorKind::io, what) {}
};
/// Malformed, corrupt or truncated content of an input file.
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& what) : Error(ErrorKind::format, what) {}
};
/// Well-formed input that loopus does not support.
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& what) : Error(ErrorKind::unsupported, what) {}
};
/// A size or count beyond a documented limit.
class LimitError : public Error {
 public:
  explicit LimitError(const std::string& what) : Error(ErrorKind::limit, what) {}
};

namespace detail {
[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  throw Error(ErrorKind::internal,
              std::string("internal assertion failed: ") + expr + " at " + file + ":" + std::to_string(line));
}
}  // namespace detail

}  // namespace loopus
