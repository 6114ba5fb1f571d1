#!/usr/bin/env python3
# Reads the files loopus' GGUF and safetensors writers produced with the reference python readers.
# SPDX-License-Identifier: MIT
"""Cross-check of io::write_safetensors and io::GgufWriter against the reference readers.

1. Run the C++ tests that leave the files behind:
     loopus_tests -tc='*python cross-check*'
   (they write <tmp>/loopus_test_io_pycheck_st/ours.safetensors and
    <tmp>/loopus_test_io_pycheck_gguf/ours.gguf, <tmp> = $TMPDIR or /tmp)
2. python3 tests/reference/check_writers.py [tmp_dir]

Needs: pip install safetensors gguf numpy. CI does not run this; the C++ tests
check our readers against reference-written goldens in tests/golden/.
"""
import os
import sys
import tempfile

import numpy as np


def check_safetensors(path: str) -> None:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "by": "loopus"}, f.metadata()
        assert sorted(f.keys()) == ["x.bf16", "x.f16", "x.f32", "x.i32"], sorted(f.keys())
        # numpy has no bf16: that one is read with torch below
        x32 = f.get_tensor("x.f32")
        assert x32.dtype == np.float32 and x32.shape == (2, 3)
        assert np.array_equal(x32.reshape(-1), np.arange(6, dtype=np.float32) * 0.5 - 1)
        x16 = f.get_tensor("x.f16")
        assert x16.dtype == np.float16 and np.array_equal(x16, (np.arange(4) + 0.25).astype(np.float16))
        xi = f.get_tensor("x.i32")
        assert xi.dtype == np.int32 and xi.tolist() == [-3, 4]
    try:
        import torch
        from safetensors.torch import load_file

        t = load_file(path)
        bf = t["x.bf16"]
        assert bf.dtype == torch.bfloat16 and tuple(bf.shape) == (3, 1)
        assert bf.float().reshape(-1).tolist() == [0.0, -2.0, -4.0]
        print("  bf16 checked with torch")
    except ImportError:
        print("  torch not installed: bf16 tensor not checked")
    print(f"ok: {path}")


def check_gguf(path: str) -> None:
    import gguf

    r = gguf.GGUFReader(path)
    f = r.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.block_count"].types == [gguf.GGUFValueType.UINT32]
    assert f["llama.block_count"].contents() == 2
    assert f["llama.attention.layer_norm_rms_epsilon"].types == [gguf.GGUFValueType.FLOAT32]
    assert abs(f["llama.attention.layer_norm_rms_epsilon"].contents() - 1e-5) < 1e-12
    assert f["tokenizer.ggml.tokens"].contents() == ["<unk>", "\u2581hi"]
    assert f["tokenizer.ggml.token_type"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
    assert f["tokenizer.ggml.token_type"].contents() == [2, 1]
    t = {x.name: x for x in r.tensors}
    assert sorted(t) == ["a", "b"]
    a = t["a"]
    assert a.tensor_type == gguf.GGMLQuantizationType.F32 and list(a.shape) == [32, 2]
    assert np.array_equal(np.asarray(a.data).reshape(-1), np.arange(64, dtype=np.float32) * 0.5 - 3)
    b = t["b"]
    assert b.tensor_type == gguf.GGMLQuantizationType.F16
    assert np.array_equal(np.asarray(b.data).reshape(-1), (np.arange(3) + 0.5).astype(np.float16))
    print(f"ok: {path}")


def main() -> int:
    tmp = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
    check_safetensors(os.path.join(tmp, "loopus_test_io_pycheck_st", "ours.safetensors"))
    check_gguf(os.path.join(tmp, "loopus_test_io_pycheck_gguf", "ours.gguf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
