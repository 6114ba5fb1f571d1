#!/usr/bin/env python3
# Writes random-weight GGUF models with the shapes of stories15M, stories110M (llama) and Qwen3-0.6B (qwen3).
# SPDX-License-Identifier: MIT
"""Random-weight GGUF models for speed baselines and loader tests.

The files are big (up to 2.4 GB), so they are written OUTSIDE the repo and are
never committed; CI does not run this script.  They exist so that loopus and
llama.cpp can be timed on the same realistically sized shapes without needing
the real checkpoints.

Models (shape, tokenizer):
  stories15m   llama arch, dim 288, 6 layers, 6 heads, 6 kv heads, ff 768,
               ctx 256, untied output.weight; the same Llama-2 SentencePiece
               vocabulary as stories110m
  stories110m  llama arch, dim 768, 12 layers, 12 heads, 12 kv heads, ff 2048,
               ctx 2048, untied output.weight; Llama-2 SentencePiece vocabulary
               (32000 tokens, scores, types) copied from
               shared/data/tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf
  qwen3-0.6b   qwen3 arch, hidden 1024, 28 layers, 16 heads, 8 kv heads,
               head_dim 128, ff 3072, vocab 151936, rope theta 1e6, rms eps 1e-6,
               q_norm/k_norm, tied embeddings (no output.weight); byte-level BPE
               vocabulary (pre "qwen2") from shared/data/tokenizers/qwen3/tokenizer.json,
               padded to 151936 with "[PAD<i>]" tokens of type UNUSED.
  kquant-tiny  llama arch, dim 256, 1 layer, 4 heads, ff 768, vocab 32000 (Llama-2
               SentencePiece): every row a whole number of 256-value K-quant blocks;
               the input of tests/reference/make_quant_goldens.py (not in the default set)

Weights: matrices ~ normal(0, 0.02) drawn from numpy's PCG64 generator seeded with
--seed (default 1234); one generator per model, tensors drawn in the file order
below, so the F32 and BF16 files of one model hold the same values (the BF16 file
is the F32 one rounded to nearest-even).  Norm weights are all 1 and stay F32 in
the BF16 files (like llama.cpp's converter keeps 1-D tensors in F32).

Usage (from the repo root):
  python3 tests/reference/make_random_gguf.py --out "$LOOPUS_MODELS_DIR"     # all 6 files
  python3 tests/reference/make_random_gguf.py --out "$(mktemp -d)" --models qwen3-0.6b --dtypes bf16
Needs: pip install gguf numpy
"""
import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - only a usage hint
    sys.exit("make_random_gguf.py: needs the 'gguf' package (pip install gguf)")

HERE = os.path.dirname(os.path.abspath(__file__))
# $LOOPUS_DATA_DIR, else ../shared/data beside the repository (as the tests find it)
DEFAULT_DATA = os.environ.get("LOOPUS_DATA_DIR", os.path.join(HERE, "..", "..", "..", "shared", "data"))

MODELS = {
    "stories15m": dict(
        arch="llama", name="stories15M-random", dim=288, n_layer=6, n_head=6, n_kv=6,
        head_dim=48, ff=768, vocab=32000, ctx=256, rope_theta=10000.0, eps=1e-5,
        qk_norm=False, tied=False, tok="spm"),
    "stories110m": dict(
        arch="llama", name="stories110M-random", dim=768, n_layer=12, n_head=12, n_kv=12,
        head_dim=64, ff=2048, vocab=32000, ctx=2048, rope_theta=10000.0, eps=1e-5,
        qk_norm=False, tied=False, tok="spm"),
    "kquant-tiny": dict(
        arch="llama", name="kquant-tiny-random", dim=256, n_layer=1, n_head=4, n_kv=4,
        head_dim=64, ff=768, vocab=32000, ctx=256, rope_theta=10000.0, eps=1e-5,
        qk_norm=False, tied=False, tok="spm"),
    "qwen3-0.6b": dict(
        arch="qwen3", name="Qwen3-0.6B-random", dim=1024, n_layer=28, n_head=16, n_kv=8,
        head_dim=128, ff=3072, vocab=151936, ctx=40960, rope_theta=1e6, eps=1e-6,
        qk_norm=True, tied=True, tok="qwen3"),
}


