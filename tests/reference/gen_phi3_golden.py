#!/usr/bin/env python3
# Writes tests/golden/phi3/*.{json,gguf}: tiny random Phi-3 models run by Hugging Face transformers.
# SPDX-License-Identifier: MIT
"""Golden logits for the phi3 architecture (Phi-3, Phi-4), so the C++ test
(tests/model/test_phi3.cpp) checks loopus without Python.

For each case: `loopus synth --arch phi3` writes a random-weight HF folder
(config.json + model.safetensors with the fused qkv_proj / gate_up_proj
tensors) into a temp dir; transformers loads it (Phi3ForCausalLM, float32,
eager attention; every tensor must come from the file) and runs fixed ids
through one forward pass (no cache). The logits of every position are stored
as in gen_hf_golden.py (base64 of little-endian float32, [n_tokens, n_vocab]).

The same weights are also written as GGUF by the `gguf` package's GGUFWriter,
independently of loopus, with the tensor names and metadata keys llama.cpp's
convert_hf_to_gguf.py uses for phi3 (attn_qkv, ffn_up holding gate then up,
rope_factors_long/short, phi3.rope.scaling.*). That file is committed beside
the JSON (tiny models: ~100 KB) so the test reads a GGUF loopus did not write.

Cases with `rope-orig-ctx` use longrope scaling; their golden also holds the
logits of the first `short_len` ids, a sequence short enough for transformers
to pick the short factors (the full sequence gets the long ones).

Usage:
  python3 tests/reference/gen_phi3_golden.py [--loopus PATH] [--out tests/golden/phi3] [--only NAME ...]
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
from safetensors.numpy import load_file
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_common as gc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# name -> `loopus synth` flags (without "--"; True = bare flag). Small enough
# that each GGUF stays near 100 KB in f32.
CASES = {
    # GQA, untied head, full rotary, no scaling (the Phi-4 14B / Phi-3-mini-4k shape of config).
    "phi3_tiny": {"arch": "phi3", "dim": 32, "layers": 3, "heads": 4, "kv-heads": 2, "ff": 64, "vocab": 128,
                  "rope-theta": 250000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 31},
    # Tied embeddings, partial_rotary_factor 0.75 (as Phi-4-mini), a sliding window wider than the ids.
    "phi3_tiny_partial_tied": {"arch": "phi3", "dim": 32, "layers": 2, "heads": 2, "kv-heads": 2, "ff": 64,
                               "vocab": 128, "rope-theta": 10000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 32,
                               "tied": True, "partial-rotary": 0.75, "sliding-window": 64},
    # longrope: original context 8 extended to 64 (attention factor sqrt(1 + ln 8 / ln 8) = sqrt 2).
    "phi3_tiny_longrope": {"arch": "phi3", "dim": 32, "layers": 2, "heads": 2, "kv-heads": 1, "ff": 64,
                           "vocab": 128, "ctx": 64, "rope-orig-ctx": 8, "rope-theta": 10000.0, "rms-eps": 1e-6,
                           "dtype": "f32", "seed": 33},
}


def write_gguf(hf_dir: Path, cfg: dict, path: Path) -> None:
    """The HF folder as llama.cpp's converter would write it (phi3 names, f32, no tokenizer)."""
    import gguf

    t = load_file(str(hf_dir / "model.safetensors"))
    d, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
    prf = cfg.get("partial_rotary_factor", 1.0)
    rope_dims = int(prf * d) // n_head
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_name(path.stem)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_rope_scaling_orig_ctx_len(cfg["original_max_position_embeddings"])
    w.add_embedding_length(d)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(rope_dims)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_sliding_window(cfg.get("sliding_window") or 0)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    rs = cfg.get("rope_scaling")
    if rs:
        scale = cfg["max_position_embeddings"] / cfg["original_max_position_embeddings"]
        attn = float(np.sqrt(1 + np.log(scale) / np.log(cfg["original_max_position_embeddings"])))
        w.add_rope_scaling_attn_factors(attn)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight", "self_attn.qkv_proj.weight": "attn_qkv.weight",
                 "self_attn.o_proj.weight": "attn_output.weight",
                 "post_attention_layernorm.weight": "ffn_norm.weight",
                 "mlp.gate_up_proj.weight": "ffn_up.weight",  # llama.cpp keeps it fused: gate rows, then up
                 "mlp.down_proj.weight": "ffn_down.weight"}
    for name, arr in t.items():
        if name in names:
            gname = names[name]
        else:
            parts = name.split(".")
            assert parts[:2] == ["model", "layers"], name
            gname = f"blk.{parts[2]}." + per_layer[".".join(parts[3:])]
        w.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
    if rs:
        w.add_tensor("rope_factors_long.weight", np.asarray(rs["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rs["short_factor"], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run_case(cli: str, name: str, params: dict, out_dir: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"golden_{name}_") as tmp:
        model_dir = Path(tmp) / "model"
        gc.run_synth(cli, params, str(model_dir))
        raw_cfg = json.loads((model_dir / "config.json").read_text())
        cfg = AutoConfig.from_pretrained(model_dir)
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        model.eval()
        assert type(model).__name__ == "Phi3ForCausalLM", type(model).__name__
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        assert not bad, (name, bad)
        assert model.config._attn_implementation == "eager"
        # The RoPE settings must have been read, not defaulted.
        rp = getattr(cfg, "rope_parameters", None) or {}
        theta = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
        assert abs(float(theta) - params["rope-theta"]) < 1e-3 * params["rope-theta"], (name, theta)
        prf = rp.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))
        assert abs(float(prf) - params.get("partial-rotary", 1.0)) < 1e-6, (name, prf)
        rope_type = rp.get("rope_type") or (getattr(cfg, "rope_scaling", None) or {}).get("rope_type") or \
            (getattr(cfg, "rope_scaling", None) or {}).get("type") or "default"
        assert (rope_type == "longrope") == ("rope-orig-ctx" in params), (name, rope_type)
        if params.get("tied"):
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        ids = gc.input_ids(params["vocab"])
        with torch.no_grad():
            logits = model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
        assert logits.shape == (gc.N_IDS, params["vocab"])
        extra = {}
        if "rope-orig-ctx" in params:
            short_len = params["rope-orig-ctx"]
            with torch.no_grad():
                short = model(torch.tensor([ids[:short_len]]), use_cache=False).logits[0].float().numpy()
            # The short sequence must not equal the prefix of the long one: the factors differ.
            assert np.abs(short - logits[:short_len]).max() > 1e-3
            extra = {"short_len": short_len, "short_logits_shape": [short_len, params["vocab"]],
                     "short_logits_f32le_b64": gc.f32_b64(short),
                     "attention_factor": float(model.model.rotary_emb.attention_scaling)}
        fp = gc.fingerprint(str(model_dir / "model.safetensors"))
        gguf_path = out_dir / f"{name}.gguf"
        write_gguf(model_dir, raw_cfg, gguf_path)
    from importlib.metadata import version

    return {
        "format": "loopus-golden-phi3-v1",
        "generator": "tests/reference/gen_phi3_golden.py",
        "reference": f"transformers {type(model).__name__}, float32, eager attention, one forward, use_cache=False",
        "synth": dict(params),
        "synth_command": "loopus " + " ".join(gc.synth_argv(params)) + " --out DIR",
        "hf_config": raw_cfg,
        "gguf_file": gguf_path.name,
        "gguf_writer": "gguf-py GGUFWriter, llama.cpp phi3 tensor names and keys, f32",
        "input_ids": ids,
        "input_ids_rule": gc.ids_rule(),
        "logits_shape": [gc.N_IDS, params["vocab"]],
        "logits_encoding": "base64 of little-endian float32, row-major [n_tokens, n_vocab]",
        "logits_f32le_b64": gc.f32_b64(logits),
        **extra,
        "logits_stats": {"max_abs": float(np.abs(logits).max()), "std": float(logits.std()),
                         "argmax": [int(i) for i in logits.argmax(-1)]},
        "tolerance_max_abs": 1e-4,
        "weights_fingerprint": fp,
        "weights_fingerprint_rtol": gc.FINGERPRINT_RTOL,
        "versions": gc.versions({"gguf": version("gguf")}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loopus", default=os.environ.get("LOOPUS_CLI", str(REPO / "build/bin/loopus")))
    ap.add_argument("--out", default=str(REPO / "tests/golden/phi3"))
    ap.add_argument("--only", nargs="*", help="case names")
    a = ap.parse_args()
    torch.manual_seed(0)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, params in CASES.items():
        if a.only and name not in a.only:
            continue
        g = run_case(a.loopus, name, params, out_dir)
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(g, indent=1) + "\n")
        print(f"{path}: {path.stat().st_size} bytes, {out_dir / g['gguf_file']}: "
              f"{(out_dir / g['gguf_file']).stat().st_size} bytes, max|logit| {g['logits_stats']['max_abs']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
