#!/usr/bin/env bash
# Decode speed of `loopus generate` with the default thread count against -t 1, on an idle machine and
# with one CPU-bound program beside it (the case where OpenMP teams that spin at their barriers
# lose: docs/performance.md, "Threads on a busy machine").
#
#   bench/busy_threads.sh MODEL.gguf [LOOPUS]
#
# Environment: N (tokens generated, default 64), REPS (default 3; the median ms/token is
# reported), PROMPT (default "Once upon a time"). Prints one Markdown table: machine state ×
# threads → ms/token. The competitor is a shell busy loop, started before and killed after each
# busy run.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
model=$1
LOOPUS=${2:-${LOOPUS:-build/bin/loopus}}
N=${N:-64}
REPS=${REPS:-3}
PROMPT=${PROMPT:-"Once upon a time"}

ms_per_token() {  # extra loopus args -> median ms/token over REPS runs
  local runs=()
  for _ in $(seq "$REPS"); do
    runs+=("$("$LOOPUS" generate -m "$model" -p "$PROMPT" -n "$N" --temp 0 "$@" 2>&1 >/dev/null |
      sed -n 's/.*generated: [0-9]* tokens, \([0-9.]*\) ms\/token.*/\1/p')")
  done
  printf '%s\n' "${runs[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

busy_pid=
start_busy() { (while :; do :; done) & busy_pid=$!; sleep 0.5; }
stop_busy() { kill "$busy_pid" 2>/dev/null || true; wait "$busy_pid" 2>/dev/null || true; busy_pid=; }
trap stop_busy EXIT

echo "| machine | threads | ms/token |"
echo "|---|---|---:|"
for state in idle busy; do
  [ "$state" = busy ] && start_busy
  echo "| $state | default | $(ms_per_token) |"
  echo "| $state | -t 1 | $(ms_per_token -t 1) |"
  [ "$state" = busy ] && stop_busy
done
