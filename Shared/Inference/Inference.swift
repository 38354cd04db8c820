// Inference: the shared inference core — GGUF files, tokenizers and chat
// templates, a model file per architecture (Llama, Qwen2, Qwen3, Gemma 3),
// sessions with KV caches and batched decoding, sampling, and the sentence
// embedder. It must not know the bus, jobs or roles.
