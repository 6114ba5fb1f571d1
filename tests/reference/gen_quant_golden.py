#!/usr/bin/env python3
# Writes tests/golden/quant_golden.gguf with the `gguf` package (an independent GGUF writer and quantizer).
# SPDX-License-Identifier: MIT
"""Golden file for tests/io/test_quant.cpp and tests/io/test_gguf.cpp.

The file is written by gguf-py's GGUFWriter, so it also checks our reader against
a writer that is not ours. It holds:

* metadata of every GGUF value type (incl. nested arrays and a non-UTF-8 string),
  under "test.*", with a custom alignment of 64 (general.alignment);
* "src": a fixed random f32 vector (shape 2 x 256) with a few special values;
* for each of q8_0, q4_0, q4_1 (from src[:, :128]): "<type>" raw blocks made by
  gguf.quants.quantize and "<type>.ref", gguf.quants.dequantize of them (f32);
* for q4_K and q6_K (gguf-py can only dequantize these): "<type>" random blocks
  with sane f16 scales and "<type>.ref" their dequantization;
* "f16" (numpy astype, round-to-nearest-even) and "bf16" (gguf.quants) of src.

Run from the repo root:  python3 tests/reference/gen_quant_golden.py
Needs: pip install gguf numpy   (the C++ tests do not need python)
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "quant_golden.gguf")


def main() -> int:
    rng = np.random.RandomState(1234)
    src = (rng.standard_normal((2, 256)) * 0.5).astype(np.float32)
    # Special values: rounding ties, f16 overflow / subnormals, signed zero, big magnitudes.
    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 65520.0, 1e-7, -6e-8, 3.0e-5, 1e30, -1e-30,
                1.0009765625, 1.00048828125, 0.33333334, 2.0 ** -24, 2.0 ** -25]
    src[1, 256 - len(specials):] = np.array(specials, dtype=np.float32)

    w = gguf.GGUFWriter(OUT, arch="loopus-test")
    w.add_custom_alignment(64)
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.u32", 4000000000, V.UINT32)
    w.add_key_value("test.i32", -2000000000, V.INT32)
    w.add_key_value("test.f32", 0.1, V.FLOAT32)
    w.add_key_value("test.bool", True, V.BOOL)
    w.add_key_value("test.str", "h\u00e9llo \u2581world", V.STRING)
    w.add_key_value("test.u64", 2 ** 63 + 5, V.UINT64)
    w.add_key_value("test.i64", -(2 ** 62), V.INT64)
    w.add_key_value("test.f64", 0.1, V.FLOAT64)
    w.add_key_value("test.bytes", b"\xff\xfe\x00ab", V.STRING)
    w.add_key_value("test.arr_str", ["a", "\u2581b", "", "<s>"], V.ARRAY)
    w.add_key_value("test.arr_f32", [0.5, -1.25, 3.0e-5], V.ARRAY)
    w.add_key_value("test.arr_i32", [1, -2, 3], V.ARRAY)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_bool", [True, False], V.ARRAY)
    w.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY)

    w.add_tensor("src", src)
    part = np.ascontiguousarray(src[:, :128])
    for name, qt in (("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1)):
        raw = quants.quantize(part, qt)
        w.add_tensor(name, raw, raw_dtype=qt)
        w.add_tensor(name + ".ref", quants.dequantize(raw, qt).astype(np.float32))
    for name, qt in (("q4_K", Q.Q4_K), ("q6_K", Q.Q6_K)):
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.randint(0, 256, size=(2, type_size), dtype=np.uint8)  # one super-block per row
        for row in range(2):
            scales = np.array([rng.uniform(0.001, 0.05), rng.uniform(0.001, 0.05)], dtype=np.float16)
            if qt == Q.Q4_K:
                raw[row, 0:4] = scales.view(np.uint8)  # d, dmin lead the block
            else:
                raw[row, type_size - 2:] = scales[:1].view(np.uint8)  # d ends the block
        w.add_tensor(name, raw, raw_dtype=qt)
        w.add_tensor(name + ".ref", quants.dequantize(raw, qt).astype(np.float32))
    with np.errstate(over="ignore"):  # 65520 and 1e30 overflow to inf on purpose
        f16 = src.astype(np.float16)
    w.add_tensor("f16", f16)
    w.add_tensor("f16.ref", f16.astype(np.float32))
    bf16 = quants.quantize(src, Q.BF16)
    w.add_tensor("bf16", bf16, raw_dtype=Q.BF16)
    w.add_tensor("bf16.ref", quants.dequantize(bf16, Q.BF16).astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
