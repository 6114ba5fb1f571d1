#!/usr/bin/env python3
# Writes tests/golden/loopus/*.json: logits of tiny LoopUS checkpoints run by the official LoopUS code.
# SPDX-License-Identifier: MIT
"""Golden outputs of the OFFICIAL LoopUS implementation (github.com/Thrillcrazyer/LoopUS,
models/modeling_lds.py: LDSForCausalLM) for tiny random-weight checkpoints
written by `loopus synth --loopus`, so tests/model/test_reference_parity.cpp can
check loopus against it without Python.

The official code is NOT part of this repository: check it out elsewhere and
pass --official DIR (default $LOOPUS_OFFICIAL_DIR; one of the two is required).
Runtime patches, none of which changes a computed value (see docs/loopus_parity.md):
  * LDSConfig() with no base_config_dict downloads Qwen/Qwen3-0.6B's config
    (transformers calls it when serialising a config, to diff against the
    defaults). We are offline, so that one lookup returns a default
    transformers.Qwen3Config instead.
  * The checkpoint folder has no tokenizer: from_pretrained gets a stub
    tokenizer (eos/pad None, so generation never stops early).
  * Attention runs "eager" (set on the shared base config after loading);
    the official default is "sdpa". The difference is recorded.
  * Every no-cache forward passes attention_mask = ones: with eager attention
    and no mask the official blocks would attend bidirectionally (HF eager
    attention adds no causal mask by itself).
Halting is disabled by setting the model's q_threshold attribute to 2.0
(sigmoid never exceeds it), so exactly N = model.N loops run.

Records per case:
  nocache_fixed      forward(ids, mask, use_cache=False) at N = 1, 2, 8: all logits
  nocache_threshold  same with threshold halting (N = 8): depth of the call + logits
  generate_fixed     official generate() (cached, greedy, 8 new tokens), halting off:
                     ids, last-position logits of each forward call, depths
  generate_threshold the same with threshold halting: the threshold is chosen so
                     that calls exit at several different depths and a later token
                     goes deeper than an earlier one (exercises the dropped-cache rule)
  save_pretrained    the official save_pretrained of the loaded model vs our file
Logits are base64 of little-endian float32, row-major.

Usage:
  python3 tests/reference/gen_loopus_golden.py [--loopus PATH] [--official DIR] [--out tests/golden/loopus]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_common as gc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "qwen3_loopus": {"arch": "qwen3", "dim": 64, "layers": 4, "heads": 4, "kv-heads": 2, "head-dim": 32, "ff": 160,
                     "vocab": 256, "rope-theta": 1000000.0, "rms-eps": 1e-6, "dtype": "f32", "seed": 21,
                     "loopus": True, "encoder-layers": "0..0", "decoder-layers": "3..3", "loops": 8},
    "llama_loopus": {"arch": "llama", "dim": 64, "layers": 5, "heads": 4, "kv-heads": 2, "ff": 160, "vocab": 256,
                     "rope-theta": 500000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 22,
                     "loopus": True, "encoder-layers": "0..0", "decoder-layers": "4..4", "loops": 8},
}
N_LOOPS_FIXED = [1, 2, 8]
N_MAX = 8
PROMPT_LEN = 8
NEW_TOKENS = 8
MIN_MARGIN = 2e-3  # |q - threshold| for every q the halting rule reads: robust to f32 noise
DISABLED = 2.0     # q_threshold that sigmoid can never exceed


class StubTokenizer:
    eos_token_id = None
    pad_token_id = None


def import_official(official: Path):
    sys.path.insert(0, str(official))
    import transformers

    import models.configuration_lds as cfg_mod

    class OfflineAutoConfig:
        """LDSConfig's default base model lookup, answered offline."""

        @staticmethod
        def from_pretrained(name, *a, **k):
            if name != "Qwen/Qwen3-0.6B":
                raise RuntimeError(f"unexpected hub lookup {name!r}")
            return transformers.Qwen3Config()

    cfg_mod.AutoConfig = OfflineAutoConfig
    from models import LDSForCausalLM

    return LDSForCausalLM


