// Emulated CUDA header (tests/ops/cuda/emulate/include/emu.hpp).
// SPDX-License-Identifier: MIT
#pragma once
#include "emu.hpp"
