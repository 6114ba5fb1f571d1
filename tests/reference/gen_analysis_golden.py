#!/usr/bin/env python3
# Reference golden for loopus's inspection statistics and PCA, computed with NumPy.
# SPDX-License-Identifier: MIT
"""NumPy golden for include/loopus/analysis (stats.hpp, pca.hpp, trace.hpp geometry).

Input: a folder written by `loopus trace` (trace.json, states.f32, alpha.f32).
Output, in tests/golden/analysis/ (or --out): the states and gate coefficients as
saved (states.f32, alpha.f32), and golden.json with, per traced token:
  - per iteration r: ||h_r||, ||h_r - h_{r-1}||, the same over ||h_{r-1}||,
    cos(h_r, h_final), and for r >= 1 the gate's a over channels: mean, std
    (ddof = 0), min, 25/50/75th percentiles (numpy.percentile, method linear), max;
  - the 2-D PCA of its states h_0..h_loops: projections [loops + 1, 2] and the
    explained variance ratios (SVD of the centred data, numpy.linalg.svd);
and the PCA of all tokens' states, each trajectory centred on its own mean.
Projections are compared up to the sign of each component.

Made with (throw-away venv; only numpy is needed):
  build/bin/loopus trace -m $LOOPUS_DATA_DIR/models/stories260K/stories260K.gguf \
      -p "Once upon a time" -n 8 --loops 6 --encoder-layers 0..0 --decoder-layers 4..4 \
      --gate selective --gate-seed 3 --out /tmp/trace260K
  python3 tests/reference/gen_analysis_golden.py /tmp/trace260K
"""
import argparse
import json
import os
import shutil

import numpy as np


def pca2(x):
    c = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    k = min(2, len(s))
    total = float((s ** 2).sum())
    proj = u[:, :k] * s[:k]
    ratio = [float(v ** 2 / total) if total > 0 else 0.0 for v in s[:k]]
    return proj.tolist(), ratio


def summary(v):
    v = v.astype(np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "q1": float(np.percentile(v, 25)), "median": float(np.percentile(v, 50)),
            "q3": float(np.percentile(v, 75)), "max": float(v.max())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_dir")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "golden", "analysis"))
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.trace_dir, "trace.json")))
    d = meta["d"]
    states = np.fromfile(os.path.join(a.trace_dir, "states.f32"), dtype=np.float32).reshape(-1, d)
    alpha = np.fromfile(os.path.join(a.trace_dir, "alpha.f32"), dtype=np.float32).reshape(-1, d)
    tokens, centred = [], []
    for t in meta["tokens"]:
        n = t["loops"] + 1
        h = states[t["state_row"]:t["state_row"] + n].astype(np.float64)
        al = alpha[t["alpha_row"]:t["alpha_row"] + t["loops"]]
        its = []
        fin = h[-1]
        for r in range(n):
            it = {"r": r, "norm": float(np.linalg.norm(h[r])),
                  "cos_final": float(h[r] @ fin / (np.linalg.norm(h[r]) * np.linalg.norm(fin)))}
            if r > 0:
                dd = float(np.linalg.norm(h[r] - h[r - 1]))
                it["delta"] = dd
                it["delta_rel"] = dd / float(np.linalg.norm(h[r - 1]))
                it["alpha"] = summary(al[r - 1])
            its.append(it)
        proj, ratio = pca2(h)
        tokens.append({"loops": t["loops"], "state_row": t["state_row"], "alpha_row": t["alpha_row"],
                       "iterations": its, "pca": {"projections": proj, "explained_ratio": ratio}})
        centred.append(h - h.mean(axis=0, keepdims=True))
    proj, ratio = pca2(np.concatenate(centred))
    os.makedirs(a.out, exist_ok=True)
    shutil.copy(os.path.join(a.trace_dir, "states.f32"), os.path.join(a.out, "states.f32"))
    shutil.copy(os.path.join(a.trace_dir, "alpha.f32"), os.path.join(a.out, "alpha.f32"))
    golden = {"source": "tests/reference/gen_analysis_golden.py (numpy %s)" % np.__version__,
              "d": d, "tokens": tokens, "overlay_pca": {"projections": proj, "explained_ratio": ratio}}
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
