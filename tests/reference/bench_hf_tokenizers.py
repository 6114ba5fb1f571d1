#!/usr/bin/env python3
# Times HF `tokenizers` encode (single thread) on the texts bench/bench_tokenizer.cpp uses, in MB/s.
# SPDX-License-Identifier: MIT
"""Run by hand:  python3 tests/reference/bench_hf_tokenizers.py [--data DIR] [--reps N]

For each tokenizer (Qwen3, Llama 3) and file: "whole" encodes the file as one string, "lines"
encodes it line by line (keepends) in a Python loop, "batch" passes the lines to encode_batch.
TOKENIZERS_PARALLELISM=false keeps HF on one thread. Reports the best of N runs, as wall-clock
and process-CPU MB/s (the CPU figure is the one to compare on a shared machine).
"""
import argparse
import os
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

from tokenizers import Tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FILES = {
    "shakespeare": "text/public_domain/tinyshakespeare.txt",
    "sherlock": "text/public_domain/sherlock_holmes_adventures_pg1661.txt",
}


def best(fn, reps):
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LOOPUS_DATA_DIR", str(REPO.parent / "shared/data")))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    print(f"{'tokenizer':8} {'file':12} {'mode':6} {'MB':>6} {'wall MB/s':>10} {'cpu MB/s':>9}")
    for name in ["qwen3", "llama3"]:
        w0, c0 = time.perf_counter(), time.process_time()
        tok = Tokenizer.from_file(str(data / f"tokenizers/{name}/tokenizer.json"))
        print(f"{name}: load {1000 * (time.perf_counter() - w0):.0f} ms wall, {1000 * (time.process_time() - c0):.0f} ms cpu")
        for short, rel in FILES.items():
            text = (data / rel).read_bytes().decode("utf-8", errors="replace")
            mb = len(text.encode("utf-8")) / 1e6
            lines = text.splitlines(keepends=True)
            modes = {
                "whole": lambda: tok.encode(text, add_special_tokens=False),
                "lines": lambda: [tok.encode(l, add_special_tokens=False) for l in lines],
                "batch": lambda: tok.encode_batch(lines, add_special_tokens=False),
            }
            for mode, fn in modes.items():
                wall, cpu = best(fn, args.reps)
                print(f"{name:8} {short:12} {mode:6} {mb:6.2f} {mb / wall:10.2f} {mb / cpu:9.2f}", flush=True)


if __name__ == "__main__":
    main()
