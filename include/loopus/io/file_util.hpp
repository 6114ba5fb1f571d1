// POSIX file helpers shared by the loaders: bounded reads, read-only mappings, atomic writes.
// SPDX-License-Identifier: MIT
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "loopus/core/buffer.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/io/tensor_file.hpp"

// Every format we read stores little-endian numbers; reading them with memcpy
// is only correct on a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "loopus io assumes a little-endian host");

namespace loopus::io {
namespace detail {

inline std::string errno_text(int e) { return std::generic_category().message(e); }

/// a*b for sizes, false on uint64 overflow.
inline bool mul_u64(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool add_u64(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

/// Smallest multiple of `align` (a power of two) that is >= v; false on overflow.
inline bool align_up_u64(uint64_t v, uint64_t align, uint64_t* out) {
  uint64_t t;
  if (!add_u64(v, align - 1, &t)) return false;
  *out = t & ~(align - 1);
  return true;
}

/// Read-only file with its size, closed on destruction. Reads never go past the
/// size seen at open time, so a lying header cannot make us read (or allocate) beyond the file.
class InputFile {
 public:
  explicit InputFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw IoError(path_ + ": cannot open (" + errno_text(errno) + ")");
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      ::close(fd_);
      throw IoError(path_ + ": cannot stat (" + errno_text(e) + ")");
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd_);
      throw IoError(path_ + ": is a directory, expected a file");
    }
    size_ = uint64_t(st.st_size);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  /// Reads exactly n bytes at offset off. `what` names the thing being read for the error.
  void read_at(void* dst, uint64_t n, uint64_t off, const std::string& what) const {
    if (off > size_ || n > size_ - off)
      throw FormatError(path_ + ": " + what + " (bytes " + std::to_string(off) + ".." + std::to_string(off + n) +
                        ") runs past EOF (file is " + std::to_string(size_) + " bytes; truncated?)");
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
      // Linux caps one read at about 2 GiB; stay well below it.
      const size_t chunk = size_t(std::min<uint64_t>(n, uint64_t(1) << 30));
      const ssize_t got = ::pread(fd_, p, chunk, off_t(off));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw IoError(path_ + ": read error in " + what + " (" + errno_text(errno) + ")");
      }
      if (got == 0) throw FormatError(path_ + ": file shrank while reading " + what + " (truncated?)");
      p += got;
      off += uint64_t(got);
      n -= uint64_t(got);
    }
  }

  /// Maps the whole file read-only; the mapping lives as long as the returned pointer.
  std::shared_ptr<void> map() const {
    if (size_ == 0) throw FormatError(path_ + ": cannot map an empty file");
    void* p = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) throw IoError(path_ + ": mmap failed (" + errno_text(errno) + ")");
    const size_t len = size_t(size_);
    return std::shared_ptr<void>(p, [len](void* q) { ::munmap(q, len); });
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Buffered sequential reader over an InputFile for parsing headers. Every read
/// is checked against the file size first and throws naming the file and what was read.
class Cursor {
 public:
  explicit Cursor(const InputFile& f, uint64_t pos = 0) : f_(f), pos_(pos) {}
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return f_.size(); }
  uint64_t remaining() const { return pos_ >= f_.size() ? 0 : f_.size() - pos_; }
  const std::string& path() const { return f_.path(); }

  void read(void* dst, uint64_t n, const std::string& what) {
    if (n > remaining())
      throw FormatError(f_.path() + ": truncated " + what + " at offset " + std::to_string(pos_) + " (needs " +
                        std::to_string(n) + " bytes, file is " + std::to_string(f_.size()) + " bytes)");
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      if (pos_ >= buf_off_ && pos_ < buf_off_ + buf_.size()) {
        const uint64_t in = pos_ - buf_off_;
        const uint64_t take = std::min<uint64_t>(n, buf_.size() - in);
        std::memcpy(out, buf_.data() + in, size_t(take));
        out += take;
        pos_ += take;
        n -= take;
      } else if (n >= kChunk) {  // large payloads bypass the buffer
        f_.read_at(out, n, pos_, what);
        pos_ += n;
        n = 0;
      } else {
        const uint64_t len = std::min<uint64_t>(kChunk, f_.size() - pos_);
        buf_.resize(size_t(len));
        f_.read_at(buf_.data(), len, pos_, what);
        buf_off_ = pos_;
      }
    }
  }
  template <class T> T get(const std::string& what) {
    T v;
    read(&v, sizeof(T), what);
    return v;
  }
  std::string str(uint64_t n, const std::string& what) {
    if (n > remaining())
      throw FormatError(f_.path() + ": " + what + " of length " + std::to_string(n) + " at offset " +
                        std::to_string(pos_) + " runs past EOF (file is " + std::to_string(f_.size()) + " bytes)");
    std::string s(size_t(n), '\0');
    read(s.data(), n, what);
    return s;
  }
  void seek(uint64_t pos) { pos_ = pos; }

 private:
  static constexpr uint64_t kChunk = uint64_t(1) << 16;
  const InputFile& f_;
  uint64_t pos_;
  std::vector<char> buf_;
  uint64_t buf_off_ = 0;
};

