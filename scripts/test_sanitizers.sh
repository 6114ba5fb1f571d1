#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (g++, -O1 with debug line info) in
# ./build-asan. Extra args go to ctest. Needs what scripts/test.sh installs and fetches.
# -g1 (line tables, no variable info): reports keep every frame's function, file and line, inlined
# frames included; a third less compile time than -g. Unity groups (LOOPUS_UNITY_BUILD): a third again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DLOOPUS_UNITY_BUILD=ON -DLOOPUS_SANITIZE=address,undefined -DLOOPUS_BUILD_BENCH=OFF -DLOOPUS_BUILD_EXAMPLES=OFF \
  -DLOOPUS_CUDA=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" --target loopus_tests
# detect_leaks: the suite's own leaks count; halt_on_error: the first report fails the test.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Left out: tests that build other programs (the normal run covers them) and the lm-eval parity runs
# (thousands of real-model forward passes; tests/eval/test_scoring.cpp runs the same scorer here).
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -E "^(packaging|compile_fail|examples)\.|lm-eval parity" "$@"
