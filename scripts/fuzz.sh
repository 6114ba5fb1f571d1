#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: builds the libFuzzer targets (tests/fuzz, clang 14,
# -fsanitize=fuzzer,address,undefined) in ./build-fuzz and runs each for SECONDS (default 30) on
# its corpus: tests/fuzz/corpus/<target> (kept in the repo, read only) plus
# build-fuzz/corpus/<target> (new inputs go there). Prints executions and coverage per target;
# exits non-zero when any target crashed, leaked, timed out (-timeout=10 s per input), went over
# the memory limits (-rss_limit_mb=2048, -malloc_limit_mb=512 for one allocation, and the
# per-input heap bound of tests/fuzz/fuzz_common.hpp) or broke the error contract.
# The failing input is saved under build-fuzz/artifacts/<target>/; rerun it with
#   build-fuzz/tests/fuzz/<target> build-fuzz/artifacts/<target>/crash-...
# Environment: FUZZ_JOBS (targets run at once, default 2), FUZZ_ARGS (more libFuzzer options,
# e.g. "-runs=10000000" for the long runs of docs/security.md), LOOPUS_DATA_DIR, CXX (clang++-14).
# Targets are given as fuzz_gguf or gguf; none = all.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
shift || true
JOBS=${FUZZ_JOBS:-2}
BUILD=build-fuzz
CXX_FUZZ=${CXX:-clang++-14}
case "$CXX_FUZZ" in *clang*) ;; *) CXX_FUZZ=clang++-14 ;; esac
[ "$CXX_FUZZ" != clang++-14 ] || bash scripts/bootstrap.sh clang-14 libclang-rt-14-dev
command -v "$CXX_FUZZ" >/dev/null || { echo "fuzz.sh: $CXX_FUZZ not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
export LOOPUS_DATA_DIR=${LOOPUS_DATA_DIR:-$(cd .. && pwd)/shared/data}

# Longest input each target is given (bytes): the seeds fit, and small inputs run fast.
declare -A MAX_LEN=(
  [fuzz_gguf]=32768 [fuzz_safetensors]=32768 [fuzz_st_index]=4096 [fuzz_hf_config]=8192
  [fuzz_tokenizer_json]=16384 [fuzz_encode_bpe]=4096 [fuzz_encode_spm]=4096 [fuzz_regex]=1024
  [fuzz_llama2c]=32768 [fuzz_llama2c_tok]=16384 [fuzz_gguf_tokenizer]=32768 [fuzz_checkpoint]=32768
  [fuzz_train_data]=4096)

ALL=$(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//' | grep -v '^fuzz_seedgen$')
TARGETS=()
for t in "$@"; do
  t=fuzz_${t#fuzz_}
  grep -qx "$t" <<<"$ALL" || { echo "fuzz.sh: unknown target $t (known: $(echo $ALL))" >&2; exit 2; }
  TARGETS+=("$t")
done
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS <<<"$ALL"

if [ ! -f $BUILD/CMakeCache.txt ]; then
  cmake -S . -B $BUILD -DCMAKE_CXX_COMPILER="$CXX_FUZZ" -DCMAKE_BUILD_TYPE=Debug -DLOOPUS_BUILD_FUZZERS=ON \
    -DLOOPUS_BUILD_TESTS=OFF -DLOOPUS_BUILD_BENCH=OFF -DLOOPUS_BUILD_EXAMPLES=OFF -DLOOPUS_BUILD_TOOLS=OFF \
    -DLOOPUS_INSTALL=OFF -DLOOPUS_CUDA=OFF >/dev/null
fi
# CMake builds the targets of one --target list one after the other, each on one core: with all
# targets wanted, build the whole folder instead (fuzz targets only), in parallel.
if [ $# -eq 0 ]; then cmake --build $BUILD -j"$(nproc)"; else cmake --build $BUILD -j"$(nproc)" --target "${TARGETS[@]}"; fi

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
mkdir -p $BUILD/logs

run_one() {
  local t=$1
  local corpus=$BUILD/corpus/$t art=$BUILD/artifacts/$t/
  mkdir -p "$corpus" "$art" tests/fuzz/corpus/$t
  local cmd=(nice -n 10 $BUILD/tests/fuzz/$t -max_len=${MAX_LEN[$t]:-8192} -timeout=10 -rss_limit_mb=2048
             -malloc_limit_mb=512 -max_total_time="$SECONDS_EACH" -print_final_stats=1 -artifact_prefix="$art"
             ${FUZZ_ARGS:-} "$corpus" tests/fuzz/corpus/$t)
  echo "${cmd[*]}" >$BUILD/logs/$t.cmd
  if "${cmd[@]}" >$BUILD/logs/$t.log 2>&1; then echo ok >$BUILD/logs/$t.status; else echo "FAILED ($?)" >$BUILD/logs/$t.status; fi
}

running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
  echo "fuzz.sh: $t for ${SECONDS_EACH}s"
  run_one "$t" &
  running=$((running + 1))
done
wait

status=0
printf '\n%-22s %10s %8s %6s %7s %7s  %s\n' target execs exec/s cov ft corpus result
for t in "${TARGETS[@]}"; do
  log=$BUILD/logs/$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  files=$(( $(ls $BUILD/corpus/$t | wc -l) + $(ls tests/fuzz/corpus/$t | wc -l) ))
  res=$(cat $BUILD/logs/$t.status)
  printf '%-22s %10s %8s %6s %7s %7s  %s\n' "$t" "${execs:--}" "${eps:--}" "${cov:--}" "${ft:--}" "$files" "$res"
  if [ "$res" != ok ]; then
    status=1
    grep -E 'FINDING|ERROR: |SUMMARY|Test unit written|==[0-9]+== ' "$log" | head -5 | sed 's/^/    /'
    echo "    log: $log"
  fi
done
exit $status
