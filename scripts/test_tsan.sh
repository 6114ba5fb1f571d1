#!/usr/bin/env bash
# The threaded tests under ThreadSanitizer in ./build-tsan: several sessions sharing one loaded model and
# tokenizer (tests/model/test_concurrency.cpp, the concurrent encode of tests/tokenizer/test_bpe.cpp) and
# the OpenMP kernels (tests/ops/test_ops_cpu.cpp), built as their own small binary, loopus_threaded_tests.
# Any report fails the run. Extra args go to the doctest binary (e.g. -tc="*concurrency*").
#
# clang++ with LLVM's OpenMP runtime (libomp), not g++: GCC's libgomp is not instrumented, so TSan
# cannot see the synchronisation of its barriers and reports races that are not there. libomp loads
# LLVM's Archer tool (libarcher.so, in libomp-dev) when the program runs under TSan: Archer tells TSan
# about every OpenMP barrier, task and lock, so the parallel regions run with their real thread count
# and are checked too (ignore_noninstrumented_modules hides the runtime's own internals). Needs what
# scripts/test.sh installs and fetches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh clang libomp-dev
cmake -S . -B build-tsan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DLOOPUS_SANITIZE=thread -DLOOPUS_BUILD_BENCH=OFF \
  -DLOOPUS_BUILD_EXAMPLES=OFF -DLOOPUS_BUILD_TOOLS=OFF -DLOOPUS_CUDA=OFF >/dev/null
cmake --build build-tsan -j"$(nproc)" --target loopus_threaded_tests
# halt_on_error: the first report fails the run; second_deadlock_stack: both stacks of a lock-order report.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1"
# Two OpenMP threads per team even on a one-core runner, so the parallel regions really run in parallel.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY=passive
time ./build-tsan/tests/loopus_threaded_tests "$@"
