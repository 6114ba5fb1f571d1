#!/usr/bin/env bash
# Runs the CUDA backend's GPU tests (tests/ops/cuda/) on an emulated device, where there is no GPU: the
# kernels of src/cuda/ are rewritten into C++ (tests/ops/cuda/emulate/rewrite_cu.py: launches become
# calls) and run on CPU threads (tests/ops/cuda/emulate/include/emu.hpp: one std::thread per CUDA
# thread, barriers for __syncthreads and warp shuffles, cuBLAS as column-major loops). It checks the
# kernels' logic (indexing, masks, reductions, the cuBLAS argument mapping), not speed or hardware
# behaviour; slow (the op tests take about 3 minutes on 2 cores, the model tests much longer). Not part
# of CI. Extra arguments go to the doctest binary, e.g. -tc="*attention*".
# Usage: bash scripts/cuda_emulate.sh [doctest args]   (needs python3 and what scripts/bootstrap.sh installs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=$ROOT/build-emu
E=$ROOT/tests/ops/cuda/emulate
mkdir -p "$B"
for f in kernels gemm attention; do python3 "$E/rewrite_cu.py" "src/cuda/$f.cu" "$B/$f.cpp"; done
cp src/cuda/common.cuh "$B/"
DATA=$(cd "${LOOPUS_DATA_DIR:-$ROOT/../shared/data}" && pwd)
printf '#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN\n#include <doctest/doctest.h>\n' >"$B/main.cpp"
FLAGS=(-std=c++20 -O1 -march=x86-64-v3 -fopenmp -I"$E/include" -I"$ROOT/include" -I"$ROOT/tests" -I/usr/include/eigen3
  -DLOOPUS_HAS_CUDA=1 -DLOOPUS_FORCE_ASSERT -DLOOPUS_SOURCE_DIR="\"$ROOT\"" -DLOOPUS_DEFAULT_DATA_DIR="\"$DATA\""
  -DLOOPUS_CLI_PATH="\"\"")
objs=() pids=()
for src in "$B/kernels.cpp" "$B/gemm.cpp" "$B/attention.cpp" "$E/emu_runtime.cpp" "$B/main.cpp" \
  tests/ops/cuda/test_ops_cuda.cpp tests/ops/cuda/test_models_cuda.cpp; do
  o=$B/$(basename "${src%.*}").o
  objs+=("$o")
  g++ "${FLAGS[@]}" -c "$src" -o "$o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done  # set -e: a failed compile stops here
g++ "${FLAGS[@]}" "${objs[@]}" -lpcre2-8 -lbz2 -o "$B/loopus_cuda_emulated_tests"
"$B/loopus_cuda_emulated_tests" "$@"
