#!/usr/bin/env python3
"""Small synthetic models of the architectures no installed model covers, and
llama.cpp's outputs for them, into Tests/InferenceTests/Fixtures/synthetic/:

- llama3: `llama` with Llama 3's RoPE scaling as a `rope_freqs` tensor and the
  `llama-bpe` pre-tokenizer;
- qwen2: Q/K/V biases, NeoX RoPE, the `qwen2` pre-tokenizer;
- qwen3: per-head Q/K RMSNorm, a head width of its own (attention wider than
  the model), NeoX RoPE;
- llama2: `llama` with a SentencePiece-style vocabulary (Gemma's first 2000
  tokens: scores, byte tokens) and the defaults of such files, a space before
  the text and BOS first (Llama 2 and Mistral files), Q4_K_M only.

Each has random weights (seeded; scaled so that the logits are peaked enough
for greedy tokens to have clear margins) and a real tokenizer's vocabulary:
SmolLM2's byte-level BPE cut to its first 512 tokens and the merges among
them, plus a few multi-digit tokens. One block of width 256 (so every matrix can take a K-quant), written in
F32 and quantised by llama.cpp's llama-quantize to Q4_K_M, Q5_K_M, Q6_K and
Q8_0. For each quantised file, NAME-TYPE.jsonl holds llama.cpp's greedy tokens
and margins (scripts/make_model_fixtures.py's format); tokenizer-PRE.jsonl
holds llama.cpp's tokens of every text of the Gemma tokenizer fixture with the
llama-bpe and qwen2 pre-tokenizers.

    scripts/build-llama-bench.sh      # llama-quantize, libllama, the bindings
    python3 scripts/make_synthetic_models.py models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import gguf

sys.path.insert(0, os.path.dirname(__file__))
import make_model_fixtures as fixtures  # noqa: E402

OUT = os.path.join(fixtures.FIXTURES, "synthetic")
QUANTIZE = os.path.join(fixtures.LLAMA, "build", "bin", "llama-quantize")
VOCAB = 512
TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the mountains,",
    "def fibonacci(n):\n    return n",
    "Q: If a train travels 60 miles per hour for 3 hours, how far does it go?\nA:",
    "Janet's ducks lay 16 eggs per day.",
    "The three primary colors are",
    "In 1969, the first humans walked on",
    "A list of prime numbers: 2, 3, 5, 7,",
]


def smollm_vocabulary(path):
    """The first VOCAB tokens of SmolLM2's vocabulary, their types, and the merges among them."""
    r = gguf.GGUFReader(path)
    f = r.fields
    def strings(key):
        field = f[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    tokens = strings("tokenizer.ggml.tokens")[:VOCAB]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data][:VOCAB]
    ids = set(tokens)
    merges = [m for m in strings("tokenizer.ggml.merges") if m.split(" ", 1)[0] in ids and m.split(" ", 1)[1] in ids
              and m.replace(" ", "", 1) in ids]
    # SmolLM2 splits every digit, so its vocabulary has no multi-digit token;
    # a few make the pre-tokenizers' digit rules (groups of three, or single) visible.
    for merge in ["1 2", "2 3", "3 4", "12 3", "23 4", "2 0", "2 4", "20 24", "4 5", "45 6", "9 9", "99 9"]:
        merges.append(merge)
        tokens.append(merge.replace(" ", ""))
        types.append(1)
    return tokens, types, merges


def gemma_vocabulary(path, count=2000):
    """The first `count` tokens of Gemma's SentencePiece vocabulary: texts, scores, types."""
    f = gguf.GGUFReader(path).fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.tokens"].data[:count]]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data[:count]]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data[:count]]
    return tokens, types, scores


