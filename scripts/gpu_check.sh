#!/usr/bin/env bash
# The CUDA backend's check on a machine with one NVIDIA GPU (issue 17): builds loopus with
# -DLOOPUS_CUDA=ON into build-gpu, runs the GPU tests (ctest -L gpu: op-by-op parity with the CPU
# oracle, stories260K greedy ids against llama.cpp's golden, the official LoopUS parity goldens at
# B = 1, 2, 8, per-depth cache = no cache at B = 8, every gate / cache / halting rule against the CPU,
# a bf16 model), then bench/gpu_bench.cpp (copy bandwidth, decode at B = 1 and 8 against the bandwidth
# floor, prefill at T = 512 against cuBLAS alone, Fig. 3 for the Qwen3-1.7B and 4B shapes), and prints
# a short summary. Results go to $OUT (or build-gpu/gpu_check): gpu_check.txt, the ctest log,
# gpu_bench.json, fig3_*.csv/svg. Aim: under 8 minutes on a 16-core H100 machine.
#
# No network is needed. Where a build dependency (Eigen, nlohmann-json, CLI11, doctest, PCRE2 and
# bzip2 headers, pkg-config) is missing and apt cannot fetch it, the Debian packages in $LOOPUS_DEBS (default
# .debs/, git-ignored) are unpacked into build-gpu/deps (never into /); fetch them beforehand on a
# machine with network: `bash scripts/gpu_check.sh --fetch-debs`.
# Usage: bash scripts/gpu_check.sh [--fetch-debs] [--quick]   (LOOPUS_GPU_BENCH_QUICK=1 = --quick)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEBS=${LOOPUS_DEBS:-$ROOT/.debs}
PKGS=(libeigen3-dev nlohmann-json3-dev libcli11-dev doctest-dev libpcre2-dev libpcre2-8-0 libbz2-dev pkgconf-bin libpkgconf3)

if [ "${1:-}" = "--fetch-debs" ]; then
  mkdir -p "$DEBS"
  (cd "$DEBS" && apt-get download "${PKGS[@]}")
  echo "gpu_check: $(ls "$DEBS" | wc -l) packages in $DEBS"
  exit 0
fi
[ "${1:-}" = "--quick" ] && export LOOPUS_GPU_BENCH_QUICK=1

# The tests read stories260K from the shared data ($LOOPUS_DATA_DIR, default ../shared/data); made
# absolute, since ctest runs them from the build folder.
DATA=$(cd "${LOOPUS_DATA_DIR:-$ROOT/../shared/data}" 2>/dev/null && pwd) || DATA=
if [ -z "$DATA" ] || [ ! -f "$DATA/models/stories260K/stories260K.gguf" ]; then
  echo "gpu_check: models/stories260K/stories260K.gguf not found under ${LOOPUS_DATA_DIR:-../shared/data}:" \
    "set LOOPUS_DATA_DIR to a folder that has it (docs/cuda.md)" >&2
  exit 1
fi
export LOOPUS_DATA_DIR=$DATA

B=build-gpu
OUTDIR=${OUT:-$ROOT/$B/gpu_check}
mkdir -p "$OUTDIR"
SUMMARY=$OUTDIR/gpu_check.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }

command -v nvidia-smi >/dev/null && say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
say "nvcc: $(nvcc --version | tail -1)"

# ---- dependencies ----------------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
CMAKE_EXTRA=()
if ((${#missing[@]})); then
  if ls "$DEBS"/*.deb >/dev/null 2>&1; then
    DEPS=$ROOT/$B/deps
    mkdir -p "$DEPS"
    for f in "$DEBS"/*.deb; do dpkg -x "$f" "$DEPS"; done
    # pkg-config files name /usr: point them (and their libraries) into the unpacked tree
    export PKG_CONFIG_SYSROOT_DIR=$DEPS
    export PKG_CONFIG_PATH=$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig:$DEPS/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$DEPS/usr")
    command -v pkg-config >/dev/null || CMAKE_EXTRA+=("-DPKG_CONFIG_EXECUTABLE=$DEPS/usr/bin/pkgconf")
    say "deps: ${missing[*]} unpacked from $DEBS into $DEPS"
  else
    bash scripts/bootstrap.sh || {
      echo "gpu_check: missing ${missing[*]} and no network: run 'bash scripts/gpu_check.sh --fetch-debs' on a" \
        "machine with network and bring $DEBS along" >&2
      exit 1
    }
  fi
fi

# ---- build -----------------------------------------------------------------------------------------
# one translation unit per file (no unity groups): on a 16-core GPU machine they build in parallel
JOBS=$(nproc)
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DLOOPUS_CUDA=ON -DLOOPUS_UNITY_BUILD=OFF -DLOOPUS_USE_OPENBLAS=OFF \
  "${CMAKE_EXTRA[@]}" >"$OUTDIR/configure.log" 2>&1 || { tail -30 "$OUTDIR/configure.log"; exit 1; }
cmake --build $B -j"$JOBS" --target loopus_cuda_tests loopus_gpu_bench loopus_cli >"$OUTDIR/build.log" 2>&1 ||
  { grep -m20 -A5 "error" "$OUTDIR/build.log"; exit 1; }
say "build: $(elapsed) s"

# ---- tests -----------------------------------------------------------------------------------------
set +e
ctest --test-dir $B -L gpu --output-on-failure -j4 >"$OUTDIR/ctest.log" 2>&1
rc_tests=$?
$B/tests/loopus_cuda_tests -s -tc="*stories260K greedy*,*devices*" 2>&1 | grep -E "MESSAGE" >>"$OUTDIR/ctest.log"
set -e
# one line per test: PASS / FAIL / SKIP and its name (op parity, greedy ids, looped parity, ...)
LINES=$(grep -E "Test +#[0-9]+: " "$OUTDIR/ctest.log" |
  sed -E 's/^.*Test +#[0-9]+: (.*[^ .]) *\.+ *(\*\*\*)?([A-Za-z]+).*$/\3 \1/; s/^Passed/  PASS/; s/^Skipped/  SKIP/; s/^(Failed|Exception|Timeout|Not)/  FAIL/')
count() { grep -c "^  $1" <<<"$LINES" || true; }
say "tests: $(count PASS) passed, $(count FAIL) failed, $(count SKIP) skipped (ctest -L gpu, $(elapsed) s)"
echo "$LINES" | tee -a "$SUMMARY"
grep -E "stories260K on CUDA|CUDA device 0" "$OUTDIR/ctest.log" | sed 's/^.*MESSAGE: */  /' | sort -u | tee -a "$SUMMARY" || true

# ---- CLI smoke test: the real stories260K through --backend cuda ----------------------------------
M=$DATA/models/stories260K/stories260K.gguf
say "cli: $($B/bin/loopus generate -m "$M" -p "Once upon a time" -n 24 --temp 0 --backend cuda 2>&1 | tail -2 | tr '\n' ' ')"

# ---- benchmarks ------------------------------------------------------------------------------------
set +e
$B/bench/loopus_gpu_bench "$OUTDIR" 2>&1 | tee "$OUTDIR/gpu_bench.log"
rc_bench=${PIPESTATUS[0]}
set -e
grep -E "^device|^== |decode B=|prefill T=" "$OUTDIR/gpu_bench.log" >>"$SUMMARY" || true
say "total: $(elapsed) s; tests rc $rc_tests, bench rc $rc_bench; results in $OUTDIR"
echo
cat "$SUMMARY"
exit $((rc_tests != 0 || rc_bench != 0))
