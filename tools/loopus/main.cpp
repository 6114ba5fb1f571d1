// loopus: the command-line tool (info, generate, tokenize, synth, ...). One subcommand per cmd_*.cpp.
// SPDX-License-Identifier: MIT
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "flag_names.hpp"
#include "loopus/core/error.hpp"

int main(int argc, char** argv) {
  using loopus::ErrorKind;
  CLI::App app{"loopus: run, adapt, evaluate and inspect looped (LoopUS) language models on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loopus 0.1.0");
  app.footer(
      "Exit status: 0 success, 1 internal error (a bug), 2 bad command line or option value, 3 a file cannot be\n"
      "opened, read or written, 4 malformed input file, 5 unsupported model or file feature, 6 a size beyond a\n"
      "limit or out of memory.");
  for (auto reg : loopus::cli::all_commands()) reg(app);
  // "loopus frobnicate": CLI11 would only say that a subcommand is required.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; })) {
      names += (names.empty() ? "" : ", ") + s->get_name();
      known = known || s->check_name(argv[1]);
    }
    if (!known) {
      std::fprintf(stderr, "error: unknown command '%s' (commands: %s; see loopus --help)\n", argv[1], names.c_str());
      return int(ErrorKind::usage);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0; every real parse error is a usage error.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : int(ErrorKind::usage);
  } catch (const loopus::Error& e) {
    std::fprintf(stderr, "error: %s\n", loopus::cli::flag_names(e.what()).c_str());
    return int(e.kind());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return int(ErrorKind::limit);
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return int(ErrorKind::io);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return int(ErrorKind::internal);
  }
  // Output that could not be written (a full disk, a closed file) is an io error, not a success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "error: cannot write standard output (%s)\n", std::strerror(errno));
    return int(loopus::ErrorKind::io);
  }
  return 0;
}
