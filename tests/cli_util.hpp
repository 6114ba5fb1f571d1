// Runs the loopus CLI binary from a test: exit status, signal, stdout and stderr, with a time limit.
// SPDX-License-Identifier: MIT
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "test_util.hpp"

extern char** environ;

namespace loopus::test {

struct CliRun {
  bool exited = false;  ///< ended by exit() (not by a signal, not killed for the time limit)
  int code = -1;        ///< exit status when exited
  int signal = 0;       ///< the signal that ended it, if any
  bool timed_out = false;
  std::string out, err;
};

/// Runs `loopus args...` (test::cli_path()) with stdout and stderr captured in files under `scratch`; kills it after
/// `limit_s` seconds (timed_out). stdin is /dev/null.
inline CliRun run_cli_timed(const std::vector<std::string>& args, const std::filesystem::path& scratch,
                            double limit_s = 60) {
  const std::string cli = cli_path();
  REQUIRE_MESSAGE(!cli.empty(), "these tests run the loopus CLI: build with LOOPUS_BUILD_TOOLS=ON");
  const auto out_p = scratch / "cli_stdout.txt", err_p = scratch / "cli_stderr.txt";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> all{cli};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, cli.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << cli);
  CliRun r;
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!r.timed_out) {
    r.exited = WIFEXITED(status);
    if (r.exited) r.code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  }
  r.out = read_text(out_p);
  r.err = read_text(err_p);
  return r;
}

}  // namespace loopus::test
