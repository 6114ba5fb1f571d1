#!/usr/bin/env python3
# Writes the quantizer goldens of tests/core/test_quantize.cpp: gguf-py's q8_0/q4_0/q4_1 and llama-quantize's K-quants.
# SPDX-License-Identifier: MIT
"""Golden files for loopus's block quantizers (include/loopus/core/quantize.hpp).

tests/golden/quant/gguf_py.gguf   (no llama.cpp needed)
    "src.<case>": f32 rows [rows, cols] of edge cases (below), and for each of
    q8_0, q4_0, q4_1 "<type>.<case>": the raw blocks gguf.quants.quantize makes
    of them (gguf-py's numpy port of ggml's reference quantizers).

tests/golden/quant/llama_quantize.gguf   (needs a llama.cpp build with llama-quantize)
    The input is the kquant-tiny model of make_random_gguf.py (llama, dim 256,
    ff 768, so every row is whole 256-value blocks; f32 normal(0, 0.02), seed
    1234) with edge-case rows written over the first rows of blk.0.attn_q.weight
    (EDGE_ROWS below). llama-quantize --pure with --token-embedding-type and
    --output-tensor-type set to the same type quantizes every matrix of it to
    q4_K, q5_K, q6_K (ftypes Q4_K_S, Q5_K_S, Q6_K), and also q8_0, q4_0, q4_1.
    The whole model is too big to commit (33 MB), and blocks are independent, so
    the golden keeps a few rows of four matrices: "src.<tensor>" (f32 rows of
    the input) and "<type>.<tensor>" (the same rows of llama-quantize's output,
    raw blocks).

Run from the repo root (the venv needs `pip install gguf numpy`):
  python3 tests/reference/make_quant_goldens.py --gguf-py-only
  python3 tests/reference/make_quant_goldens.py --llama-bin LLAMA_CPP_BUILD/bin
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants
except ImportError:  # pragma: no cover - only a usage hint
    sys.exit("make_quant_goldens.py: needs the 'gguf' package (pip install gguf numpy)")

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "golden", "quant")


def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def gguf_py_cases():
    """name -> f32 [rows, cols] (cols a multiple of 32): the edge cases of the 32-value block types."""
    rng = np.random.default_rng(20240601)
    c = {}
    c["random"] = f32(rng.standard_normal((5, 96)) * 0.5)                    # odd row count, 3 blocks a row
    c["zeros"] = np.zeros((1, 64), dtype=np.float32)                         # all-zero blocks (d = 0)
    # (No block of -0.0 alone: there gguf-py's q4_0 writes d = +0 where ggml writes -0; see test_quantize.cpp.)
    c["constant"] = f32([[0.75] * 32 + [-3.0] * 32, [1e-3] * 32 + [-0.0] * 16 + [-3.0] * 16])
    neg = rng.standard_normal((3, 32)) * 0.1
    neg[:, 7] = -2.0                                                         # the largest magnitude is negative
    neg[1, 20] = 2.0                                                         # ... and tied with a positive one
    c["negmax"] = f32(neg)
    c["huge"] = f32(rng.standard_normal((2, 64)) * [[3e4], [1e6]])           # f16 d near / past 65504 (inf)
    c["tiny"] = f32(rng.standard_normal((3, 32)) * [[1e-5], [1e-8], [1e-20]])  # f16 d subnormal / flushed to 0
    ties = np.arange(32, dtype=np.float32) - 15.5                            # x / d lands on .5 ties
    c["ties"] = f32([ties * 2.0, ties / 8.0, np.linspace(-1.0, 1.0, 32)])
    mixed = rng.standard_normal((4, 64)) * 0.02
    mixed[0, :32] = 0.0                                                      # a zero block beside a normal one
    mixed[1, 5] = 40.0                                                       # one outlier
    mixed[2] = np.abs(mixed[2]) + 1.0                                        # all positive (q4_1 min > 0)
    mixed[3] = -np.abs(mixed[3]) - 1.0                                       # all negative
    c["mixed"] = f32(mixed)
    return c


def write_gguf_py_golden(path):
    w = gguf.GGUFWriter(path, arch="loopus-quant-test")
    for name, src in gguf_py_cases().items():
        w.add_tensor("src." + name, src)
        for qt, tname in ((Q.Q8_0, "q8_0"), (Q.Q4_0, "q4_0"), (Q.Q4_1, "q4_1")):
            with np.errstate(all="ignore"):  # f16 overflow of d in "huge" is part of the case
                blocks = quants.quantize(src, qt)
            w.add_tensor(tname + "." + name, blocks, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Rows written over blk.0.attn_q.weight before llama-quantize runs (cols = 256).
def edge_rows(rng):
    n = 256
    rows = []
    rows.append(np.zeros(n))                                                 # 0: all zero
    rows.append(np.full(n, 0.0625))                                          # 1: constant
    r = rng.standard_normal(n) * 0.02
    r[::32] = 0.0
    r[:32] = 0.0                                                             # 2: a zero sub-block
    rows.append(r)
    rows.append(rng.standard_normal(n) * 1e3)                                # 3: big magnitudes
    rows.append(rng.standard_normal(n) * 1e-6)                               # 4: tiny magnitudes
    rows.append(rng.standard_normal(n) * 1e-17)                              # 5: below ggml's 1e-15 "zero" bound
    r = -np.abs(rng.standard_normal(n)) * 0.05
    r[100] = 0.5                                                             # 6: negative, one positive outlier
    rows.append(r)
    r = np.abs(rng.standard_normal(n)) * 0.05 + 0.01                         # 7: all positive (min > 0)
    rows.append(r)
    r = rng.standard_normal(n) * 0.02
    r[17] = -1.0
    r[200] = 3.0                                                             # 8: outliers of both signs
    rows.append(r)
    r = np.repeat(rng.standard_normal(16) * 0.1, 16)                         # 9: constant 16-value sub-blocks
    rows.append(r)
    r = np.round(rng.standard_normal(n) * 8) / 64                            # 10: coarse levels (rounding ties)
    rows.append(r)
    return f32(rows)


# (tensor, first rows kept in the golden)
GOLDEN_ROWS = [("blk.0.attn_q.weight", 16), ("blk.0.ffn_down.weight", 3),
               ("token_embd.weight", 3), ("output.weight", 2)]
LLAMA_TYPES = [("q4_K", "Q4_K_S", Q.Q4_K), ("q5_K", "Q5_K_S", Q.Q5_K), ("q6_K", "Q6_K", Q.Q6_K),
               ("q8_0", "Q8_0", Q.Q8_0), ("q4_0", "Q4_0", Q.Q4_0), ("q4_1", "Q4_1", Q.Q4_1)]


def tensor_rows(reader, name, nrows):
    t = next(t for t in reader.tensors if t.name == name)
    data = np.asarray(t.data)
    return t.tensor_type, np.ascontiguousarray(data[:nrows])


def write_llama_golden(path, llama_bin, data_dir):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_gguf.py"), "--out", tmp,
                        "--models", "kquant-tiny", "--dtypes", "f32"]
                       + (["--data-dir", data_dir] if data_dir else []), check=True)
        src_path = os.path.join(tmp, "kquant-tiny-random-F32.gguf")
        r = gguf.GGUFReader(src_path, "r+")
        q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
        edges = edge_rows(np.random.default_rng(7))
        q.data[: len(edges)] = edges
        r.data.flush()
        del q, r
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = llama_bin + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        outs = {}
        for tname, ftype, _ in LLAMA_TYPES:
            out = os.path.join(tmp, f"out-{tname}.gguf")
            subprocess.run([os.path.join(llama_bin, "llama-quantize"), "--pure", "--token-embedding-type", tname,
                            "--output-tensor-type", tname, src_path, out, ftype], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            outs[tname] = gguf.GGUFReader(out)
        src = gguf.GGUFReader(src_path)
        w = gguf.GGUFWriter(path, arch="loopus-quant-test")
        for name, nrows in GOLDEN_ROWS:
            ttype, rows = tensor_rows(src, name, nrows)
            assert ttype == Q.F32, name
            w.add_tensor("src." + name, rows)
            for tname, _, qt in LLAMA_TYPES:
                ttype, blocks = tensor_rows(outs[tname], name, nrows)
                if ttype != qt:
                    sys.exit(f"llama-quantize wrote {name} as {ttype.name}, expected {qt.name}")
                w.add_tensor(tname + "." + name, blocks, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", help="llama.cpp build bin/ folder holding llama-quantize and its .so files")
    ap.add_argument("--data-dir", help="shared data dir for make_random_gguf.py (default: its own)")
    ap.add_argument("--gguf-py-only", action="store_true", help="write only gguf_py.gguf")
    args = ap.parse_args()
    os.makedirs(OUT_DIR, exist_ok=True)
    write_gguf_py_golden(os.path.join(OUT_DIR, "gguf_py.gguf"))
    print("wrote", os.path.join(OUT_DIR, "gguf_py.gguf"))
    if args.gguf_py_only:
        return 0
    if not args.llama_bin:
        ap.error("--llama-bin is needed for llama_quantize.gguf (or pass --gguf-py-only)")
    write_llama_golden(os.path.join(OUT_DIR, "llama_quantize.gguf"), os.path.abspath(args.llama_bin), args.data_dir)
    print("wrote", os.path.join(OUT_DIR, "llama_quantize.gguf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
