#!/usr/bin/env python3
# Cross-checks loopus::BpeTokenizer against HF `tokenizers` on the goldens and a few MB of real text.
# SPDX-License-Identifier: MIT
"""Run by hand (not in CI):

    pip install tokenizers transformers
    python3 tests/reference/check_hf_tokenizers.py [--data DIR] [--build DIR]

Steps:
  1. builds tests/reference/bpe_encode_driver.cpp with g++ (into --build, default $TMPDIR/loopus_bpe_check);
  2. checks the staged goldens (made by a JS port) against HF `tokenizers` itself;
  3. encodes the goldens, every line of the real texts and each whole text with both HF and loopus
     (Qwen3 and Llama 3 tokenizer.json), and compares ids and decode() (HF decode, no clean-up);
  4. also runs transformers' AutoTokenizer decode on the goldens to show which cases its
     clean_up_tokenization_spaces / NFC change.
Prints counts; exits non-zero on any id mismatch.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "text/public_domain/tinyshakespeare.txt",
    "text/public_domain/sherlock_holmes_adventures_pg1661.txt",
    "text/tinystories/tinystories_validation_first1000.txt",
    "text/tinystories/tinystoriesv2_sample.txt",
    "eval/wikitext-2-raw/wiki.test.raw",
]


def build_driver(build: Path) -> Path:
    build.mkdir(parents=True, exist_ok=True)
    exe = build / "bpe_encode_driver"
    src = REPO / "tests/reference/bpe_encode_driver.cpp"
    cmd = ["g++", "-std=c++20", "-O2", "-march=native", f"-I{REPO / 'include'}", str(src), "-lpcre2-8", "-o", str(exe)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return exe


def run_driver(exe: Path, tok_path: str, items, tmp: Path, tag: str):
    inp = tmp / f"{tag}.in.jsonl"
    out = tmp / f"{tag}.out.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for i, t in items:
            f.write(json.dumps({"i": i, "text": t}, ensure_ascii=False) + "\n")
    r = subprocess.run([str(exe), tok_path, str(inp), str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"driver failed: {r.stderr}")
    print(f"    loopus: {r.stderr.strip()}")
    res = {}
    with open(out, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            res[o["i"]] = (o["ids"], o["decoded"])
    return res


def compare(name, hf_tok, ours, items, show=3):
    bad_ids = bad_dec = 0
    t0 = time.process_time()
    for i, text in items:
        ids = hf_tok.encode(text, add_special_tokens=False).ids
        dec = hf_tok.decode(ids, skip_special_tokens=False)
        my_ids, my_dec = ours[i]
        if ids != my_ids:
            bad_ids += 1
            if bad_ids <= show:
                print(f"    ID MISMATCH {name} {i}: {text[:80]!r}\n      hf {ids[:20]}\n      us {my_ids[:20]}")
        if dec != my_dec:
            bad_dec += 1
            if bad_dec <= show:
                print(f"    DECODE MISMATCH {name} {i}: hf {dec[:80]!r} us {my_dec[:80]!r}")
    print(f"  {name}: {len(items)} texts: id mismatches {bad_ids}, decode mismatches {bad_dec} "
          f"(HF cpu {time.process_time() - t0:.1f}s)", flush=True)
    return bad_ids


def random_texts(n, seed=1234):
    """Random strings over the characters pre-tokenizers and NFC care about: letters of several
    scripts, digits of several systems, every White_Space character and some near misses,
    combining marks (NFC reordering and composition), Hangul jamo, emoji, apostrophe
    contractions and fragments of special tokens."""
    import random
    rng = random.Random(seed)
    atoms = (list("abcXYZ019_.,!?-'\"()<>|/\\:;") + ["'s", "'S", "'ll", "'VE", "n't", "\u017f"] +
             [chr(c) for c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x180E, 0x2000, 0x2007,
                               0x200A, 0x200B, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF, 0x1C, 0x1F)] +
             ["\u0301", "\u0308", "\u0323", "\u0327", "\u0344", "\u0345", "\u05B0", "\u093C", "\u0F71",
              "e", "A", "\u00e9", "\u212b", "\u1100", "\u1161", "\u11a8", "\uac00", "\u0915", "\u0e01",
              "\u4e2d", "\u65e5", "\u0416", "\u03a9", "\u05d0", "\u0661", "\u0967", "\u00bd", "\u2167",
              "\U0001F999", "\U0001F468\u200D\U0001F469", "\U0001F1FA\U0001F1F8", "\U0001D573", "\uFFFD",
              "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<think>", "<|", "|>", "<|endoftext"])
    out = []
    for k in range(n):
        m = rng.randint(0, 24)
        out.append((f"rand{k}", "".join(rng.choice(atoms) for _ in range(m))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LOOPUS_DATA_DIR", str(REPO.parent / "shared/data")))
    ap.add_argument("--build", default=os.path.join(tempfile.gettempdir(), "loopus_bpe_check"))
    args = ap.parse_args()
    data = Path(args.data)

    from tokenizers import Tokenizer
    exe = build_driver(Path(args.build))
    failures = 0
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name in ["qwen3", "llama3"]:
            tok_path = str(data / f"tokenizers/{name}/tokenizer.json")
            hf = Tokenizer.from_file(tok_path)
            print(f"== {name}", flush=True)

            # 1. staged goldens (JS port) vs HF tokenizers
            golden = [json.loads(l) for l in open(data / f"tokenizers/{name}_golden.jsonl", encoding="utf-8")]
            g_bad = sum(1 for g in golden if hf.encode(g["text"], add_special_tokens=False).ids != g["ids"])
            print(f"  goldens vs HF tokenizers: {len(golden) - g_bad}/{len(golden)} identical")
            failures += g_bad

            # 2. goldens through loopus
            items = [(g["i"], g["text"]) for g in golden]
            ours = run_driver(exe, tok_path, items, tmp, f"{name}_golden")
            failures += compare("goldens", hf, ours, items)

            # 3a. random strings
            rnd = random_texts(20000)
            ours = run_driver(exe, tok_path, rnd, tmp, f"{name}_random")
            failures += compare("random strings", hf, ours, rnd)

            # 3b. real text, line by line and whole files
            lines, whole = [], []
            n_bytes = 0
            for k, rel in enumerate(TEXTS):
                p = data / rel
                if not p.exists():
                    print(f"  (missing {rel})")
                    continue
                text = p.read_bytes().decode("utf-8", errors="replace")
                n_bytes += len(text.encode("utf-8"))
                whole.append((f"whole{k}", text))
                for j, line in enumerate(text.splitlines(keepends=True)):
                    lines.append((f"{k}:{j}", line))
            print(f"  real text: {n_bytes / 1e6:.2f} MB in {len(lines)} lines, {len(whole)} files")
            ours = run_driver(exe, tok_path, lines, tmp, f"{name}_lines")
            failures += compare("lines", hf, ours, lines)
            ours = run_driver(exe, tok_path, whole, tmp, f"{name}_whole")
            failures += compare("whole files", hf, ours, whole)

        # 4. what transformers' decode does with the round-trip exceptions
        try:
            from transformers import AutoTokenizer
            for name in ["qwen3", "llama3"]:
                at = AutoTokenizer.from_pretrained(str(data / f"tokenizers/{name}"))
                golden = [json.loads(l) for l in open(data / f"tokenizers/{name}_golden.jsonl", encoding="utf-8")]
                diff = [(g["i"], g["text"], at.decode(g["ids"])) for g in golden if at.decode(g["ids"]) != g["text"]]
                print(f"== transformers {name} ({type(at).__name__}): decode != text for {len(diff)} goldens")
                for i, t, d in diff:
                    print(f"    {i}: {t!r} -> {d!r}")
        except Exception as e:  # transformers is optional here
            print(f"(transformers check skipped: {e})")

    print("FAILED" if failures else "OK: all ids identical")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
