#!/usr/bin/env python3
"""Writes Tests/InferenceTests/Fixtures/quants/dequant.json: random blocks of
each tensor type Chorus computes with (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 and the K-quants Q2_K to Q6_K), and their values as dequantised by
the `gguf` package's numpy reference (gguf.quants). Run again to regenerate:

    pip install gguf numpy && python3 scripts/make_quant_fixtures.py
"""
import sys
import json, os
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

rng = np.random.default_rng(20261122)
BLOCKS = 24

def scales(n):
    # f16 scales over a realistic range, both signs.
    return (rng.standard_normal(n) * 0.05).astype(np.float16)

def half(v):
    return np.float16(v).tobytes()

def rand_bytes(n):
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

def blocks(kind):
    """Random blocks of `kind`: random quant bits, f16 scales over a realistic range."""
    out = bytearray()
    if kind == T.Q8_0:
        for d in scales(BLOCKS):
            out += d.tobytes() + rng.integers(-128, 128, 32, dtype=np.int8).tobytes()
        return bytes(out), 32 * BLOCKS
    if kind == T.Q4_0:
        for d in scales(BLOCKS):
            out += d.tobytes() + rand_bytes(16)
        return bytes(out), 32 * BLOCKS
    if kind == T.Q4_1:
        for d, m in zip(scales(BLOCKS), scales(BLOCKS)):
            out += d.tobytes() + m.tobytes() + rand_bytes(16)
        return bytes(out), 32 * BLOCKS
    if kind == T.Q5_0:
        for d in scales(BLOCKS):
            out += d.tobytes() + rand_bytes(4) + rand_bytes(16)
        return bytes(out), 32 * BLOCKS
    if kind == T.Q5_1:
        for d, m in zip(scales(BLOCKS), scales(BLOCKS)):
            out += d.tobytes() + m.tobytes() + rand_bytes(4) + rand_bytes(16)
        return bytes(out), 32 * BLOCKS
    super_blocks = 4
    if kind == T.Q2_K:
        for d, m in zip(scales(super_blocks), scales(super_blocks)):
            out += rand_bytes(16) + rand_bytes(64) + d.tobytes() + m.tobytes()
    elif kind == T.Q3_K:
        for d in scales(super_blocks):
            out += rand_bytes(32) + rand_bytes(64) + rand_bytes(12) + d.tobytes()
    elif kind == T.Q4_K:
        for d, m in zip(scales(super_blocks), scales(super_blocks)):
            out += d.tobytes() + m.tobytes() + rand_bytes(12) + rand_bytes(128)
    elif kind == T.Q5_K:
        for d, m in zip(scales(super_blocks), scales(super_blocks)):
            out += d.tobytes() + m.tobytes() + rand_bytes(12) + rand_bytes(32) + rand_bytes(128)
    elif kind == T.Q6_K:
        for d in scales(super_blocks):
            out += rand_bytes(128) + rand_bytes(64) + rng.integers(-128, 128, 16, dtype=np.int8).tobytes() + d.tobytes()
    else:
        if kind == T.F16:
            v = (rng.standard_normal(32 * BLOCKS) * 3).astype(np.float16)
        elif kind == T.F32:
            v = (rng.standard_normal(32 * BLOCKS) * 3).astype(np.float32)
        elif kind == T.BF16:
            # bf16 is the high half of an f32.
            v = ((rng.standard_normal(32 * BLOCKS) * 3).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        else:
            raise ValueError(kind)
        return v.tobytes(), v.size
    return bytes(out), 256 * super_blocks

cases = []
for kind in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
    raw, count = blocks(kind)
    values = dequantize(np.frombuffer(raw, dtype=np.uint8), kind).reshape(-1).astype(np.float32)
    if values.size != count:
        sys.exit(f"{values.size} values dequantised, expected {count}")
    cases.append({"type": kind.name, "count": count, "hex": raw.hex(),
                  "values": [float(x) for x in values]})

path = os.path.join(os.path.dirname(__file__), "..", "Tests", "InferenceTests", "Fixtures", "quants", "dequant.json")
with open(path, "w") as f:
    json.dump({"generator": "gguf.quants.dequantize", "cases": cases}, f)
print("wrote", os.path.normpath(path))
