#!/usr/bin/env python3
# PyTorch reference of one LoopUS training step (random deep supervision): golden losses/gradients and a speed baseline.
# SPDX-License-Identifier: MIT
"""A from-the-spec PyTorch implementation of the LoopUS supervised step
(docs/LOOPUS_METHOD.md section 5; official training_runtime.py
_compute_supervision_loss), used three ways:

  golden   (default) For tiny random checkpoints written by `loopus synth --loopus`
           it runs, in float64: h = E(ids) (no grad); N_PRE unsupervised gated
           block applications (no grad); then one supervised step: detach,
           z = M(h_old), h_new = M(z) (2 applications, the q head reading the
           pre-gate delta p - h of the 2nd at the last token), logits = D(h_new),
           L_LM = CE (ignore_index -100), L_prev = CE(D(h_old)) without grad,
           L_mono = SiLU(L_LM - L_prev), L_Q = BCEWithLogits(q, per-sample token
           accuracy of argmax), loss = L_LM + beta*L_mono + L_Q, backward.
           Writes tests/golden/train/step.json: inputs, loss parts, and for every
           trainable tensor the gradient norm and a few sampled entries, plus a
           weights fingerprint. tests/train/test_train_golden.cpp compares.
  --official DIR  Also runs the OFFICIAL code on the same checkpoint
           (LDSForCausalLM + training_runtime._compute_supervision_loss, imported
           with its unrelated imports stubbed) and reports the largest relative
           difference of losses and gradients. Run once by hand; nothing of the
           official code is stored here.
  --time   Times full training batches (n_steps=20, n_supervision=5, AdamW
           micro-step after every supervised step) in float32 for a given shape,
           with this script's implementation, for docs/training.md.

Usage:
  python3 tests/reference/train_step_reference.py [--cli build/bin/loopus] [--out tests/golden/train/step.json]
  python3 tests/reference/train_step_reference.py --official "$LOOPUS_OFFICIAL_DIR"
  python3 tests/reference/train_step_reference.py --time --threads 2 --batch 8 --seq-len 256
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_common as gc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "llama": {"arch": "llama", "dim": 64, "layers": 4, "heads": 4, "kv-heads": 2, "ff": 128, "vocab": 256,
              "rope-theta": 10000.0, "rms-eps": 1e-5, "dtype": "f32", "seed": 61, "loopus": True,
              "encoder-layers": "0..0", "decoder-layers": "3..3"},
    "qwen3": {"arch": "qwen3", "dim": 64, "layers": 4, "heads": 4, "kv-heads": 2, "head-dim": 16, "ff": 128,
              "vocab": 256, "rope-theta": 1000000.0, "rms-eps": 1e-6, "dtype": "f32", "seed": 62, "loopus": True,
              "encoder-layers": "0..0", "decoder-layers": "3..3"},
}
BATCH, SEQ = 2, 16
N_PRE = 2          # unsupervised gated applications before the supervised step
N_APPLY = 2        # block applications in the supervised step (official run_final_with_q)
BETA = 1.0
IGNORED = (1, 5)   # (sequence, position) whose label is -100
SAMPLES = 4        # sampled gradient entries per tensor


# ---------------------------------------------------------------- the model, from the spec


class Model:
    """Tensors of an "lds" checkpoint as leaf tensors of one dtype."""

    def __init__(self, sd: dict, cfg: dict, dtype):
        self.cfg = cfg
        self.base = cfg["base_config_dict"]
        self.t = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in sd.items()}
        self.enc = len(cfg["encoder_layer_indices"])
        self.rea = len(cfg["reasoning_layer_indices"])
        self.dec = len(cfg["decoder_layer_indices"])
        b = self.base
        self.d = b["hidden_size"]
        self.H = b["num_attention_heads"]
        self.KV = b["num_key_value_heads"]
        self.hd = b.get("head_dim") or self.d // self.H
        self.eps = b["rms_norm_eps"]
        self.theta = b["rope_theta"]
        self.qk_norm = b["model_type"] == "qwen3"

    def trainable(self):
        """Official: everything except encoder.* (encoder layers + embeddings)."""
        return [k for k in sorted(self.t) if not k.startswith("encoder.")]

    def rope_cs(self, T):
        at = torch.float32 if HF_F32 else torch.float64
        inv = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).to(at) / self.hd))
        ang = torch.arange(T, dtype=at)[:, None] * inv[None, :]
        emb = torch.cat([ang, ang], dim=-1)
        dt = next(iter(self.t.values())).dtype
        return emb.cos().to(dt), emb.sin().to(dt)


# HF_F32=1 copies what the official stack does in float32 even in a float64
# model: transformers' RMSNorm, eager softmax and rotary angles, and the q
# target (utils/metrics.py compute_q_target). Only for --official, to show that
# the remaining ~1e-7 difference is exactly that.
HF_F32 = os.environ.get("HF_F32") == "1"


def rms(x, w, eps):
    if HF_F32:
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(x.dtype)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def layer(m: Model, p: str, x, cs):
    B, T, d = x.shape
    t = m.t
    cos, sin = cs
    xn = rms(x, t[p + "input_layernorm.weight"], m.eps)
    q = (xn @ t[p + "self_attn.q_proj.weight"].T).view(B, T, m.H, m.hd)
    k = (xn @ t[p + "self_attn.k_proj.weight"].T).view(B, T, m.KV, m.hd)
    v = (xn @ t[p + "self_attn.v_proj.weight"].T).view(B, T, m.KV, m.hd)
    if m.qk_norm:
        q = rms(q, t[p + "self_attn.q_norm.weight"], m.eps)
        k = rms(k, t[p + "self_attn.k_norm.weight"], m.eps)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, h, T, hd]
    q = q * cos + rot_half(q) * sin
    k = k * cos + rot_half(k) * sin
    rep = m.H // m.KV
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(m.hd)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    a = (torch.softmax(s, dim=-1, dtype=torch.float32).to(s.dtype) if HF_F32 else torch.softmax(s, dim=-1)) @ v
    a = a.transpose(1, 2).reshape(B, T, m.H * m.hd)
    x = x + a @ t[p + "self_attn.o_proj.weight"].T
    xn = rms(x, t[p + "post_attention_layernorm.weight"], m.eps)
    g = xn @ t[p + "mlp.gate_proj.weight"].T
    u = xn @ t[p + "mlp.up_proj.weight"].T
    return x + (F.silu(g) * u) @ t[p + "mlp.down_proj.weight"].T


def encoder(m, ids, cs):
    x = m.t["encoder.embed_tokens.weight"][ids]
    for j in range(m.enc):
        x = layer(m, f"encoder.layers.{j}.", x, cs)
    return x


def gate(m, p, h):
    t = m.t
    u = (p - h) @ t["reasoning.gate.dt_input_proj.weight"].T
    delta = F.softplus(u @ t["reasoning.gate.delta_proj.weight"].T + t["reasoning.gate.delta_proj.bias"])
    a = torch.exp(delta * -torch.exp(t["reasoning.gate.A_log"]))
    return a * p + (1 - a) * h


def block(m, h, cs, with_q=False):
    p = h
    for j in range(m.rea):
        p = layer(m, f"reasoning.layers.{j}.", p, cs)
    q_logit = None
    if with_q:  # training path: pre-gate delta at the last (valid) token
        pooled = (p - h)[:, -1, :]
        y = F.layer_norm(pooled, (m.d,), m.t["q_head.0.weight"], m.t["q_head.0.bias"], 1e-5)
        q_logit = (y @ m.t["q_head.1.weight"].T + m.t["q_head.1.bias"]).squeeze(-1)
    return gate(m, p, h), q_logit


def decoder(m, h, cs):
    for j in range(m.dec):
        h = layer(m, f"decoder.layers.{j}.", h, cs)
    return rms(h, m.t["decoder.norm.weight"], m.eps) @ m.t["decoder.lm_head.weight"].T


def shifted_ce(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def supervised_step(m, h, labels, cs, beta=BETA, n_apply=N_APPLY):
    """Returns (loss parts, h_new detached); gradients land in m.t[*].grad."""
    h_old = h.detach()
    z = h_old
    q_logit = None
    for a in range(n_apply):
        z, ql = block(m, z, cs, with_q=(a == n_apply - 1))
        q_logit = ql if ql is not None else q_logit
    logits = decoder(m, z, cs)
    with torch.no_grad():
        lm_prev = shifted_ce(decoder(m, h_old, cs), labels)
    lm = shifted_ce(logits, labels)
    mono = F.silu(lm - lm_prev)
    y_hat = logits[:, :-1].argmax(-1)
    y = labels[:, 1:]
    valid = y.ne(-100)
    correct = (y_hat.eq(y) & valid).to(logits.dtype)
    target = correct.sum(1) / valid.to(logits.dtype).sum(1).clamp(min=1)
    if HF_F32:  # the official compute_q_target forms the accuracy in float32
        target = (correct.float().sum(1) / valid.float().sum(1).clamp(min=1.0)).to(logits.dtype)
    q_loss = F.binary_cross_entropy_with_logits(q_logit, target)
    loss = lm + beta * mono + q_loss
    loss.backward()
    parts = {"loss": loss.item(), "lm": lm.item(), "prev": lm_prev.item(), "mono": mono.item(), "q": q_loss.item(),
             "q_prob": torch.sigmoid(q_logit).mean().item(),
             "token_acc": (correct.sum() / valid.sum()).item(), "q_target": target.tolist(),
             "q_logit": q_logit.tolist()}
    return parts, z.detach()


# ---------------------------------------------------------------- golden


def load_ckpt(folder):
    from safetensors.numpy import load_file

    sd = load_file(os.path.join(folder, "model.safetensors"))
    cfg = json.loads(Path(folder, "config.json").read_text())
    return sd, cfg


def make_inputs(vocab):
    rng = np.random.default_rng(2027)
    ids = rng.integers(3, vocab, size=(BATCH, SEQ)).astype(np.int64)
    labels = ids.copy()
    labels[IGNORED] = -100
    return ids, labels


def sample_indices(numel, k=SAMPLES):
    return sorted({(i * 2654435761 + 12345) % numel for i in range(k)})


def run_case(folder, dtype=torch.float64):
    sd, cfg = load_ckpt(folder)
    m = Model(sd, cfg, dtype)
    train = m.trainable()
    for k in train:
        m.t[k].requires_grad_(True)
    ids, labels = make_inputs(m.base["vocab_size"])
    ids_t = torch.tensor(ids)
    cs = m.rope_cs(SEQ)
    with torch.no_grad():
        h = encoder(m, ids_t, cs)
        for _ in range(N_PRE):
            h, _ = block(m, h, cs)
        # A random model predicts almost nothing right, which would leave the q
        # target at 0. The logits do not depend on the labels, so some labels
        # are set to the step's own argmax (where it wins by a clear margin):
        # per-sample accuracies become distinct and non-zero.
        z = h
        for _ in range(N_APPLY):
            z, _ = block(m, z, cs)
        top = decoder(m, z, cs).topk(2, dim=-1)
    for b in range(BATCH):
        for t in range(SEQ - 1):
            if t % (b + 2) == 0 and (b, t + 1) != IGNORED and float(top.values[b, t, 0] - top.values[b, t, 1]) > 1e-3:
                labels[b, t + 1] = int(top.indices[b, t, 0])
    labels_t = torch.tensor(labels)
    parts, h_new = supervised_step(m, h, labels_t, cs)
    grads = {}
    for k in train:
        g = m.t[k].grad
        flat = g.reshape(-1)
        idx = sample_indices(flat.numel())
        grads[k] = {"norm": float(g.norm()), "idx": idx, "val": [float(flat[i]) for i in idx]}
    return m, ids, labels, parts, grads, h_new


def write_golden(args):
    out = {"what": "one LoopUS supervised training step in float64 (tests/reference/train_step_reference.py)",
           "batch": BATCH, "seq_len": SEQ, "n_pre": N_PRE, "n_apply": N_APPLY, "beta": BETA,
           "versions": gc.versions(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in CASES.items():
            folder = os.path.join(tmp, name)
            gc.run_synth(args.cli, params, folder)
            m, ids, labels, parts, grads, h_new = run_case(folder)
            fp = gc.fingerprint(os.path.join(folder, "model.safetensors"))
            out["cases"][name] = {
                "synth": params, "ids": ids.tolist(), "labels": labels.tolist(), "losses": parts,
                "grads": grads, "h_new_norm": float(h_new.norm()),
                "fingerprint": {k: fp[k] for k in ("reasoning.gate.A_log", "reasoning.layers.0.self_attn.q_proj.weight",
                                                   "q_head.1.weight", "decoder.lm_head.weight")}}
            print(f"{name}: loss {parts['loss']:.6f} lm {parts['lm']:.6f} prev {parts['prev']:.6f} "
                  f"mono {parts['mono']:.6f} q {parts['q']:.6f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", args.out)


# ---------------------------------------------------------------- check against the official code


def import_official(official: Path):
    """Imports LDSForCausalLM and _compute_supervision_loss with the training
    runtime's unrelated dependencies (wandb, accelerate, hub, lm-eval) stubbed."""
    sys.path.insert(0, str(official))
    import importlib.machinery

    import transformers  # before the stubs: it probes for accelerate at import time

    class Stub(types.ModuleType):
        """Stands in for a package the training runtime imports but this check never calls."""

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None})

    def stub(name):
        mod = Stub(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__path__ = []
        sys.modules[name] = mod

    for name in ("wandb", "accelerate", "dotenv", "huggingface_hub", "utils.lm_eval_harness"):
        try:
            __import__(name)
        except Exception:
            stub(name)
    import models.configuration_lds as cfg_mod

    class OfflineAutoConfig:
        @staticmethod
        def from_pretrained(name, *a, **k):
            return transformers.Qwen3Config()

    cfg_mod.AutoConfig = OfflineAutoConfig
    from models import LDSForCausalLM

    for _ in range(30):  # stub whatever else the runtime imports at module level (datasets, lm_eval, ...)
        try:
            import training_runtime

            break
        except ModuleNotFoundError as e:
            stub(e.name)

    return LDSForCausalLM, training_runtime._compute_supervision_loss


def check_official(args):
    LDS, compute_loss = import_official(Path(args.official))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in CASES.items():
            folder = os.path.join(tmp, name)
            gc.run_synth(args.cli, params, folder)
            _, ids, labels, parts, grads, _ = run_case(folder)
            om = LDS.from_pretrained(folder, tokenizer=types.SimpleNamespace(eos_token_id=None, pad_token_id=None))
            om = om.double()
            om._set_attn_implementation("eager")  # the official default is sdpa; same math
            om.train(False)
            for p in om.encoder.parameters():
                p.requires_grad_(False)
            ids_t, labels_t = torch.tensor(ids), torch.tensor(labels)
            mask = torch.ones_like(ids_t)
            with torch.no_grad():
                h, pos_emb, pos_ids, cache_pos, _ = om.encoder(input_ids=ids_t, attention_mask=mask)
            kw = om._reasoning_kwargs(pos_emb, pos_ids, cache_pos, mask, hidden_states=h)
            with torch.no_grad():
                for _ in range(N_PRE):
                    h = om.reasoning(hidden_states=h, **kw)
            cfg = types.SimpleNamespace(beta=BETA)
            loss, token_acc, q_hat, h_new, lm, q_loss = compute_loss(om, h, labels_t, cfg, kw)
            loss.backward()
            diffs = {"loss": abs(loss.item() - parts["loss"]) / abs(parts["loss"]),
                     "lm": abs(lm.item() - parts["lm"]) / abs(parts["lm"]),
                     "q": abs(q_loss.item() - parts["q"]) / abs(parts["q"])}
            named = dict(om.named_parameters())
            gworst = 0.0
            for k, g in grads.items():
                og = named[k].grad
                if og is None:
                    raise RuntimeError(f"official model has no gradient for {k}")
                gworst = max(gworst, abs(float(og.norm()) - g["norm"]) / max(g["norm"], 1e-30))
                flat = og.reshape(-1)
                for i, v in zip(g["idx"], g["val"]):
                    gworst = max(gworst, abs(float(flat[i]) - v) / max(g["norm"], 1e-30))
            print(f"{name}: official vs reference: rel diff loss {diffs['loss']:.2e} lm {diffs['lm']:.2e} "
                  f"q {diffs['q']:.2e}; gradients (norms and entries, rel. to the norm) {gworst:.2e} "
                  f"over {len(grads)} tensors")
            worst = max(worst, gworst, *diffs.values())
    print(f"largest relative difference: {worst:.2e}")
    return 0 if worst < 1e-5 else 1


# ---------------------------------------------------------------- timing


def time_training(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.float32
    params = {"arch": "llama", "dim": args.dim, "layers": args.layers, "heads": args.heads, "kv-heads": args.kv_heads,
              "ff": args.ff, "vocab": args.vocab, "dtype": "f32", "seed": 5, "loopus": True,
              "encoder-layers": args.encoder_layers, "decoder-layers": args.decoder_layers}
    with tempfile.TemporaryDirectory() as tmp:
        gc.run_synth(args.cli, params, tmp)
        sd, cfg = load_ckpt(tmp)
    m = Model(sd, cfg, dtype)
    train = m.trainable()
    for k in train:
        m.t[k].requires_grad_(True)
    opt = torch.optim.AdamW([m.t[k] for k in train], lr=1e-3)
    cs = m.rope_cs(args.seq_len)
    rng = np.random.default_rng(0)
    B, T = args.batch, args.seq_len

    def one_batch():
        ids = torch.tensor(rng.integers(3, args.vocab, size=(B, T)))
        with torch.no_grad():
            h = encoder(m, ids, cs)
        sup = sorted(rng.choice(args.n_steps, args.n_supervision, replace=False).tolist())
        for s in range(args.n_steps):
            if s in sup:
                _, h = supervised_step(m, h, ids, cs)
                opt.step()
                opt.zero_grad()
            else:
                with torch.no_grad():
                    h, _ = block(m, h, cs)

    one_batch()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.batches):
        one_batch()
    dt = time.perf_counter() - t0
    tok = args.batches * B * T
    res = {"impl": "pytorch (tests/reference/train_step_reference.py)", "torch": torch.__version__,
           "threads": args.threads, "batch": B, "seq_len": T, "n_steps": args.n_steps,
           "n_supervision": args.n_supervision, "batches": args.batches, "seconds": dt, "tokens_per_s": tok / dt,
           "shape": params}
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=str(REPO / "build/bin/loopus"))
    ap.add_argument("--out", default=str(REPO / "tests/golden/train/step.json"))
    ap.add_argument("--official", default=None, help="official LoopUS checkout to check this reference against")
    ap.add_argument("--time", action="store_true", help="time float32 training batches instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--n-steps", type=int, default=20)
    ap.add_argument("--n-supervision", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=172)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--encoder-layers", default="0..0")
    ap.add_argument("--decoder-layers", default="4..4")
    args = ap.parse_args()
    if args.time:
        time_training(args)
    elif args.official:
        sys.exit(check_official(args))
    else:
        write_golden(args)


if __name__ == "__main__":
    main()
