# Helpers shared by the golden-file generators (gen_hf_golden.py, gen_loopus_golden.py).
# SPDX-License-Identifier: MIT
"""Small pieces both generators need: the `loopus synth` command line, the
f32 base64 encoding of logits, the weights fingerprint and version records."""
import base64
import platform
import subprocess

import numpy as np

N_IDS = 16
IDS_SEED = 2026
# Fingerprint sums are compared with this relative tolerance on the C++ side
# (summation order differs: numpy is pairwise, the test sums sequentially).
FINGERPRINT_RTOL = 1e-9


def synth_argv(params: dict) -> list:
    """CLI arguments of `loopus synth` for a parameter dict (flag names without
    the leading "--"; True means a bare flag)."""
    argv = ["synth"]
    for k, v in params.items():
        if v is True:
            argv.append(f"--{k}")
        elif v is False or v is None:
            continue
        else:
            argv += [f"--{k}", repr(v) if isinstance(v, float) else str(v)]
    return argv


def run_synth(cli: str, params: dict, out: str) -> None:
    r = subprocess.run([cli] + synth_argv(params) + ["--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"loopus synth failed ({r.returncode}): {r.stderr.strip()}")


def f32_b64(a) -> str:
    """base64 of little-endian float32, row-major."""
    return base64.b64encode(np.ascontiguousarray(np.asarray(a), dtype="<f4").tobytes()).decode("ascii")


def input_ids(vocab: int, n: int = N_IDS) -> list:
    return [int(x) for x in np.random.default_rng(IDS_SEED).integers(0, vocab, n)]


def ids_rule(n: int = N_IDS) -> str:
    return f"numpy.random.default_rng({IDS_SEED}).integers(0, vocab, {n}); no BOS"


def fingerprint(safetensors_path: str) -> dict:
    """Per tensor: dtype, shape, float64 sum and sum of squares of the values.
    Lets the C++ test tell 'synth output changed' (regenerate the goldens)
    from 'forward pass disagrees'."""
    from safetensors.numpy import load_file  # numpy view: no torch dtype games

    out = {}
    for name, t in sorted(load_file(safetensors_path).items()):
        v = t.astype(np.float64)
        out[name] = {"dtype": str(t.dtype), "shape": list(t.shape), "sum": float(v.sum()),
                     "sumsq": float((v * v).sum())}
    return out


def versions(extra: dict | None = None) -> dict:
    import torch
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__, "numpy": np.__version__}
    try:
        import safetensors

        v["safetensors"] = safetensors.__version__
    except ImportError:
        pass
    v.update(extra or {})
    return v