def git_info(official: Path) -> dict:
    def git(*args):
        r = subprocess.run(["git", "-C", str(official), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    info = {"repo": "https://github.com/Thrillcrazyer/LoopUS", "commit": git("rev-parse", "HEAD"),
            "commit_date": git("log", "-1", "--format=%cI")}
    stamp = official / "OFFICIAL_COMMIT"  # written when the tree was exported without .git
    if not info["commit"] and stamp.exists():
        parts = stamp.read_text().split()
        info["commit"], info["commit_date"] = parts[0], parts[1] if len(parts) > 1 else None
    return info


class Recorder:
    """Hooks on the official model that read (never change) what it computes:
    the q value of each halting check, the loop count of each forward call,
    the last-position logits of each forward call."""

    def __init__(self, m):
        self.m = m
        self.calls = []  # per forward: {"q": [...], "depth": int, "logits": tensor[V]}
        m.q_head.register_forward_hook(self._on_q)
        orig_stats = m._update_runtime_stats
        orig_forward = m.forward

        def stats(**kw):
            self.calls[-1]["depth"] = int(kw["reasoning_steps"])
            return orig_stats(**kw)

        def forward(*a, **k):
            self.calls.append({"q": [], "depth": None})
            out = orig_forward(*a, **k)
            self.calls[-1]["logits"] = out.logits[0, -1].detach().float().clone()
            return out

        m._update_runtime_stats = stats
        m.forward = forward

    def _on_q(self, module, inputs, output):
        self.calls[-1]["q"].append(float(torch.sigmoid(output.detach().float()).reshape(-1)[0]))

    def reset(self):
        self.calls = []


def configure(m, n_loops: int, threshold: float):
    m.N = n_loops
    m.q_threshold = threshold
    m.halting_strategy = "threshold"
    m.q_eval_interval = 1


def nocache(m, rec, ids, n_loops, threshold=DISABLED):
    configure(m, n_loops, threshold)
    rec.reset()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = m(x, attention_mask=torch.ones_like(x), use_cache=False).logits[0].float().numpy()
    return logits, rec.calls[0]


def generate(m, rec, prompt, n_loops, threshold=DISABLED):
    configure(m, n_loops, threshold)
    rec.reset()
    out = m.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)
    ids = [int(t) for t in out[0, len(prompt):]]
    calls = rec.calls
    assert len(calls) == NEW_TOKENS
    return ids, calls


def margin(calls, threshold):
    return min(abs(q - threshold) for c in calls for q in c["q"])


def goes_deeper(depths):
    """Some call runs more loops than an earlier one: it reaches depths whose
    caches the official code dropped after that earlier exit."""
    return any(depths[t] > min(depths[:t]) for t in range(1, len(depths)))


def pick_generate_threshold(m, rec, prompt):
    best = None
    for thr in np.round(np.arange(0.05, 0.951, 0.01), 4):
        ids, calls = generate(m, rec, prompt, N_MAX, float(thr))
        depths = [c["depth"] for c in calls]
        mg = margin(calls, float(thr))
        if mg < MIN_MARGIN or not goes_deeper(depths):
            continue
        key = (len(set(depths)), mg)
        if best is None or key > best[0]:
            best = (key, float(thr))
    if best is None:
        raise RuntimeError("no q threshold gives varied exit depths with a safe margin; change the seed")
    return best[1]


def pick_nocache_threshold(q_traj):
    """A threshold that halts after loop k (2 <= k < N) with the widest margin."""
    best = None
    for k in range(1, len(q_traj) - 1):
        lo, hi = max(q_traj[:k]), q_traj[k]
        if hi - lo > 2 * MIN_MARGIN and (best is None or hi - lo > best[0]):
            best = (hi - lo, (lo + hi) / 2)
    if best is not None:
        return float(best[1])
    if q_traj[0] > 0.1:  # q never rises: halt after the first loop instead
        return float(q_traj[0] - 0.05)
    raise RuntimeError(f"no usable no-cache q threshold for q trajectory {q_traj}; change the seed")


def save_pretrained_summary(m, ours_dir: Path, tmp: Path) -> dict:
    from safetensors.numpy import load_file

    out_dir = tmp / "official_saved"
    m.tokenizer = None  # the stub has nothing to save
    m.save_pretrained(str(out_dir))
    cfg_off = json.loads((out_dir / "config.json").read_text())
    cfg_ours = json.loads((ours_dir / "config.json").read_text())
    a = load_file(str(out_dir / "model.safetensors"))
    b = load_file(str(ours_dir / "model.safetensors"))
    tensors = []
    for name in sorted(set(a) | set(b)):
        t = {"name": name}
        if name in a:
            t.update(shape=list(a[name].shape), dtype=str(a[name].dtype))
        t["in_official"], t["in_ours"] = name in a, name in b
        if name in a and name in b:
            t["bit_identical"] = a[name].dtype == b[name].dtype and a[name].shape == b[name].shape and \
                a[name].tobytes() == b[name].tobytes()
        tensors.append(t)
    loop_keys = ["N", "q_threshold", "q_eval_interval", "halting_strategy", "convergence_epsilon",
                 "encoder_layer_indices", "reasoning_layer_indices", "decoder_layer_indices", "hidden_size",
                 "vocab_size", "model_type"]
    return {
        "config_keys_official": sorted(cfg_off),
        "config_keys_ours": sorted(cfg_ours),
        "config_loop_keys_missing_in_official_save": [k for k in loop_keys if k not in cfg_off],
        "config_loop_values_differ": {k: [cfg_off[k], cfg_ours.get(k)] for k in loop_keys
                                      if k in cfg_off and cfg_off[k] != cfg_ours.get(k)},
        "base_config_dict_keys_official": sorted(cfg_off.get("base_config_dict", {})),
        "tensors": tensors,
        "n_tensors_official": len(a),
        "n_tensors_ours": len(b),
        "all_bit_identical": all(t.get("bit_identical", False) for t in tensors),
    }


def run_case(cli: str, LDS, name: str, params: dict) -> dict:
    vocab = params["vocab"]
    ids = gc.input_ids(vocab)
    prompt = ids[:PROMPT_LEN]
    with tempfile.TemporaryDirectory(prefix=f"golden_{name}_") as tmp:
        tmp = Path(tmp)
        ours = tmp / "ckpt"
        gc.run_synth(cli, params, str(ours))
        # Official loader: LDSConfig.from_pretrained + LDSForCausalLM(config) +
        # strict load_state_dict of model.safetensors.
        m = LDS.from_pretrained(str(ours), tokenizer=StubTokenizer())
        m.eval()
        assert m.reasoning.gate.A_log.dtype == torch.float32 and m.q_head[1].weight.dtype == torch.float32
        # sdpa (official default) vs eager on the same input, for the record
        x = torch.tensor([ids])
        configure(m, N_MAX, DISABLED)
        with torch.no_grad():
            l_sdpa = m(x, attention_mask=torch.ones_like(x)).logits
            l_sdpa_nomask = m(x).logits
        m._set_attn_implementation("eager")
        assert m.encoder.layers[0].self_attn.config._attn_implementation == "eager"
        with torch.no_grad():
            l_eager = m(x, attention_mask=torch.ones_like(x)).logits
            l_eager_nomask = m(x).logits
        rec = Recorder(m)

        g = {
            "format": "loopus-golden-lds-v1",
            "generator": "tests/reference/gen_loopus_golden.py",
            "reference": "official LoopUS LDSForCausalLM (models/modeling_lds.py), float32, eager attention, batch 1",
            "synth": dict(params),
            "synth_command": "loopus " + " ".join(gc.synth_argv(params)) + " --out DIR",
            "input_ids": ids,
            "input_ids_rule": gc.ids_rule(),
            "logits_encoding": "base64 of little-endian float32, row-major",
            "tolerance_max_abs": 1e-4,
            "halting_disabled_by": f"model.q_threshold = {DISABLED} (sigmoid(q) <= 1 never exceeds it), model.N = loops",
            "attention": {
                "used": "eager, attention_mask = ones(1, T)",
                "max_abs_sdpa_vs_eager": float((l_sdpa - l_eager).abs().max()),
                "max_abs_sdpa_without_mask_vs_with": float((l_sdpa_nomask - l_sdpa).abs().max()),
                "max_abs_eager_without_mask_vs_with": float((l_eager_nomask - l_eager).abs().max()),
            },
        }

        # ---- no cache, fixed N ----
        g["nocache_fixed"] = []
        q_traj = None
        for n in N_LOOPS_FIXED:
            logits, call = nocache(m, rec, ids, n)
            assert call["depth"] == n
            if n == N_MAX:
                q_traj = call["q"]
            g["nocache_fixed"].append({"loops": n, "depth": call["depth"], "q_last_token": call["q"],
                                       "logits_shape": list(logits.shape), "logits_f32le_b64": gc.f32_b64(logits)})

        # ---- no cache, threshold halting (the whole call takes the last token's depth) ----
        thr = pick_nocache_threshold(q_traj)
        logits, call = nocache(m, rec, ids, N_MAX, thr)
        g["nocache_threshold"] = {"max_loops": N_MAX, "q_threshold": thr, "depth": call["depth"], "q": call["q"],
                                  "q_margin": margin([call], thr), "logits_shape": list(logits.shape),
                                  "logits_f32le_b64": gc.f32_b64(logits)}

        # ---- official generate(), cached, greedy, halting off ----
        gen_ids, calls = generate(m, rec, prompt, N_MAX)
        steps = np.stack([c["logits"].numpy() for c in calls])
        # With fixed N the per-depth caches must reproduce the no-cache forward exactly.
        full = prompt + gen_ids[:-1]
        ref, _ = nocache(m, rec, full, N_MAX)
        cache_vs_nocache = float(np.abs(ref[PROMPT_LEN - 1:] - steps).max())
        sorted_l = np.sort(steps, axis=-1)
        g["generate_fixed"] = {
            "max_loops": N_MAX, "prompt_ids": prompt, "new_ids": gen_ids,
            "depths": [c["depth"] for c in calls],
            "step_logits_shape": list(steps.shape), "step_logits_f32le_b64": gc.f32_b64(steps),
            "top2_gap_min": float((sorted_l[:, -1] - sorted_l[:, -2]).min()),
            "official_cached_vs_nocache_max_abs": cache_vs_nocache,
            "call": f"model.generate(prompt, max_new_tokens={NEW_TOKENS}, do_sample=False)",
        }

        # ---- official generate() with threshold halting (dropped deeper caches) ----
        thr = pick_generate_threshold(m, rec, prompt)
        gen_ids, calls = generate(m, rec, prompt, N_MAX, thr)
        steps = np.stack([c["logits"].numpy() for c in calls])
        sorted_l = np.sort(steps, axis=-1)
        g["generate_threshold"] = {
            "max_loops": N_MAX, "q_threshold": thr, "prompt_ids": prompt, "new_ids": gen_ids,
            "depths": [c["depth"] for c in calls], "q_per_call": [c["q"] for c in calls],
            "q_margin": margin(calls, thr),
            "step_logits_shape": list(steps.shape), "step_logits_f32le_b64": gc.f32_b64(steps),
            "top2_gap_min": float((sorted_l[:, -1] - sorted_l[:, -2]).min()),
            "call": f"model.q_threshold = {thr}; model.generate(prompt, max_new_tokens={NEW_TOKENS}, do_sample=False)",
        }

        g["save_pretrained"] = save_pretrained_summary(m, ours, tmp)
        g["weights_fingerprint"] = gc.fingerprint(str(ours / "model.safetensors"))
        g["weights_fingerprint_rtol"] = gc.FINGERPRINT_RTOL
    return g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loopus", default=os.environ.get("LOOPUS_CLI", str(REPO / "build/bin/loopus")))
    ap.add_argument("--official", default=os.environ.get("LOOPUS_OFFICIAL_DIR"),
                    required=not os.environ.get("LOOPUS_OFFICIAL_DIR"),
                    help="a checkout of the official LoopUS code (default $LOOPUS_OFFICIAL_DIR)")
    ap.add_argument("--out", default=str(REPO / "tests/golden/loopus"))
    ap.add_argument("--only", nargs="*", help="case names")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead (and the sweep runs ~100 generations)
    torch.manual_seed(0)  # the official constructor random-inits before load_state_dict overwrites it
    official = Path(a.official)
    LDS = import_official(official)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, params in CASES.items():
        if a.only and name not in a.only:
            continue
        g = run_case(a.loopus, LDS, name, params)
        g["official"] = git_info(official)
        g["versions"] = gc.versions()
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(g, indent=1) + "\n")
        gt = g["generate_threshold"]
        print(f"{path}: {path.stat().st_size} bytes; nocache thr {g['nocache_threshold']['q_threshold']:.4f} "
              f"depth {g['nocache_threshold']['depth']}; generate thr {gt['q_threshold']} depths {gt['depths']} "
              f"margin {gt['q_margin']:.4f}; cached-vs-nocache "
              f"{g['generate_fixed']['official_cached_vs_nocache_max_abs']:.2e}; "
              f"bit-identical save {g['save_pretrained']['all_bit_identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
