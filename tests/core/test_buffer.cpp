// AlignedBuffer of core/buffer.hpp: alignment, moves, and the huge-page advice on large buffers.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "loopus/core/buffer.hpp"
#include "test_util.hpp"

namespace {

uintptr_t addr_of(const loopus::AlignedBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); }

/// The VmFlags line of the /proc/self/smaps mapping that holds address a ("" when none is found).
std::string vm_flags_at(uintptr_t a) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < line.find(' ')) {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

}  // namespace

TEST_CASE("AlignedBuffer: small buffers are 64-byte aligned, large ones 2 MiB aligned and advised for huge pages") {
  using loopus::AlignedBuffer;
  const bool wanted = loopus::huge_pages_wanted();
  AlignedBuffer small(1000);
  CHECK(addr_of(small) % AlignedBuffer::kAlign == 0);
  CHECK_FALSE(small.huge_page_aligned());
  CHECK(small.size() == 1000);

  AlignedBuffer big(AlignedBuffer::kHugeMin + 12345);
  REQUIRE(big.size() == AlignedBuffer::kHugeMin + 12345);
  CHECK(big.huge_page_aligned() == wanted);
  if (wanted) CHECK(addr_of(big) % AlignedBuffer::kHugePage == 0);
  // Writable end to end (the rounding up to whole huge pages is ours, the size the caller's).
  big.as<unsigned char>()[0] = 1;
  big.as<unsigned char>()[big.size() - 1] = 2;

#if defined(__linux__)
  // The kernel marks a range advised MADV_HUGEPAGE with the VmFlag "hg", whatever it then backs it with.
  const std::string flags = vm_flags_at(addr_of(big));
  if (flags.empty()) {
    loopus::test::report_skip("/proc/self/smaps has no VmFlags line for the buffer (kernel without it)");
  } else {
    CAPTURE(flags);
    CHECK((flags.find(" hg") != std::string::npos) == wanted);
  }
#endif

  // Moves carry the allocation (and its alignment, which delete must see) along.
  const uintptr_t where = addr_of(big);
  AlignedBuffer moved(std::move(big));
  CHECK(addr_of(moved) == where);
  CHECK(moved.huge_page_aligned() == wanted);
  CHECK(big.empty());
  CHECK_FALSE(big.huge_page_aligned());
  AlignedBuffer assigned;
  assigned = std::move(moved);
  CHECK(addr_of(assigned) == where);
  CHECK(assigned.as<unsigned char>()[assigned.size() - 1] == 2);

  // Shrinking below the threshold goes back to ordinary alignment.
  assigned.resize(4096);
  CHECK_FALSE(assigned.huge_page_aligned());
  CHECK(addr_of(assigned) % AlignedBuffer::kAlign == 0);
}
