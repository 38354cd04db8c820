#!/usr/bin/env python3
"""Writes a tiny Llama GGUF with random f32 weights and the tokenizer of a
real model, for testing the trainer end to end in seconds: it loads in
transformers, trains, converts back with llama.cpp's converter (which
recognises the real tokenizer) and loads in Chorus.

    make_tiny_model.py TOKENIZER_MODEL.gguf OUT.gguf [--hidden 256] [--layers 2] [--seed 0]

The tokenizer (every tokenizer.* key, the chat template included) is copied
from TOKENIZER_MODEL (a Llama-architecture GGUF such as SmolLM2); the rest is
a decoder of `--layers` blocks, 4 attention heads (2 key/value heads), a
feed-forward of twice the width, tied embeddings, weights drawn from
N(0, 0.02^2) with `--seed`. Needs the `gguf` and `numpy` packages (the
trainer's environment has both).
"""
import argparse, sys

import numpy as np
import gguf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer_model")
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.hidden % 64 or a.hidden < 64 or a.layers < 1:
        sys.exit("--hidden must be a multiple of 64, --layers at least 1")
    reader = gguf.GGUFReader(a.tokenizer_model)
    if reader.fields["general.architecture"].contents() != "llama":
        sys.exit(f"{a.tokenizer_model} is not a Llama-architecture model")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    vocab, hidden, ffn, heads, kv_heads = len(tokens), a.hidden, 2 * a.hidden, 4, 2
    head_dim = hidden // heads

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # The tokenizer, key by key, with its own value types.
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, field.contents(), kind, sub_type=field.types[-1])
        else:
            w.add_key_value(name, field.contents(), kind)

    rng = np.random.default_rng(a.seed)

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", normal(vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(a.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", normal(hidden, hidden))
        w.add_tensor(p + "attn_k.weight", normal(kv_heads * head_dim, hidden))
        w.add_tensor(p + "attn_v.weight", normal(kv_heads * head_dim, hidden))
        w.add_tensor(p + "attn_output.weight", normal(hidden, hidden))
        w.add_tensor(p + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", normal(ffn, hidden))
        w.add_tensor(p + "ffn_up.weight", normal(ffn, hidden))
        w.add_tensor(p + "ffn_down.weight", normal(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