def llama3_factors(base, dim, factor=8.0, low=1.0, high=4.0, original_context=64):
    """Llama 3.1's rope_freqs as convert_hf_to_gguf computes them (with a short
    original context, so that scaling changes frequencies a short text uses)."""
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / (base ** (i / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < original_context / high:
            out.append(1.0)
        elif wavelen > original_context / low:
            out.append(factor)
        else:
            smooth = (original_context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


SPECS = {
    "llama3": dict(arch="llama", pre="llama-bpe", heads=4, kv_heads=2, head_dim=64, rope_base=500000.0, neox=False),
    "qwen2": dict(arch="qwen2", pre="qwen2", heads=4, kv_heads=2, head_dim=64, rope_base=1000000.0, biases=True),
    "qwen3": dict(arch="qwen3", pre="qwen2", heads=4, kv_heads=2, head_dim=128, rope_base=1000000.0, head_norms=True),
    "llama2": dict(arch="llama", spm=True, heads=4, kv_heads=2, head_dim=64, rope_base=10000.0, types=["Q4_K_M"]),
}
D, FFN, LAYERS = 256, 256, 1


def write_f32(name, spec, vocab, path):
    rng = np.random.default_rng({"llama3": 1, "qwen2": 2, "qwen3": 3, "llama2": 4}[name])
    a = spec["arch"]
    w = gguf.GGUFWriter(path, a)
    w.add_uint32(f"{a}.block_count", LAYERS)
    w.add_uint32(f"{a}.context_length", 2048)
    w.add_uint32(f"{a}.embedding_length", D)
    w.add_uint32(f"{a}.feed_forward_length", FFN)
    w.add_uint32(f"{a}.attention.head_count", spec["heads"])
    w.add_uint32(f"{a}.attention.head_count_kv", spec["kv_heads"])
    w.add_uint32(f"{a}.attention.key_length", spec["head_dim"])
    w.add_uint32(f"{a}.attention.value_length", spec["head_dim"])
    w.add_uint32(f"{a}.rope.dimension_count", spec["head_dim"])
    w.add_float32(f"{a}.rope.freq_base", spec["rope_base"])
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32("general.file_type", 0)
    if spec.get("spm"):
        # No add_bos_token or add_space_prefix key: the SentencePiece defaults (both on) apply.
        tokens, types, scores = vocab
        w.add_string("tokenizer.ggml.model", "llama")
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.scores", scores)
        w.add_array("tokenizer.ggml.token_type", types)
        w.add_uint32("tokenizer.ggml.bos_token_id", 2)
        w.add_uint32("tokenizer.ggml.eos_token_id", 1)
        w.add_uint32("tokenizer.ggml.unknown_token_id", 3)
    else:
        tokens, types, merges = vocab
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_string("tokenizer.ggml.pre", spec["pre"])
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.token_type", types)
        w.add_array("tokenizer.ggml.merges", merges)
        w.add_uint32("tokenizer.ggml.bos_token_id", 1)
        w.add_uint32("tokenizer.ggml.eos_token_id", 2)
        w.add_bool("tokenizer.ggml.add_bos_token", False)

    def matrix(rows, cols, scale):
        return (rng.standard_normal((rows, cols)) * scale / math.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1 + rng.uniform(-0.2, 0.2, n)).astype(np.float32)

    q, kv = spec["heads"] * spec["head_dim"], spec["kv_heads"] * spec["head_dim"]
    w.add_tensor("token_embd.weight", (rng.standard_normal((len(tokens), D)) * 0.1).astype(np.float32))
    if name == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_factors(spec["rope_base"], spec["head_dim"]))
    for l in range(LAYERS):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", norm(D))
        w.add_tensor(p + "attn_q.weight", matrix(q, D, 1.0))
        w.add_tensor(p + "attn_k.weight", matrix(kv, D, 1.0))
        w.add_tensor(p + "attn_v.weight", matrix(kv, D, 1.0))
        if spec.get("biases"):
            w.add_tensor(p + "attn_q.bias", (rng.standard_normal(q) * 0.5).astype(np.float32))
            w.add_tensor(p + "attn_k.bias", (rng.standard_normal(kv) * 0.5).astype(np.float32))
            w.add_tensor(p + "attn_v.bias", (rng.standard_normal(kv) * 0.5).astype(np.float32))
        if spec.get("head_norms"):
            w.add_tensor(p + "attn_q_norm.weight", norm(spec["head_dim"]))
            w.add_tensor(p + "attn_k_norm.weight", norm(spec["head_dim"]))
        w.add_tensor(p + "attn_output.weight", matrix(D, q, 1.0))
        w.add_tensor(p + "ffn_norm.weight", norm(D))
        w.add_tensor(p + "ffn_gate.weight", matrix(FFN, D, 1.5))
        w.add_tensor(p + "ffn_up.weight", matrix(FFN, D, 1.5))
        w.add_tensor(p + "ffn_down.weight", matrix(D, FFN, 1.0))
    w.add_tensor("output_norm.weight", norm(D))
    # An output matrix of its own with large entries: peaked logits that do not
    # just repeat the input token. Control tokens (end of text among them) get
    # small rows, so greedy text runs its full length.
    output = (rng.standard_normal((len(tokens), D)) * 0.25).astype(np.float32)
    output[[i for i, t in enumerate(types) if t == 3]] *= 0.01
    w.add_tensor("output.weight", output)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(smollm, gemma):
    os.makedirs(OUT, exist_ok=True)
    vocabularies = {"bpe": smollm_vocabulary(smollm), "spm": gemma_vocabulary(gemma)}
    texts = [json.loads(l)["text"] for l in open(os.path.join(fixtures.FIXTURES, "gemma3", "tokenizer.jsonl"), encoding="utf-8")]
    for name, spec in SPECS.items():
        f32 = os.path.join(OUT, f"{name}-F32.gguf")
        write_f32(name, spec, vocabularies["spm" if spec.get("spm") else "bpe"], f32)
        for t in spec.get("types", TYPES):
            out = os.path.join(OUT, f"{name}-{t}.gguf")
            subprocess.run([QUANTIZE, f32, out, t], check=True, capture_output=True)
            model = fixtures.load(out)
            fixtures.write_jsonl(os.path.join(OUT, f"{name}-{t}.jsonl"), fixtures.references(model, PROMPTS, steps=32))
            if t == TYPES[0] and name != "qwen3":
                fixtures.write_jsonl(os.path.join(OUT, f"tokenizer-{spec.get('pre', 'spm-space-prefix')}.jsonl"),
                                     [{"text": x, "ids": fixtures.tokenize(model, x)} for x in texts])
            del model
        os.remove(f32)
    for n in sorted(os.listdir(OUT)):
        print(n, os.path.getsize(os.path.join(OUT, n)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
