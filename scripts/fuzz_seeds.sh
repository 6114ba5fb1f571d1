#!/usr/bin/env bash
# scripts/fuzz_seeds.sh [TARGET...]: rebuilds the seed corpora of the fuzz targets.
# fuzz_seedgen writes seeds into build-fuzz/seeds/<target> (tiny models from the library's own
# writers, cut-down vocabularies and short texts from LOOPUS_DATA_DIR); libFuzzer's -merge=1 then
# keeps the smallest set of the seeds, the repo corpus and what fuzz runs found
# (build-fuzz/corpus/<target>) that covers everything they cover, and that set replaces
# tests/fuzz/corpus/<target>. Needs the build of scripts/fuzz.sh (it runs it with 0 seconds first).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-fuzz
export LOOPUS_DATA_DIR=${LOOPUS_DATA_DIR:-$(cd .. && pwd)/shared/data}
ALL=$(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//' | grep -v '^fuzz_seedgen$')
TARGETS=()
for t in "$@"; do TARGETS+=("fuzz_${t#fuzz_}"); done
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS <<<"$ALL"

[ -f $BUILD/CMakeCache.txt ] || FUZZ_ARGS="-runs=0" bash scripts/fuzz.sh 0 "${TARGETS[@]}" >/dev/null || true
cmake --build $BUILD -j"$(nproc)" --target fuzz_seedgen "${TARGETS[@]}"
rm -rf $BUILD/seeds
$BUILD/tests/fuzz/fuzz_seedgen $BUILD/seeds

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1"
for t in "${TARGETS[@]}"; do
  new=$BUILD/merge/$t
  rm -rf "$new"
  mkdir -p "$new" tests/fuzz/corpus/$t $BUILD/corpus/$t
  # Seeds first: on equal coverage -merge keeps what it saw first (and the smaller file).
  $BUILD/tests/fuzz/$t -merge=1 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 "$new" \
    $BUILD/seeds/$t tests/fuzz/corpus/$t $BUILD/corpus/$t >$BUILD/merge/$t.log 2>&1 ||
    { echo "fuzz_seeds.sh: merge of $t failed, see $BUILD/merge/$t.log" >&2; exit 1; }
  rm -rf tests/fuzz/corpus/$t
  mkdir -p tests/fuzz/corpus/$t
  cp "$new"/* tests/fuzz/corpus/$t/ 2>/dev/null || true
  printf '%-22s %4d files %8d bytes\n' "$t" "$(ls tests/fuzz/corpus/$t | wc -l)" "$(cat tests/fuzz/corpus/$t/* 2>/dev/null | wc -c)"
done
