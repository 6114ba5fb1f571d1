#!/usr/bin/env python3
# Writes tests/golden/py_written.safetensors with the reference `safetensors` package.
# SPDX-License-Identifier: MIT
"""Golden file for tests/io/test_safetensors.cpp.

The C++ test reads this file (values follow the formulas below) and checks that
loopus::io::write_safetensors, given the same tensors and metadata, produces the
same bytes: same tensor order, header JSON and padding as the reference library.

Run from the repo root:  python3 tests/reference/gen_safetensors_golden.py
Needs: pip install safetensors torch   (the C++ tests do not need python)
"""
import os
import sys

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "py_written.safetensors")


def main() -> int:
    t = {
        # value of element i (row-major): i * 0.5 - 1
        "w.f32": (torch.arange(12, dtype=torch.float32) * 0.5 - 1).reshape(3, 4),
        # i * 0.25 - 0.5
        "w.f16": (torch.arange(5, dtype=torch.float32) * 0.25 - 0.5).to(torch.float16),
        # i * 1.5 + 2
        "w.bf16": (torch.arange(6, dtype=torch.float32) * 1.5 + 2).to(torch.bfloat16).reshape(2, 3),
        "w.i32": torch.tensor([-1, 0, 7, 2 ** 31 - 1], dtype=torch.int32),
        # 1 / 3 and -1e300: not representable in f32
        "w.f64": torch.tensor([1 / 3, -1e300], dtype=torch.float64),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
        "a.f16": torch.tensor([1.0, -2.0, 65504.0], dtype=torch.float16),
    }
    save_file(t, OUT, metadata={"format": "pt", "note": "loopus golden"})
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
