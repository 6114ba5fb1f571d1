#!/usr/bin/env bash
# Side-by-side prefill (pp512) and decode (tg128) tokens/s of loopus and llama.cpp
# on the same GGUF files and thread counts, written as CSV and as a Markdown table.
#
#   LLAMA_BENCH=/path/to/llama-bench bench/compare_llamacpp.sh OUT_PREFIX MODEL.gguf...
#
# Environment: LOOPUS (default build/bin/loopus), THREADS (default "1 2"),
# REPS (default 3), IDLE_WAIT (seconds to wait for idle cores, default 300).
# For every (model, threads) pair the script waits until the cores are at
# least 85 % idle over 3 s (at most IDLE_WAIT s; the idle share it saw is in
# the output), then runs the two engines back to back, swapping which goes
# first on every pair. llama.cpp runs with -lm none (weights read into
# memory, no mmap), as loopus does by default. loopus reports the median of
# REPS repetitions, llama-bench the mean.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,14p' "$0"; exit 2; }
: "${LLAMA_BENCH:?set LLAMA_BENCH to the llama-bench binary}"
LOOPUS=${LOOPUS:-build/bin/loopus}
THREADS=${THREADS:-"1 2"}
REPS=${REPS:-3}
IDLE_WAIT=${IDLE_WAIT:-300}
out=$1
shift

idle_pct() {  # idle share of all cores over 3 s
  local u n s i w q sq st t1 i1
  read -r _ u n s i w q sq st _ </proc/stat
  t1=$((u + n + s + i + w + q + sq + st)) i1=$((i + w))
  sleep 3
  read -r _ u n s i w q sq st _ </proc/stat
  echo $((100 * (i + w - i1) / (u + n + s + i + w + q + sq + st - t1)))
}
wait_idle() {
  local start=$SECONDS p
  while :; do
    p=$(idle_pct)
    if [ "$p" -ge 85 ] || [ $((SECONDS - start)) -ge "$IDLE_WAIT" ]; then echo "$p"; return; fi
  done
}

llama_run() {  # model threads -> "pp tok/s,tg tok/s"
  "$LLAMA_BENCH" -m "$1" -p 512 -n 128 -t "$2" -r "$REPS" -lm none -o csv 2>/dev/null |
    tr -d '"' | awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
      { if ($col["n_prompt"] > 0) pp = $col["avg_ts"]; else tg = $col["avg_ts"] }
      END { printf "%s,%s\n", pp, tg }'
}
loopus_run() {  # model threads -> "pp tok/s,tg tok/s"
  local tmp
  tmp=$(mktemp)
  "$LOOPUS" bench -m "$1" --cache plain -p 512 -n 1 -r "$REPS" -t "$2" --csv "$tmp" >/dev/null
  local pp
  pp=$(awk -F, 'NR == 2 { print $5 }' "$tmp")
  "$LOOPUS" bench -m "$1" --cache plain -p 1 -n 128 -r "$REPS" -t "$2" --csv "$tmp" >/dev/null
  local tg
  tg=$(awk -F, 'NR == 2 { print $6 }' "$tmp")
  rm -f "$tmp"
  echo "$pp,$tg"
}

csv=$out.csv
echo "model,threads,idle_pct,llama_pp512,loopus_pp512,llama_tg128,loopus_tg128" >"$csv"
k=0
for m in "$@"; do
  for t in $THREADS; do
    idle=$(wait_idle)
    if [ $((k % 2)) -eq 0 ]; then
      l=$(llama_run "$m" "$t"); o=$(loopus_run "$m" "$t")
    else
      o=$(loopus_run "$m" "$t"); l=$(llama_run "$m" "$t")
    fi
    k=$((k + 1))
    line="$(basename "$m" .gguf),$t,$idle,${l%,*},${o%,*},${l#*,},${o#*,}"
    echo "$line" | tee -a "$csv" >&2
  done
done

awk -F, 'NR == 1 { next }
  NR == 2 { print "| model | threads | idle % | pp512 llama.cpp | pp512 loopus | ratio | tg128 llama.cpp | tg128 loopus | ratio |";
            print "|---|---:|---:|---:|---:|---:|---:|---:|---:|" }
  { printf "| %s | %d | %d | %.1f | %.1f | %.2f× | %.1f | %.1f | %.2f× |\n", $1, $2, $3, $4, $5, $5 / $4, $6, $7, $7 / $6 }' \
  "$csv" >"$out.md"
cat "$out.md"