/// Alignment a tensor's data needs so kernels may read it through typed pointers.
inline size_t required_alignment(DType t) {
  const size_t s = dtype_size(t);
  return s ? s : 2;  // block types start with (or hold) 16-bit scales
}

/// Copies every tensor whose data is not aligned to its element size into one
/// new aligned buffer, so consumers can always use typed loads. Files normally
/// need no copies (GGUF aligns to 32, our safetensors writer sorts by size).
inline void realign_tensors(TensorFile& tf) {
  uint64_t total = 0;
  for (const auto& r : tf.tensors) {
    if (reinterpret_cast<uintptr_t>(r.data) % required_alignment(r.dtype) == 0) continue;
    total += (r.nbytes + AlignedBuffer::kAlign - 1) / AlignedBuffer::kAlign * AlignedBuffer::kAlign;
  }
  if (total == 0) return;
  AlignedBuffer buf{static_cast<size_t>(total)};
  size_t off = 0;
  for (auto& r : tf.tensors) {
    if (reinterpret_cast<uintptr_t>(r.data) % required_alignment(r.dtype) == 0) continue;
    std::memcpy(buf.data() + off, r.data, r.nbytes);
    r.data = buf.data() + off;
    off += (r.nbytes + AlignedBuffer::kAlign - 1) / AlignedBuffer::kAlign * AlignedBuffer::kAlign;
  }
  tf.buffers.push_back(std::move(buf));
}

/// Brings bytes [start, start + len) of `f` into memory owned by `tf`: a
/// read-only mapping (kMmap) or one aligned buffer (kRead). Null when len is 0.
inline const unsigned char* load_region(InputFile& f, TensorFile& tf, LoadMode mode, uint64_t start, uint64_t len) {
  if (len == 0) return nullptr;
  if (mode == LoadMode::kMmap) {
    auto m = f.map();
    const auto* base = static_cast<const unsigned char*>(m.get()) + start;
    tf.mappings.push_back(std::move(m));
    return base;
  }
  AlignedBuffer buf{static_cast<size_t>(len)};
  f.read_at(buf.data(), len, start, "tensor data");
  const auto* base = reinterpret_cast<const unsigned char*>(buf.data());
  tf.buffers.push_back(std::move(buf));
  return base;
}

}  // namespace detail

