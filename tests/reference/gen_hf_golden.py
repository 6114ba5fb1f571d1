#!/usr/bin/env python3
# Writes tests/golden/hf/*.json: logits of tiny random-weight models run by Hugging Face transformers.
# SPDX-License-Identifier: MIT
"""Golden logits from the reference implementation (transformers), so the C++
tests (tests/model/test_reference_parity.cpp) can check loopus without Python.

For each case: `loopus synth` writes a random-weight HF folder (config.json +
model.safetensors) into a temp dir; transformers loads it
(AutoModelForCausalLM, float32, eager attention; every tensor must come from
the file) and runs a fixed id sequence through one forward pass (no cache);
the logits of every position over the full vocabulary are stored.

JSON encoding of the logits: "logits_f32le_b64" is the base64 of the
little-endian IEEE-754 float32 values, row-major [n_tokens, n_vocab]: exact,
and about 22 KB for 16 x 256. "weights_fingerprint" has per-tensor float64
sums / sums of squares of the synth output, so a test can tell a changed
generator from a wrong forward pass.

Usage:
  python3 tests/reference/gen_hf_golden.py [--loopus PATH] [--out tests/golden/hf] [--only NAME ...]
The loopus binary defaults to $LOOPUS_CLI, else build/bin/loopus.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_common as gc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# name -> `loopus synth` flags (without "--"; True = bare flag).
CASES = {
    "llama_tiny": {"arch": "llama", "dim": 64, "layers": 3, "heads": 4, "kv-heads": 2, "ff": 160, "vocab": 256,
                   "rope-theta": 500000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 11},
    "llama_tiny_tied": {"arch": "llama", "dim": 64, "layers": 2, "heads": 4, "kv-heads": 4, "ff": 96, "vocab": 256,
                        "rope-theta": 10000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 12, "tied": True},
    "qwen3_tiny": {"arch": "qwen3", "dim": 64, "layers": 3, "heads": 4, "kv-heads": 2, "head-dim": 32, "ff": 160,
                   "vocab": 256, "rope-theta": 1000000.0, "rms-eps": 1e-6, "dtype": "f32", "seed": 7},
}


def run_case(cli: str, name: str, params: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"golden_{name}_") as tmp:
        model_dir = Path(tmp) / "model"
        gc.run_synth(cli, params, str(model_dir))
        cfg = AutoConfig.from_pretrained(model_dir)
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        model.eval()
        # Every parameter must come from the file: a silently random-initialised
        # tensor would make the golden meaningless.
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        assert not bad, (name, bad)
        # transformers 5 keeps RoPE settings in rope_parameters; make sure the
        # synth's rope_theta was read (a silent default would hide RoPE bugs).
        rp = getattr(cfg, "rope_parameters", None) or {}
        theta = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
        assert abs(float(theta) - params["rope-theta"]) < 1e-3 * params["rope-theta"], (name, theta)
        assert model.config._attn_implementation == "eager"
        if params.get("tied"):
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        ids = gc.input_ids(params["vocab"])
        with torch.no_grad():
            logits = model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
        fp = gc.fingerprint(str(model_dir / "model.safetensors"))
    assert logits.shape == (gc.N_IDS, params["vocab"])
    return {
        "format": "loopus-golden-hf-v1",
        "generator": "tests/reference/gen_hf_golden.py",
        "reference": f"transformers {type(model).__name__}, float32, eager attention, one forward, use_cache=False",
        "synth": dict(params),
        "synth_command": "loopus " + " ".join(gc.synth_argv(params)) + " --out DIR",
        "input_ids": ids,
        "input_ids_rule": gc.ids_rule(),
        "logits_shape": [gc.N_IDS, params["vocab"]],
        "logits_encoding": "base64 of little-endian float32, row-major [n_tokens, n_vocab]",
        "logits_f32le_b64": gc.f32_b64(logits),
        "logits_stats": {"max_abs": float(np.abs(logits).max()), "std": float(logits.std()),
                         "argmax": [int(i) for i in logits.argmax(-1)]},
        "tolerance_max_abs": 1e-4,
        "weights_fingerprint": fp,
        "weights_fingerprint_rtol": gc.FINGERPRINT_RTOL,
        "versions": gc.versions(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loopus", default=os.environ.get("LOOPUS_CLI", str(REPO / "build/bin/loopus")))
    ap.add_argument("--out", default=str(REPO / "tests/golden/hf"))
    ap.add_argument("--only", nargs="*", help="case names")
    a = ap.parse_args()
    torch.manual_seed(0)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, params in CASES.items():
        if a.only and name not in a.only:
            continue
        g = run_case(a.loopus, name, params)
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(g, indent=1) + "\n")
        print(f"{path}: {path.stat().st_size} bytes, max|logit| {g['logits_stats']['max_abs']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
