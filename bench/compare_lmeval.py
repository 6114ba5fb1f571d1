#!/usr/bin/env python3
# Scoring speed: `loopus eval` against lm-evaluation-harness's Hugging Face backend.
# SPDX-License-Identifier: MIT
"""Scored requests per second of loopus and lm-eval on the same requests, model and threads.

Both score the same documents of each task (the first --limit of the file, converted and fed
to lm-eval's own task configs exactly as tests/reference/gen_lmeval_golden.py does), with the
same model (lm-eval: the GGUF through transformers, dequantized to f32; loopus: the same GGUF,
dequantized to f32 on load) and the same number of CPU threads. Timed:
  lm-eval: HFLM.loglikelihood(the task's instances), tokenization included, at each --lmeval-batch;
  loopus:  `loopus eval --json` reports `seconds` = tokenization + scoring of the same requests.
Model loading is not timed on either side. Runs are interleaved (lm-eval, loopus, lm-eval, ...)
--reps times; the table shows medians. Checks the two score the same number of requests.

Needs a venv with lm-eval 0.4.13, transformers, torch, accelerate, gguf (see
tests/reference/gen_lmeval_golden.py) and a built loopus CLI:
  python bench/compare_lmeval.py --model SmolLM2-135M-Instruct --threads 2 --limit 100 --json out.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/reference"))
import gen_lmeval_golden as G  # noqa: E402  (the task conversion and model loading)

MC_TASKS = "arc_easy,arc_challenge,hellaswag,piqa,openbookqa,winogrande"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(G.MODELS), default="SmolLM2-135M-Instruct")
    ap.add_argument("--tasks", default=MC_TASKS)
    ap.add_argument("--limit", type=int, default=100, help="documents per task (the first N of the file)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lmeval-batch", default="1,16", help="HFLM batch sizes to time")
    ap.add_argument("--loopus", default=str(REPO / "build/bin/loopus"))
    ap.add_argument("--json", default=None, help="write the raw timings here")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    data = G.data_dir()
    work = Path(tempfile.mkdtemp(prefix="loopus_lmeval_speed_"))
    model, tok, model_file, tf_version = G.load_model(args.model, data)
    batches = [int(b) for b in args.lmeval_batch.split(",")]
    lms = {b: HFLM(pretrained=model, tokenizer=tok, batch_size=b, device="cpu", dtype="float32") for b in batches}
    task_root = Path(lm_eval.__file__).parent / "tasks"

    def lmeval_instances(name):
        rel, yaml_rel, split = G.TASKS[name]
        docs, _ = G.CONVERTERS[name](data / rel)
        path = work / f"{name}_{split}.jsonl"
        G.write_jsonl(path, docs)
        t = G.lm_eval_task(task_root / yaml_rel, split, {split: path}, name)
        t.build_all_requests(limit=args.limit, rank=0, world_size=1)
        return t.instances

    def time_lmeval(lm, inst):
        t0 = time.perf_counter()
        lm.loglikelihood(inst, disable_tqdm=True)
        return time.perf_counter() - t0

    def time_loopus(name):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run([args.loopus, "eval", "-m", str(model_file), "--task", name, "--limit", str(args.limit),
                              "-t", str(args.threads), "--json"], check=True, capture_output=True, text=True, env=env)
        row = json.loads(out.stdout)[0]
        return row["seconds"], row["requests"]

    results = []
    for name in args.tasks.split(","):
        inst = lmeval_instances(name)
        t_lm = {b: [] for b in batches}
        t_lo = []
        n_lo = None
        for _ in range(args.reps):
            for b in batches:
                t_lm[b].append(time_lmeval(lms[b], inst))
                s, n_lo = time_loopus(name)
                t_lo.append(s)
        if n_lo != len(inst):
            raise SystemExit(f"{name}: loopus scored {n_lo} requests, lm-eval {len(inst)}")
        r = {"task": name, "requests": len(inst), "loopus_s": t_lo,
             "lmeval_s": {str(b): v for b, v in t_lm.items()}}
        results.append(r)
        lo = statistics.median(t_lo)
        cells = [f"{name:14s} {len(inst):5d} req  loopus {len(inst) / lo:7.1f} req/s"]
        for b in batches:
            m = statistics.median(t_lm[b])
            cells.append(f"lm-eval b{b} {len(inst) / m:6.1f} req/s ({m / lo:4.1f}x)")
        print("  ".join(cells), flush=True)

    meta = {"model": args.model, "model_file": model_file.name, "threads": args.threads, "limit": args.limit,
            "reps": args.reps, "lm_eval": lm_eval.__version__, "torch": torch.__version__,
            "transformers": tf_version, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
