// The registry of CLI subcommands; each cmd_*.cpp defines one register function.
// SPDX-License-Identifier: MIT
#pragma once
#include <CLI/CLI.hpp>
#include <vector>

namespace loopus::cli {
using Register = void (*)(CLI::App&);
void register_info(CLI::App&);
void register_generate(CLI::App&);
void register_tokenize(CLI::App&);
void register_synth(CLI::App&);
void register_bench(CLI::App&);
void register_adapt(CLI::App&);
void register_perplexity(CLI::App&);
void register_eval(CLI::App&);
void register_trace(CLI::App&);
void register_split(CLI::App&);
void register_quantize(CLI::App&);
inline std::vector<Register> all_commands() {
  return {register_info, register_generate, register_tokenize, register_synth, register_bench,   register_perplexity,
          register_eval, register_adapt,    register_trace,    register_split, register_quantize};
}
}  // namespace loopus::cli
