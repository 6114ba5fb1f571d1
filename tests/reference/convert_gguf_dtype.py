#!/usr/bin/env python3
# Rewrites a GGUF model (e.g. a quantized checkpoint) with all weight matrices in F32 or BF16.
# SPDX-License-Identifier: MIT
"""Dense F32 / BF16 copy of a GGUF model, for speed comparisons.

loopus and llama.cpp are timed on the same F32 and BF16 files. The random-weight
files of make_random_gguf.py give the shapes of stories110M and Qwen3-0.6B; this
script gives the same for a real model that is only at hand as a quantized GGUF
(e.g. SmolLM2-135M-Instruct.Q4_1.gguf), so both engines can also be compared, and
checked for sane text, on real weights. The outputs are big and are written
OUTSIDE the repo; they are never committed and CI does not run this script.

What is written (read with gguf.GGUFReader, written with gguf.GGUFWriter):
  metadata  every key/value of IN in the same order and with the same value types
            (arrays included; strings are copied as raw bytes), except the
            GGUF.* header fields, which the writer derives itself.
            general.alignment is passed on as the writer's alignment, so the
            tensor data is padded as the key says. general.file_type, if present,
            becomes 0 (ALL_F32) or 32 (MOSTLY_BF16), keeping its value type.
  tensors   same names, order and dims (ne0 first, as GGUF stores them).
            Tensors of 2 or more dims are dequantized with gguf.quants.dequantize
            and stored as F32, or as BF16 = round-to-nearest-even of those f32
            values (gguf.quants.quantize). 1-D tensors (norms, biases) are stored
            as F32 in both cases, as llama.cpp's converter does.

Usage (from the repo root):
  python3 tests/reference/convert_gguf_dtype.py IN.gguf OUT.gguf --dtype f32
  python3 tests/reference/convert_gguf_dtype.py IN.gguf OUT.gguf --dtype bf16
Needs: pip install gguf numpy
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - only a usage hint
    sys.exit("convert_gguf_dtype.py: needs the 'gguf' package (pip install gguf)")

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType
FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16}
OUT_TYPE = {"f32": QT.F32, "bf16": QT.BF16}


def field_value(field):
    """(value, type, sub_type) of a reader field, in the form GGUFWriter.add_key_value
    takes; strings stay bytes so that nothing is lost in a UTF-8 round trip."""
    t = field.types[0]
    if t == VT.STRING:
        return bytes(field.parts[-1]), t, None
    if t != VT.ARRAY:
        return field.parts[-1].tolist()[0], t, None
    if len(field.types) != 2:
        sys.exit(f"convert_gguf_dtype.py: {field.name}: nested arrays are not supported")
    sub = field.types[1]
    if sub == VT.STRING:
        vals = [bytes(field.parts[i]) for i in field.data]
    else:
        vals = [v for i in field.data for v in field.parts[i].tolist()]
    return vals, t, sub


def copy_metadata(r, w, dtype):
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue  # version, tensor_count, kv_count: written by GGUFWriter
        if key == gguf.Keys.General.ARCHITECTURE:
            continue  # GGUFWriter(path, arch) adds it first
        if key == gguf.Keys.General.ALIGNMENT:
            w.add_custom_alignment(int(field.parts[-1][0]))
            continue
        val, vtype, sub = field_value(field)
        if key == gguf.Keys.General.FILE_TYPE:
            val = int(FILE_TYPE[dtype])
        if vtype == VT.ARRAY and len(val) == 0:
            print(f"convert_gguf_dtype.py: {key}: empty array, GGUFWriter cannot write it; skipped",
                  file=sys.stderr)
            continue
        w.add_key_value(key, val, vtype, sub)


def out_type(t, dtype):
    return OUT_TYPE[dtype] if len(t.shape) >= 2 else QT.F32


def convert_tensor(t, qtype):
    """Dequantized values of t as a row-major numpy array (dims reversed from
    GGUF's ne0-first order), encoded as qtype (F32: float32, BF16: uint8 bytes
    with the last axis doubled, which is how gguf-py takes raw-typed data)."""
    np_shape = tuple(int(d) for d in reversed(t.shape))
    a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(np_shape)
    if qtype == QT.F32:
        return np.ascontiguousarray(a)
    return gguf.quants.quantize(a, qtype)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", help="source GGUF (any type gguf.quants can dequantize)")
    ap.add_argument("output", help="GGUF to write (outside the repo)")
    ap.add_argument("--dtype", required=True, choices=list(OUT_TYPE))
    a = ap.parse_args()
    if os.path.abspath(a.input) == os.path.abspath(a.output):
        sys.exit("convert_gguf_dtype.py: input and output are the same file")

    r = gguf.GGUFReader(a.input)
    if r.byte_order != "I":
        sys.exit(f"{a.input}: byte order differs from this host's; not supported")
    arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
    w = gguf.GGUFWriter(a.output, arch)
    copy_metadata(r, w, a.dtype)

    # Tensor infos first, then the data one tensor at a time (the reader maps
    # the input, so at most one converted tensor is in memory).
    for t in r.tensors:
        qtype = out_type(t, a.dtype)
        np_shape = tuple(int(d) for d in reversed(t.shape))
        n = int(np.prod(np_shape))
        if qtype == QT.F32:
            w.add_tensor_info(t.name, np_shape, np.dtype(np.float32), n * 4)
        else:
            bshape = (*np_shape[:-1], np_shape[-1] * 2)
            w.add_tensor_info(t.name, bshape, np.dtype(np.uint8), n * 2, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(convert_tensor(t, out_type(t, a.dtype)))
    w.close()

    # Check what was written: same names, order and dims, the intended types.
    o = gguf.GGUFReader(a.output)
    if len(o.tensors) != len(r.tensors):
        sys.exit(f"{a.output}: {len(o.tensors)} tensors written, {len(r.tensors)} expected")
    for ti, to in zip(r.tensors, o.tensors):
        if ti.name != to.name or list(ti.shape) != list(to.shape) or to.tensor_type != out_type(ti, a.dtype):
            sys.exit(f"{a.output}: tensor {to.name} {to.tensor_type.name} {list(to.shape)} "
                     f"does not match {ti.name} {list(ti.shape)}")
    n = sum(int(t.n_elements) for t in r.tensors)
    print(f"{a.output}: {len(r.tensors)} tensors, {n} parameters, {os.path.getsize(a.output)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
