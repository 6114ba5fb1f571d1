#!/usr/bin/env python3
# Reads the files loopus' GGUF and safetensors writers produced with the reference python readers.
# SPDX-License-Identifier: MIT
"""Cross-check of io::write_safetensors and io::GgufWriter against the reference readers.

1. Run the C++ tests that leave the files behind:
     loopus_tests -tc='*python cross-check*,*GgufWriter typed round trip*'
   They write, under <tmp> = $TMPDIR or /tmp:
     loopus_test_io_pycheck_st/ours.safetensors
     loopus_test_io_pycheck_gguf/ours.gguf
     loopus_test_io_gguf_rt/rt.gguf
   (the tests fail until step 2 has written the golden they compare with).
2. python3 tests/reference/check_writers.py [--tmp DIR] [--write]

Every file is read with the `safetensors` / `gguf` packages (not with loopus),
and every tensor value and metadata entry is checked against values built here
with numpy from the same formulas the C++ tests use. Only when all checks pass,
--write records the verdict in tests/golden/writers.json: per file its size and
FNV-1a 64 hash, each tensor's name, dtype, shape and the hash of its bytes as the
reference reader returned them, and the metadata as the reader decoded it. The
C++ tests then require the files they write to have exactly that hash.

Needs: pip install gguf safetensors numpy (torch is not needed: bf16 is
decoded here from its raw 16-bit pattern).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

FILES = {
    "safetensors": "loopus_test_io_pycheck_st/ours.safetensors",
    "gguf": "loopus_test_io_pycheck_gguf/ours.gguf",
    "gguf_typed": "loopus_test_io_gguf_rt/rt.gguf",
}
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "writers.json")


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def bf16_to_f32(raw: bytes) -> np.ndarray:
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def check_safetensors(path: str) -> dict:
    import safetensors
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
    assert meta == {"format": "pt", "by": "loopus"}, meta
    blob = open(path, "rb").read()
    tensors = dict(safetensors.deserialize(blob))
    assert sorted(tensors) == ["x.bf16", "x.f16", "x.f32", "x.i32"], sorted(tensors)
    want = {
        "x.f32": ("F32", [2, 3], (np.arange(6, dtype=np.float32) * np.float32(0.5) - np.float32(1)).tobytes()),
        "x.f16": ("F16", [4], (np.arange(4, dtype=np.float32) + np.float32(0.25)).astype(np.float16).tobytes()),
        "x.i32": ("I32", [2], np.array([-3, 4], dtype="<i4").tobytes()),
    }
    for name, (dtype, shape, raw) in want.items():
        t = tensors[name]
        assert t["dtype"] == dtype and list(t["shape"]) == shape, (name, t["dtype"], t["shape"])
        assert bytes(t["data"]) == raw, name
    bf = tensors["x.bf16"]
    assert bf["dtype"] == "BF16" and list(bf["shape"]) == [3, 1], bf
    assert bf16_to_f32(bytes(bf["data"])).tolist() == [0.0, -2.0, -4.0]
    # the numpy framework agrees with the raw view for the types numpy has
    with safe_open(path, framework="numpy") as f:
        assert np.array_equal(f.get_tensor("x.f32").reshape(-1), np.frombuffer(want["x.f32"][2], np.float32))
        assert f.get_tensor("x.i32").tolist() == [-3, 4]
    return {
        "metadata": meta,
        "tensors": [
            {"name": n, "dtype": tensors[n]["dtype"], "shape": list(tensors[n]["shape"]),
             "data_fnv1a64": fnv1a64(bytes(tensors[n]["data"]))}
            for n in sorted(tensors)
        ],
        "reader": f"safetensors {safetensors.__version__}",
    }


def field_value(field, gguf):
    """A field's value as the reader decodes it; strings that are not UTF-8 as {"hex": ...}."""
    T = gguf.GGUFValueType

    def scalar(t, part):
        if t == T.STRING:
            raw = bytes(part)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return {"hex": raw.hex()}
        v = part.tolist()[0]
        if t in (T.FLOAT32, T.FLOAT64):
            return float(v)
        if t == T.BOOL:
            return bool(v)
        return int(v)

    if field.types[0] != T.ARRAY:
        return scalar(field.types[0], field.parts[field.data[0]])
    if len(field.types) > 1 and field.types[1] == T.ARRAY:
        return None  # nested arrays: checked separately on the raw parts
    return [scalar(field.types[1], field.parts[i]) for i in field.data]


