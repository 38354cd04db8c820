#!/usr/bin/env python3
"""Writes Tests/InferenceTests/Fixtures/quants/dequant.json: random blocks of
each tensor type Chorus computes with, and their values as dequantised by the
`gguf` package's numpy reference (gguf.quants). Run again to regenerate:

    pip install gguf numpy && python3 scripts/make_quant_fixtures.py
"""
import json, os
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

rng = np.random.default_rng(20261122)
BLOCKS = 24

def scales(n):
    # f16 scales over a realistic range, both signs.
    return (rng.standard_normal(n) * 0.05).astype(np.float16)

def blocks(kind):
    if kind == T.Q8_0:
        out = bytearray()
        for d in scales(BLOCKS):
            out += d.tobytes() + rng.integers(-128, 128, 32, dtype=np.int8).tobytes()
        return bytes(out), 32 * BLOCKS
    if kind == T.Q4_0:
        out = bytearray()
        for d in scales(BLOCKS):
            out += d.tobytes() + rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        return bytes(out), 32 * BLOCKS
    if kind == T.Q4_1:
        out = bytearray()
        for d, m in zip(scales(BLOCKS), scales(BLOCKS)):
            out += d.tobytes() + m.tobytes() + rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        return bytes(out), 32 * BLOCKS
    if kind == T.F16:
        v = (rng.standard_normal(32 * BLOCKS) * 3).astype(np.float16)
        return v.tobytes(), v.size
    if kind == T.F32:
        v = (rng.standard_normal(32 * BLOCKS) * 3).astype(np.float32)
        return v.tobytes(), v.size
    raise ValueError(kind)

cases = []
for kind in (T.F32, T.F16, T.Q8_0, T.Q4_0, T.Q4_1):
    raw, count = blocks(kind)
    values = dequantize(np.frombuffer(raw, dtype=np.uint8), kind).reshape(-1).astype(np.float32)
    assert values.size == count
    cases.append({"type": kind.name, "count": count, "hex": raw.hex(),
                  "values": [float(x) for x in values]})

path = os.path.join(os.path.dirname(__file__), "..", "Tests", "InferenceTests", "Fixtures", "quants", "dequant.json")
with open(path, "w") as f:
    json.dump({"generator": "gguf.quants.dequantize", "cases": cases}, f)
print("wrote", os.path.normpath(path))
