#!/usr/bin/env bash
# The demo: the real stories260K model, run plain, then recast as a looped model
# (encoder 0..0, reasoning 1..3 looped, decoder 4..4) with early exit and
# per-token loop counts, then the KV-cache benchmark of the looped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --target loopus_cli
DATA="${LOOPUS_DATA_DIR:-$(cd .. && pwd)/shared/data}"
M="$DATA/models/stories260K/stories260K.gguf"
L=build/bin/loopus
echo "== loopus info"
$L info -m "$M"
echo; echo "== plain greedy generation (matches llama2.c / the golden ids)"
$L generate -m "$M" -p "Once upon a time" -n 64 --temp 0
echo; echo "== recast: encoder 0..0, reasoning 1..3 x up to 8 loops, decoder 4..4, convergence early exit; [n] = loops used"
$L generate -m "$M" -p "Once upon a time" -n 64 --temp 0 --encoder-layers 0..0 --decoder-layers 4..4 \
  --loops 8 --gate mix:0.5 --halt conv:3 --show-loops
echo; echo "== looped decode speed with and without the loop-aware KV cache"
$L bench -m "$M" --encoder-layers 0..0 --decoder-layers 4..4 --gate mix:0.5 --loops 8 -n 64,256 --cache per-depth,shared,none