/// Writes a file under a temporary name beside it (`path + ".tmp.<pid>.<n>"`)
/// and renames it into place after fsync, so a crash, a full disk or any failed
/// write never leaves a half-written file under the real name: `path` holds
/// either its previous content or the complete new one. Every failure is an
/// IoError naming `path` and the OS error; an uncommitted temp file is removed
/// (a process killed mid-write leaves its temp file behind, never a torn `path`).
///
/// commit() = finish() (flush, fsync, close) + publish() (rename, fsync of the
/// folder). Writers of several files (a model folder) finish() every file
/// before they publish() any, so a failed write changes none of them.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path) : path_(std::move(path)) {
    struct stat st {};
    existed_ = ::stat(path_.c_str(), &st) == 0;
    if (existed_ && S_ISDIR(st.st_mode)) throw IoError(path_ + ": is a directory, cannot write a file there");
    static std::atomic<unsigned> seq{0};
    tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(seq.fetch_add(1));
    // O_EXCL | O_NOFOLLOW: never write through a link planted at the temp name.
    // A leftover of a killed process with the same pid is removed once.
    for (int attempt = 0; attempt < 2 && fd_ < 0; ++attempt) {
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
      if (fd_ < 0 && errno == EEXIST && attempt == 0) ::unlink(tmp_.c_str());
    }
    if (fd_ < 0) {
      const int e = errno;
      throw IoError(path_ + ": cannot create the temporary file " + tmp_ + " (" + detail::errno_text(e) + ")" +
                    unchanged_note());
    }
    buf_.reserve(kBuf);
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!published_) ::unlink(tmp_.c_str());
  }

  const std::string& path() const { return path_; }
  /// Bytes written so far (including those still buffered).
  uint64_t pos() const { return pos_; }

  void write(const void* p, size_t n) {
    if (n == 0) return;
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      raw_write(p, n);
    } else {
      const auto* c = static_cast<const char*>(p);
      buf_.insert(buf_.end(), c, c + n);
    }
    pos_ += n;
  }
  template <class T> void put(const T& v) { write(&v, sizeof(T)); }
  void write_zeros(size_t n) {
    static const char zeros[256] = {};
    while (n > 0) {
      const size_t k = std::min(n, sizeof(zeros));
      write(zeros, k);
      n -= k;
    }
  }
  /// Pads with zero bytes up to a multiple of `align`.
  void pad_to(uint64_t align) {
    const uint64_t r = pos_ % align;
    if (r) write_zeros(size_t(align - r));
  }

  /// Flushes, fsyncs and closes the temp file: the new content is on disk, not yet under `path`.
  void finish() {
    if (finished_) return;
    flush();
    if (::fsync(fd_) != 0) fail("fsync");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail("close");
    finished_ = true;
  }
  /// Renames the finished temp file over `path` and fsyncs the folder.
  void publish() {
    LOOPUS_ASSERT(finished_ && !published_);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename");
    published_ = true;
    // Make the rename itself durable; failure here is not worth an error.
    const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }
  /// finish() then publish().
  void commit() {
    finish();
    publish();
  }

 private:
  static constexpr size_t kBuf = size_t(1) << 20;
  std::string unchanged_note() const { return existed_ ? "; the previous file is unchanged" : "; nothing was written"; }
  [[noreturn]] void fail(const char* op) {
    const int e = errno;
    throw IoError(path_ + ": " + op + " of the temporary file " + tmp_ + " failed (" + detail::errno_text(e) + ")" +
                  unchanged_note());
  }
  void flush() {
    if (!buf_.empty()) raw_write(buf_.data(), buf_.size());
    buf_.clear();
  }
  void raw_write(const void* p, size_t n) {
    LOOPUS_ASSERT(fd_ >= 0);
    const auto* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd_, c, std::min<size_t>(n, size_t(1) << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write");
      }
      c += w;
      n -= size_t(w);
    }
  }
  std::string path_, tmp_;
  int fd_ = -1;
  bool existed_ = false, finished_ = false, published_ = false;
  uint64_t pos_ = 0;
  std::vector<char> buf_;
};

/// Replaces `path` with `text` atomically (AtomicFileWriter).
inline void write_file_atomic(const std::string& path, std::string_view text) {
  AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

/// Copies `src` to `dst` atomically (AtomicFileWriter): `dst` is the old file or a complete copy.
inline void copy_file_atomic(const std::string& src, const std::string& dst) {
  detail::InputFile in(src);
  AtomicFileWriter w(dst);
  std::vector<char> buf(size_t(std::min<uint64_t>(in.size(), uint64_t(1) << 20)));
  for (uint64_t off = 0; off < in.size();) {
    const uint64_t n = std::min<uint64_t>(buf.size(), in.size() - off);
    in.read_at(buf.data(), n, off, "contents");
    w.write(buf.data(), size_t(n));
    off += n;
  }
  w.commit();
}

/// create_directories() that throws an IoError naming the folder and the OS error.
inline void make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError(dir + ": cannot create the folder (" + ec.message() + ")");
  if (!std::filesystem::is_directory(dir, ec)) throw IoError(dir + ": exists and is not a folder");
}

/// An append-only file of records (a JSONL log). append() adds a whole record or
/// nothing: when a write fails (full disk, size limit) the file is cut back to
/// its length before the call and an IoError names the file and the OS error,
/// so the records already there are never damaged. sync() makes them durable.
class AppendFile {
 public:
  explicit AppendFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw IoError(path_ + ": cannot open for appending (" + detail::errno_text(errno) + ")");
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      ::close(fd_);
      throw IoError(path_ + ": cannot stat (" + detail::errno_text(e) + ")");
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw IoError(path_ + ": is not a regular file");
    }
    size_ = uint64_t(st.st_size);
  }
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  void append(std::string_view rec) {
    const char* c = rec.data();
    size_t n = rec.size();
    while (n > 0) {
      const ssize_t w = ::write(fd_, c, std::min<size_t>(n, size_t(1) << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        const int e = errno;
        // Take the partial record back; the records before it stay as they were.
        const bool cut = ::ftruncate(fd_, off_t(size_)) == 0;
        throw IoError(path_ + ": cannot append a record (" + detail::errno_text(e) + ")" +
                      (cut ? "; the file keeps its previous " + std::to_string(size_) + " bytes"
                           : "; cutting the partial record back failed too (" + detail::errno_text(errno) + ")"));
      }
      c += w;
      n -= size_t(w);
    }
    size_ += rec.size();
  }
  void sync() {
    if (::fsync(fd_) != 0) throw IoError(path_ + ": fsync failed (" + detail::errno_text(errno) + ")");
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace loopus::io
