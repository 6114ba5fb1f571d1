#!/usr/bin/env bash
# The demo (about 100 s on an idle 2-core machine after the build): the real stories260K
# model run plain; recast as a looped model (encoder 0..0, reasoning 1..3
# looped, decoder 4..4) with a selective gate and a confidence head, adapted by
# random deep supervision on TinyStories; held-out perplexity before and after;
# generation with adaptive early exit; the loop KV cache benchmark. Then the real
# SmolLM2-135M-Instruct (fetched by scripts/get_models.sh): plain, recast with fixed
# loops, and recast with early exit.
# Output goes to build/demo (LOOPUS_DEMO_OUT to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --target loopus_cli
bash scripts/get_models.sh
DATA="${LOOPUS_DATA_DIR:-$(cd .. && pwd)/shared/data}"
M="$DATA/models/stories260K/stories260K.gguf"
TEXT="$DATA/text/tinystories/tinystories_validation_first1000.txt"
OUT="${LOOPUS_DEMO_OUT:-build/demo}"
L=build/bin/loopus
[ -f "$M" ] || { echo "demo: $M not found (set LOOPUS_DATA_DIR to the shared data folder)" >&2; exit 1; }
mkdir -p "$OUT"

echo "== 1. the pretrained model"
$L info -m "$M"
echo; echo "-- greedy generation (the same ids as llama.cpp and llama2.c)"
$L generate -m "$M" -p "Once upon a time" -n 48 --temp 0

echo; echo "== 2. recast without training: reasoning block x 8 loops, fixed 0.5 gate, convergence exit; [n] = loops used"
$L generate -m "$M" -p "Once upon a time" -n 48 --temp 0 --encoder-layers 0..0 --decoder-layers 4..4 \
  --loops 8 --gate mix:0.5 --halt conv:3 --show-loops

echo; echo "== 3. adapt: random deep supervision, selective gate + confidence head, on the first 80 % of"
echo "   $TEXT (held out: the last 20 %), with adapt's defaults (the small-run recipe; --official is the"
echo "   paper's); a progress line with tokens/s and ETA"
$L adapt -m "$M" --encoder-layers 0..0 --decoder-layers 4..4 --data "$TEXT" --val-percent 20 \
  --tokens 100000 -t 1 --out "$OUT/adapted" >"$OUT/adapt_summary.json"
sed -n 's/^ *"\(original_ppl\|tokens\|seconds\|tokens_per_s\)": \([^,]*\),\?$/   \1: \2/p' "$OUT/adapt_summary.json"
echo "   adapted held-out perplexity by loop count:"
sed -n '/"adapted_ppl_by_loops"/,/}/p' "$OUT/adapt_summary.json" | sed -n 's/^ *"\([0-9]*\)": \([0-9.]*\),\?$/     B = \1: \2/p'
echo "   (full summary: $OUT/adapt_summary.json; training log: $OUT/adapted/log.jsonl)"

echo; echo "== 4. the adapted model with adaptive early exit: stop when the confidence head says q >= 0.5"
$L generate -m "$OUT/adapted" -p "Once upon a time" -n 48 --temp 0 --loops 8 --halt q:0.5 --show-loops

echo; echo "== 5. looped decode speed with and without the loop-aware KV cache (B = 8, fixed loops)"
$L bench -m "$OUT/adapted" --loops 8 -n 64,256 --cache per-depth,shared,none --halt fixed \
  --csv "$OUT/kv_cache.csv" --svg "$OUT/kv_cache.svg"
echo "   plot: $OUT/kv_cache.svg"

S="${LOOPUS_MODELS_DIR:-$HOME/.cache/loopus/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
echo; echo "== 6. a real instruction-tuned model: SmolLM2-135M-Instruct (Q4_1, 30 layers)"
if [ ! -f "$S" ]; then
  echo "   skipped: $S is missing (LOOPUS_OFFLINE=1?); bash scripts/get_models.sh fetches it"
  exit 0
fi
# its chat template, written out; the specials are parsed as special tokens
SP=$'<|im_start|>user\nGive me three tips for staying healthy.<|im_end|>\n<|im_start|>assistant\n'
SPLIT=(--encoder-layers 0..13 --decoder-layers 16..29)
export OMP_WAIT_POLICY=passive  # no spinning OpenMP workers when the machine is shared
echo "-- plain greedy generation"
$L generate -m "$S" -p "$SP" -n 40 --temp 0
echo; echo "-- recast without training: encoder 0..13, reasoning block 14..15 x 3 loops (fixed, 0.5 mix gate),"
echo "   decoder 16..29; [n] = loops used"
$L generate -m "$S" -p "$SP" -n 40 --temp 0 "${SPLIT[@]}" --loops 3 --gate mix:0.5 --halt fixed --show-loops
echo; echo "-- the same with early exit: up to 6 loops, stop when the decoded next-token distribution"
echo "   changes by KL < 0.1 between loops (zero-shot, no confidence head)"
$L generate -m "$S" -p "$SP" -n 40 --temp 0 "${SPLIT[@]}" --loops 6 --gate mix:0.5 --halt kl:0.1 --show-loops
