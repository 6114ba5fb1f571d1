// loopus: the command-line tool (info, generate, tokenize, synth, ...). One subcommand per cmd_*.cpp.
// SPDX-License-Identifier: MIT
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.hpp"
#include "flag_names.hpp"
#include "loopus/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"loopus: run, adapt, evaluate and inspect looped (LoopUS) language models on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loopus 0.1.0");
  for (auto reg : loopus::cli::all_commands()) reg(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const loopus::Error& e) {
    std::fprintf(stderr, "error: %s\n", loopus::cli::flag_names(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
