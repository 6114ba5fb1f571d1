#!/usr/bin/env python3
"""Per-depth quantization study (issue 15): does quantization error grow with the loop count?

A looped model's held-out perplexity at B = 1..N loops with its reasoning block and its
encoder/decoder at different precisions. Each variant is made by `loopus quantize` from one f32
GGUF (`--keep` leaves the named layers at f32), then scored by `loopus perplexity` with the same
split and loop budget. Writes CSV and an SVG (perplexity against B, one line per variant) and
prints a Markdown table. Standard library only.

  python3 bench/quant_depth_study.py --model F32.gguf --text wiki.test.raw \\
      --encoder 0..1 --decoder 29.. --layers 30 --max-loops 8 --max-tokens 2048 --out DIR
  python3 bench/quant_depth_study.py --looped --model ADAPTED_F32.gguf --text held_out.txt --out DIR

LOOPUS (default build/bin/loopus) names the binary.
"""
import argparse
import csv
import json
import os
import subprocess
import sys


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def layer_range(spec, n_layers):
    """The official layer syntax subset used here: a..b, k (= 0..k for the encoder), k.. ."""
    if ".." in spec:
        a, b = spec.split("..")
        return list(range(int(a), int(b) + 1 if b else n_layers))
    return [int(spec)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the f32 GGUF every variant is made from")
    ap.add_argument("--text", required=True, help="held-out text (e.g. WikiText-2 wiki.test.raw)")
    ap.add_argument("--looped", action="store_true",
                    help="MODEL is a LoopUS checkpoint: its own split; --keep uses encoder/decoder/reasoning")
    ap.add_argument("--encoder", default="0..1", help="recast split of a plain model (official syntax)")
    ap.add_argument("--decoder", default="29..")
    ap.add_argument("--layers", type=int, default=0, help="number of transformer layers (plain models)")
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--stream", action="store_true",
                    help="score one token per call (decode arithmetic: 8-bit activations) instead of "
                         "prefilling windows (weights widened for the GEMM)")
    ap.add_argument("--max-loops", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--types", default="Q8_0,Q4_0", help="quantized types to study")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    loopus = os.environ.get("LOOPUS", "build/bin/loopus")
    os.makedirs(a.out, exist_ok=True)

    if a.looped:
        encdec_keep = ["token_embd.weight", "output.weight", "encoder", "decoder"]
        reasoning_keep = ["reasoning"]
        split = []
    else:
        enc = layer_range(a.encoder, a.layers)
        dec = layer_range(a.decoder, a.layers) if a.decoder else []
        dec = [l for l in dec if l not in enc]
        reasoning = [l for l in range(a.layers) if l not in enc and l not in dec]
        encdec_keep = ["token_embd.weight", "output.weight"] + [f"blk.{l}.*" for l in enc + dec]
        reasoning_keep = [f"blk.{l}.*" for l in reasoning]
        split = ["--encoder-layers", a.encoder, "--decoder-layers", a.decoder]
    tok = ["--tokenizer", a.tokenizer] if a.tokenizer else []

    # (name, reasoning precision, encoder/decoder precision, quantize args or None for the f32 file)
    variants = [("f32", "f32", "f32", None)]
    for t in a.types.split(","):
        variants.append((f"all {t}", t, t, ["--type", t]))
        variants.append((f"reasoning {t}", t, "f32", ["--type", t, "--keep", ",".join(encdec_keep)]))
        variants.append((f"enc/dec {t}", "f32", t, ["--type", t, "--keep", ",".join(reasoning_keep)]))

    threads = ["-t", str(a.threads)] if a.threads else []
    rows = []
    for name, rp, ep, qargs in variants:
        path = a.model
        if qargs:
            path = os.path.join(a.out, name.replace(" ", "_").replace("/", "") + ".gguf")
            # --keep globs that match no tensor are an error; output.weight is absent when tied.
            keep = qargs
            if "--keep" in qargs:
                i = qargs.index("--keep")
                info = json.loads(run([loopus, "info", "-m", a.model, "--json", *tok]))
                tied = info.get("tied_output", info.get("base", {}).get("tied_output", True))
                if tied:
                    keep = qargs[:i + 1] + [",".join(g for g in qargs[i + 1].split(",") if g != "output.weight")]
            run([loopus, "quantize", "-m", a.model, "--out", path, *keep, *threads])
        for B in range(1, a.max_loops + 1):
            out = run([loopus, "perplexity", "-m", path, "-f", a.text, *split, *tok, "--loops", str(B),
                       "--halt", "fixed", "--window", str(a.window), *(["--stream"] if a.stream else []), "--max-tokens", str(a.max_tokens), "--json",
                       *threads])
            ppl = json.loads(out)["ppl"]
            rows.append({"variant": name, "reasoning": rp, "encdec": ep, "loops": B, "perplexity": ppl})
            print(f"{name:>18}  B={B}  ppl {ppl:.3f}", file=sys.stderr, flush=True)

    with open(os.path.join(a.out, "quant_depth.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    names = [v[0] for v in variants]
    ppl = {(r["variant"], r["loops"]): r["perplexity"] for r in rows}
    print("| variant | reasoning | enc/dec | " + " | ".join(f"B={b}" for b in range(1, a.max_loops + 1)) + " |")
    print("|---|---|---|" + "---:|" * a.max_loops)
    for name, rp, ep, _ in variants:
        cells = []
        for b in range(1, a.max_loops + 1):
            base = ppl[("f32", b)]
            v = ppl[(name, b)]
            cells.append(f"{v:.2f}" if name == "f32" else f"{v:.2f} ({100 * (v / base - 1):+.1f}%)")
        print(f"| {name} | {rp} | {ep} | " + " | ".join(cells) + " |")

    # SVG: relative perplexity change against f32 at each B, one polyline per quantized variant.
    W, H, L, R, T, Bm = 640, 400, 70, 170, 30, 50
    qn = [n for n in names if n != "f32"]
    rel = {n: [100 * (ppl[(n, b)] / ppl[("f32", b)] - 1) for b in range(1, a.max_loops + 1)] for n in qn}
    lo = min(0.0, min(min(v) for v in rel.values()))
    hi = max(max(v) for v in rel.values())
    hi = hi if hi > lo else lo + 1
    sx = lambda b: L + (b - 1) * (W - L - R) / max(1, a.max_loops - 1)
    sy = lambda v: T + (hi - v) * (H - T - Bm) / (hi - lo)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="18">Perplexity change vs f32 at each loop count (%)</text>',
           f'<line x1="{L}" y1="{sy(0):.1f}" x2="{W - R}" y2="{sy(0):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - Bm}" stroke="black"/>',
           f'<line x1="{L}" y1="{H - Bm}" x2="{W - R}" y2="{H - Bm}" stroke="black"/>']
    for b in range(1, a.max_loops + 1):
        svg.append(f'<text x="{sx(b):.1f}" y="{H - Bm + 16}" text-anchor="middle">{b}</text>')
    svg.append(f'<text x="{(L + W - R) / 2:.1f}" y="{H - 12}" text-anchor="middle">loops B</text>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        svg.append(f'<text x="{L - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i, n in enumerate(qn):
        c = colors[i % len(colors)]
        pts = " ".join(f"{sx(b + 1):.1f},{sy(v):.1f}" for b, v in enumerate(rel[n]))
        svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        svg.append(f'<text x="{W - R + 8}" y="{T + 16 * i + 10}" fill="{c}">{n}</text>')
    svg.append("</svg>")
    with open(os.path.join(a.out, "quant_depth.svg"), "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
