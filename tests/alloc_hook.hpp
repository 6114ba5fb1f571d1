// What the test binary's replacement of the global operator new / delete (tests/alloc_hook.cpp) counts:
// allocations made, bytes live and the peak of bytes live.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>

namespace loopus::test {

/// Allocations through operator new (every form) since the program started.
long alloc_count();
/// Bytes now allocated through operator new and not yet deleted (malloc_usable_size of each block).
std::size_t alloc_live();
/// Restarts the peak at the bytes live now; returns them.
std::size_t alloc_peak_reset();
/// The most bytes live at once since the last alloc_peak_reset().
std::size_t alloc_peak();

}  // namespace loopus::test
