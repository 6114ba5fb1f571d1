#!/usr/bin/env python3
# Writes tests/golden/official/layer_specs.json: what the official LoopUS code makes of each layer spec.
# SPDX-License-Identifier: MIT
"""Runs the OFFICIAL layer-spec parser (utils/common.py: parse_layer_indices)
and the official split resolution (models/configuration_lds.py: LDSConfig,
which expands the open-range sentinel and derives the reasoning block) on a
list of --encoder-layers / --decoder-layers strings, and records the result
of each: the parsed list, and for (encoder, decoder) pairs the three index
lists LDSConfig stores, or the exception type when the official code raises.

tests/model/test_layer_split.cpp reads the JSON: every spec the official code
accepts must give the same layers in loopus, or (for the few specs where the
official result is a silent surprise, listed in docs/loops.md) a clear error.

The official code is NOT part of this repository: check it out elsewhere and
pass --official DIR (default $LOOPUS_OFFICIAL_DIR). Needs transformers (for
LDSConfig) and torch + numpy (utils/common.py imports them); each file is
loaded on its own, so the packages' other dependencies are not needed.

Usage:
  python3 tests/reference/gen_layer_spec_golden.py --official "$LOOPUS_OFFICIAL_DIR" [--out tests/golden/official/layer_specs.json]
"""
import argparse
import json
import os
import sys

# Strings a user may type. The model in the golden has N_LAYER layers.
N_LAYER = 28
SPECS = [
    "", "none", "None", "EMPTY", "[]", " none ",
    "0", "2", "27", "5 ",
    "0..1", "0-1", "2..26", "3-7", " 3 - 7 ", "27..27", "5..5",
    "13-", "13..", "27-", "1..", "0-", "0..",
    "0,3", "1,2,27", "0, 3, 5", "3,1", "27,0", "1,1",
    "7..3", "28", "0..28", "30-",
    "a", "1..b", "0..2,5", "3,", ",3", "-3", "1,-2", "1.5", "13-,14", "3-7-9", "[1,2]",
]
# (encoder, decoder) pairs resolved by LDSConfig for a N_LAYER-layer base config.
PAIRS = [
    ("0..1", "27..27"), ("1", "27-"), ("0,1", "26,27"), ("none", "27"),  # decoder "27" = 0..27
    ("0", "none"), ("0,2", "25..27"), ("", "20-"), ("0..1", "13-"),
    ("0..3", "3..27"), ("0..13", "14-"), ("0", "1.."),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("LOOPUS_OFFICIAL_DIR"),
                    help="checkout of the official LoopUS repository (default $LOOPUS_OFFICIAL_DIR)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "golden", "official",
                                                  "layer_specs.json"))
    args = ap.parse_args()
    if not args.official or not os.path.isdir(args.official):
        sys.exit("pass --official DIR (a checkout of the official LoopUS repository) or set LOOPUS_OFFICIAL_DIR")
    import importlib.util
    import transformers

    def load(rel):  # one official file, unmodified, without its package __init__ (which needs `datasets`)
        spec = importlib.util.spec_from_file_location(rel.replace("/", "_")[:-3], os.path.join(args.official, rel))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    parse_layer_indices = load("utils/common.py").parse_layer_indices
    LDSConfig = load("models/configuration_lds.py").LDSConfig

    base = {"model_type": "qwen3", "num_hidden_layers": N_LAYER, "hidden_size": 64, "vocab_size": 128}

    def parse(s):
        try:
            return {"layers": parse_layer_indices(s)}
        except Exception as e:  # noqa: BLE001 - the type is the golden
            return {"error": type(e).__name__}

    def resolve(enc, dec):
        try:
            c = LDSConfig(base_config_dict=dict(base), encoder_layer_indices=parse_layer_indices(enc),
                          decoder_layer_indices=parse_layer_indices(dec))
            return {"encoder": c.encoder_layer_indices, "reasoning": c.reasoning_layer_indices,
                    "decoder": c.decoder_layer_indices}
        except Exception as e:  # noqa: BLE001
            return {"error": type(e).__name__}

    out = {
        "source": "official LoopUS utils/common.py parse_layer_indices + models/configuration_lds.py LDSConfig",
        "transformers": transformers.__version__,
        "n_layer": N_LAYER,
        "specs": [{"spec": s, **parse(s)} for s in SPECS],
        "pairs": [{"encoder_spec": e, "decoder_spec": d, **resolve(e, d)} for e, d in PAIRS],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(SPECS)} specs, {len(PAIRS)} pairs")


if __name__ == "__main__":
    main()
