// read_file_bytes(): a whole input file in memory, with errors that name it.
// SPDX-License-Identifier: MIT
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>

#include "loopus/core/error.hpp"

namespace loopus {

/// The whole content of the file at `path` (text, JSON, a tokenizer, a dataset).
/// A missing or unreadable file, a directory or a read error is an IoError
/// naming `path` and `what` (e.g. "training data"). Reads at most the size seen
/// at open time, so a file that grows while being read cannot make it allocate more.
inline std::string read_file_bytes(const std::string& path, const std::string& what = "file") {
  auto errno_text = [](int e) { return std::generic_category().message(e); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path + ": cannot open " + what + " (" + errno_text(errno) + ")");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw IoError(path + ": cannot stat " + what + " (" + errno_text(errno) + ")");
  if (S_ISDIR(st.st_mode)) throw IoError(path + ": is a directory, expected a file (" + what + ")");
  if (!S_ISREG(st.st_mode)) throw IoError(path + ": not a regular file (" + what + ")");
  std::string s(size_t(st.st_size), '\0');
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t got = ::read(fd, s.data() + done, s.size() - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError(path + ": read error in " + what + " (" + errno_text(errno) + ")");
    }
    if (got == 0) break;  // shrank while reading: keep what is there
    done += size_t(got);
  }
  s.resize(done);
  return s;
}

}  // namespace loopus