def gguf_summary(path: str) -> tuple:
    import gguf

    r = gguf.GGUFReader(path)
    kv = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's own header pseudo-fields
        types = [t.name for t in field.types]
        if types == ["ARRAY"]:  # an empty array: the reader leaves out its element type, read it from the part
            types.append(gguf.GGUFValueType(int(field.parts[3][0])).name)
        kv[name] = {"types": types, "value": field_value(field, gguf)}
    tensors = [
        {"name": t.name, "dtype": t.tensor_type.name, "shape": [int(x) for x in t.shape],
         "data_fnv1a64": fnv1a64(np.asarray(t.data).tobytes())}
        for t in r.tensors
    ]
    return r, kv, tensors


def check_gguf(path: str) -> dict:
    import gguf

    r, kv, tensors = gguf_summary(path)
    assert list(kv) == ["general.architecture", "llama.block_count", "llama.attention.layer_norm_rms_epsilon",
                        "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"], list(kv)
    assert kv["general.architecture"] == {"types": ["STRING"], "value": "llama"}
    assert kv["llama.block_count"] == {"types": ["UINT32"], "value": 2}
    assert kv["llama.attention.layer_norm_rms_epsilon"] == {"types": ["FLOAT32"], "value": float(np.float32(1e-5))}
    assert kv["tokenizer.ggml.tokens"] == {"types": ["ARRAY", "STRING"], "value": ["<unk>", "\u2581hi"]}
    assert kv["tokenizer.ggml.token_type"] == {"types": ["ARRAY", "INT32"], "value": [2, 1]}
    t = {x.name: x for x in r.tensors}
    assert [x.name for x in r.tensors] == ["a", "b"]
    a = t["a"]
    assert a.tensor_type == gguf.GGMLQuantizationType.F32 and list(a.shape) == [32, 2]
    assert np.array_equal(np.asarray(a.data).reshape(-1), np.arange(64, dtype=np.float32) * 0.5 - 3)
    b = t["b"]
    assert b.tensor_type == gguf.GGMLQuantizationType.F16 and list(b.shape) == [3]
    assert np.array_equal(np.asarray(b.data).reshape(-1), (np.arange(3) + 0.5).astype(np.float16))
    return {"kv": kv, "tensors": tensors, "reader": f"gguf {gguf_version()}"}