def tensor_specs(h):
    """(name, numpy shape, kind) in file order; numpy shape is (rows=out, cols=in),
    GGUF stores it reversed (ne0 = in)."""
    d, hd, v = h["dim"], h["head_dim"], h["vocab"]
    q, kv = h["n_head"] * hd, h["n_kv"] * hd
    specs = [("token_embd.weight", (v, d), "w")]
    for i in range(h["n_layer"]):
        p = f"blk.{i}."
        specs += [
            (p + "attn_norm.weight", (d,), "norm"),
            (p + "attn_q.weight", (q, d), "w"),
            (p + "attn_k.weight", (kv, d), "w"),
            (p + "attn_v.weight", (kv, d), "w"),
            (p + "attn_output.weight", (d, q), "w"),
        ]
        if h["qk_norm"]:
            specs += [(p + "attn_q_norm.weight", (hd,), "norm"),
                      (p + "attn_k_norm.weight", (hd,), "norm")]
        specs += [
            (p + "ffn_norm.weight", (d,), "norm"),
            (p + "ffn_gate.weight", (h["ff"], d), "w"),
            (p + "ffn_up.weight", (h["ff"], d), "w"),
            (p + "ffn_down.weight", (d, h["ff"]), "w"),
        ]
    specs.append(("output_norm.weight", (d,), "norm"))
    if not h["tied"]:
        specs.append(("output.weight", (v, d), "w"))
    return specs


def to_bf16_bytes(a):
    """float32 -> bfloat16 (round to nearest even), returned as uint8 bytes with
    the last axis doubled, which is how gguf-py takes raw-typed data."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return r.view(np.uint8).reshape(*a.shape[:-1], a.shape[-1] * 2)


def add_spm_vocab(w, data_dir):
    src = os.path.join(data_dir, "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf")
    r = gguf.GGUFReader(src)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    scores = r.fields["tokenizer.ggml.scores"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    if len(tokens) != 32000:
        sys.exit(f"{src}: expected 32000 tokens, found {len(tokens)}")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def add_qwen3_vocab(w, data_dir, vocab_size):
    src = os.path.join(data_dir, "tokenizers/qwen3/tokenizer.json")
    with open(src, encoding="utf-8") as f:
        tj = json.load(f)
    id2tok = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in id2tok:
            tokens.append(id2tok[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(151645)      # <|im_end|> (tokenizer_config eos_token)
    w.add_pad_token_id(151643)      # <|endoftext|>
    w.add_bos_token_id(151643)
    w.add_add_bos_token(False)


def write_model(key, dtype, out_dir, data_dir, seed):
    h = MODELS[key]
    suffix = {"f32": "F32", "bf16": "BF16"}[dtype]
    path = os.path.join(out_dir, f"{h['name']}-{suffix}.gguf")
    w = gguf.GGUFWriter(path, h["arch"])
    w.add_name(h["name"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_BF16)
    w.add_block_count(h["n_layer"])
    w.add_context_length(h["ctx"])
    w.add_embedding_length(h["dim"])
    w.add_feed_forward_length(h["ff"])
    w.add_head_count(h["n_head"])
    w.add_head_count_kv(h["n_kv"])
    w.add_rope_freq_base(h["rope_theta"])
    w.add_layer_norm_rms_eps(h["eps"])
    w.add_vocab_size(h["vocab"])
    if h["arch"] == "llama":
        w.add_rope_dimension_count(h["head_dim"])
    else:
        w.add_key_length(h["head_dim"])
        w.add_value_length(h["head_dim"])
    if h["tok"] == "spm":
        add_spm_vocab(w, data_dir)
    else:
        add_qwen3_vocab(w, data_dir, h["vocab"])

    specs = tensor_specs(h)
    for name, shape, kind in specs:
        if kind == "w" and dtype == "bf16":
            bshape = (*shape[:-1], shape[-1] * 2)
            w.add_tensor_info(name, bshape, np.dtype(np.uint8), int(np.prod(shape)) * 2,
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    for name, shape, kind in specs:
        if kind == "norm":
            a = np.ones(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= np.float32(0.02)
            if dtype == "bf16":
                a = to_bf16_bytes(a)
        w.write_tensor_data(a)
    w.close()
    n = sum(int(np.prod(s)) for _, s, _ in specs)
    print(f"{path}: {n} parameters, {os.path.getsize(path)} bytes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (outside the repo)")
    ap.add_argument("--data-dir", default=DEFAULT_DATA, help="shared data dir with tokenizers/")
    ap.add_argument("--models", nargs="+", default=[m for m in MODELS if m != "kquant-tiny"],
                    choices=list(MODELS))
    ap.add_argument("--dtypes", nargs="+", default=["f32", "bf16"], choices=["f32", "bf16"])
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for m in a.models:
        for dt in a.dtypes:
            write_model(m, dt, a.out, a.data_dir, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
