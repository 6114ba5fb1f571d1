#!/usr/bin/env bash
# Perplexity of one GGUF under llama.cpp's llama-perplexity and `loopus perplexity --chunking llama`
# (the same chunking: chunks of CTX tokens, BOS first when the vocabulary adds it, the second half of
# each chunk scored; docs/evaluation.md), and the ratio of the two.
#
#   LLAMA_PERPLEXITY=/path/to/llama-perplexity bench/compare_perplexity.sh MODEL.gguf TEXT [-- LOOPUS_ARGS...]
#
# TEXT is usually WikiText-2's wiki.test.raw ($LOOPUS_DATA_DIR/eval/wikitext-2-raw/wiki.test.raw).
# Environment: LOOPUS (default build/bin/loopus), CTX (default 512), CHUNKS (default 40; -1: all),
# THREADS (default 2). Arguments after `--` go to loopus (e.g. --dequantize). llama.cpp's shared
# libraries are found next to the binary unless LD_LIBRARY_PATH is set.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
: "${LLAMA_PERPLEXITY:?set LLAMA_PERPLEXITY to the llama-perplexity binary}"
LOOPUS=${LOOPUS:-build/bin/loopus}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-40}
THREADS=${THREADS:-2}
model=$1 text=$2
shift 2
[ "${1:-}" = "--" ] && shift
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-$(dirname "$LLAMA_PERPLEXITY")}

# llama-perplexity prints "Final estimate: PPL = 12.3456 +/- 0.12345" on stderr.
llama_out=$("$LLAMA_PERPLEXITY" -m "$model" -f "$text" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" 2>&1) ||
  { echo "$llama_out" | tail -20 >&2; exit 1; }
read -r llama_ppl llama_err < <(echo "$llama_out" | sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p')
[ -n "${llama_ppl:-}" ] || { echo "$llama_out" | tail -20 >&2; echo "no final estimate from llama-perplexity" >&2; exit 1; }

loopus_json=$("$LOOPUS" perplexity -m "$model" -f "$text" --chunking llama -c "$CTX" --chunks "$CHUNKS" \
  -t "$THREADS" --json "$@" 2>/dev/null | tail -1)
read -r loopus_ppl loopus_err loopus_tokens loopus_chunks < <(echo "$loopus_json" | python3 -c \
  'import json, sys; j = json.load(sys.stdin); print(j["ppl"], j["ppl_stderr"], j["tokens"], j["chunks"])')

awk -v m="$model" -v c="$CTX" -v lp="$llama_ppl" -v le="$llama_err" -v op="$loopus_ppl" -v oe="$loopus_err" \
  -v n="$loopus_tokens" -v k="$loopus_chunks" 'BEGIN {
  printf "model           %s\n", m
  printf "chunking        %d chunks of %d, %d tokens scored\n", k, c, n
  printf "llama-perplexity PPL = %.4f +/- %.5f\n", lp, le
  printf "loopus           PPL = %.4f +/- %.5f\n", op, oe
  printf "loopus / llama   %.6f (%+.4f %%)\n", op / lp, 100 * (op / lp - 1)
}'