def check_gguf_typed(path: str) -> dict:
    """The file of "GgufWriter typed round trip": every GGUF value type, and f32/f16/bf16/q8_0/i32/empty tensors."""
    import gguf

    r, kv, tensors = gguf_summary(path)
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    want = {
        "general.architecture": (["STRING"], "llama"),
        "t.u8": (["UINT8"], 250),
        "t.i8": (["INT8"], -7),
        "t.u16": (["UINT16"], 65535),
        "t.i16": (["INT16"], -32768),
        "t.u32": (["UINT32"], 4294967295),
        "t.i32": (["INT32"], -1),
        "t.u64": (["UINT64"], 18446744073709551615),
        "t.i64": (["INT64"], -9223372036854775808),
        "t.f32": (["FLOAT32"], f32(1e-5)),
        "t.f64": (["FLOAT64"], 1.0 / 3.0),
        "t.bool": (["BOOL"], False),
        "t.bytes": (["STRING"], {"hex": "80007a"}),
        "t.arr_str": (["ARRAY", "STRING"], ["\u2581the", "", "x"]),
        "t.arr_f32": (["ARRAY", "FLOAT32"], [1.5, f32(-0.1)]),
        "t.arr_i32": (["ARRAY", "INT32"], [-1, 2]),
        "t.arr_u32": (["ARRAY", "UINT32"], [7]),
        "t.arr_u8": (["ARRAY", "UINT8"], []),
        "t.arr_i64": (["ARRAY", "INT64"], [-(1 << 40)]),
        "t.arr_u64": (["ARRAY", "UINT64"], [1 << 63]),
        "t.arr_f64": (["ARRAY", "FLOAT64"], [0.1]),
        "t.arr_bool": (["ARRAY", "BOOL"], [True, True, False]),
        "t.nested": (["ARRAY", "ARRAY"], None),
        "t.json_u": (["UINT32"], 5),
        "t.json_i": (["INT32"], -5),
        "t.json_big": (["UINT64"], 1 << 40),
        "t.replaced": (["UINT32"], 2),
    }
    assert list(kv) == list(want), list(kv)
    for k, (types, value) in want.items():
        assert kv[k]["types"][: len(types)] == types, (k, kv[k]["types"])
        assert kv[k]["value"] == value and type(kv[k]["value"]) is type(value), (k, kv[k]["value"], value)
    # t.nested: [[1, 2], []] as arrays of u16, read from the raw parts
    # (the reader's generic decoding does not cover arrays of arrays)
    raw = open(path, "rb").read()
    nested = r.fields["t.nested"]
    start = nested.offset
    end = start + sum(np.asarray(p).nbytes for p in nested.parts)
    body = raw[start:end]
    key = b"t.nested"
    assert body[8:8 + len(key)] == key
    rest = body[8 + len(key):]
    A, U16 = 9, 2
    expect = np.array([A], "<u4").tobytes() + np.array([A], "<u4").tobytes() + np.array([2], "<u8").tobytes()
    expect += np.array([U16], "<u4").tobytes() + np.array([2], "<u8").tobytes() + np.array([1, 2], "<u2").tobytes()
    expect += np.array([U16], "<u4").tobytes() + np.array([0], "<u8").tobytes()
    assert rest == expect, rest.hex()
    kv["t.nested"]["value"] = [[1, 2], []]

    t = {x.name: x for x in r.tensors}
    assert [x.name for x in r.tensors] == ["w.f32", "w.f16", "w.bf16", "w.q8", "w.i32", "w.empty"]
    Q = gguf.GGMLQuantizationType

    def check(name, qtype, shape):
        x = t[name]
        assert x.tensor_type == qtype and [int(s) for s in x.shape] == shape, (name, x.tensor_type, x.shape)
        return np.asarray(x.data).tobytes()

    got = np.frombuffer(check("w.f32", Q.F32, [64, 3]), np.float32)
    assert np.array_equal(got, np.arange(192, dtype=np.float32) * np.float32(0.125) - np.float32(7))
    got = np.frombuffer(check("w.f16", Q.F16, [10]), np.float16)
    assert np.array_equal(got, (np.arange(10, dtype=np.float32) / np.float32(3)).astype(np.float16))
    assert bf16_to_f32(check("w.bf16", Q.BF16, [3, 2])).tolist() == [i * -7.25 for i in range(6)]
    q8 = check("w.q8", Q.Q8_0, [64, 1])
    assert q8 == bytes((i * 37 + 1) & 0xFF for i in range(68)), q8.hex()
    assert np.frombuffer(check("w.i32", Q.I32, [3]), "<i4").tolist() == [-5, 0, 5]
    assert t["w.empty"].tensor_type == Q.F32 and int(t["w.empty"].n_elements) == 0
    assert [int(s) for s in t["w.empty"].shape] == [4, 0], t["w.empty"].shape
    return {"kv": kv, "tensors": tensors, "reader": f"gguf {gguf_version()}"}


def gguf_version() -> str:
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:  # pragma: no cover
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the C++ tests left the files")
    ap.add_argument("--write", action="store_true", help="write tests/golden/writers.json when all checks pass")
    a = ap.parse_args()
    checks = {"safetensors": check_safetensors, "gguf": check_gguf, "gguf_typed": check_gguf_typed}
    out = {}
    for key, rel in FILES.items():
        path = os.path.join(a.tmp, rel)
        entry = checks[key](path)
        blob = open(path, "rb").read()
        entry = {"file": rel, "size": len(blob), "fnv1a64": fnv1a64(blob), **entry}
        out[key] = entry
        print(f"ok: {path} ({len(blob)} bytes, fnv1a64 {entry['fnv1a64']}, {entry['reader']})")
    if a.write:
        golden = {
            "about": "Verdict of tests/reference/check_writers.py: these files, written by the loopus C++ tests, "
                     "were read with the reference gguf / safetensors packages and every value checked.",
            "files": out,
        }
        with open(GOLDEN, "w") as f:
            json.dump(golden, f, indent=1, ensure_ascii=False, sort_keys=False)
            f.write("\n")
        print(f"wrote {os.path.normpath(GOLDEN)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
