// Umbrella header: core types, the plain and looped models, every loop policy, generation.
// Loaders and writers (io/: io/load_model.hpp, io/looped_io.hpp, io/save.hpp) and backends (ops/cpu/ops.hpp) are included on purpose by users.
// SPDX-License-Identifier: MIT
#pragma once
#include "loopus/config.hpp"
#include "loopus/core/backend.hpp"
#include "loopus/core/dtype.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/generate.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/policies/cache/no_cache.hpp"
#include "loopus/policies/cache/per_depth_cache.hpp"
#include "loopus/policies/cache/shared_cache.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "loopus/policies/gate/selective_gate.hpp"
#include "loopus/policies/halting/halting.hpp"
