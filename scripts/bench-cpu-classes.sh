#!/usr/bin/env bash
# The inference figures of BENCHMARKS.md "Speed per CPU class", in one run on
# this machine: Chorus beside llama.cpp for each kernel path this CPU can run
# that the table lists, each against the llama.cpp build for that class
# (AVX-512 VNNI: llama.cpp built for this CPU; AVX2: llama.cpp built with
# AVX2, FMA, F16C and BMI2 only, Chorus with CHORUS_KERNELS=avx2).
#
#   scripts/bench-cpu-classes.sh [OUT_DIR]     (default var/bench-classes)
#
# Models: SmolLM2-135M-Instruct Q4_1 (as installed) and requantised to Q4_0
# and Q8_0, Gemma-3-270M Q4_K_M, Qwen2.5-Coder-1.5B-Instruct Q4_K_M. Per
# class and model: prefill (512 tokens) and decode (128) on 1 and 2 threads,
# medians of 3 rounds (scripts/bench-inference.py), and 8 sequences decoded
# together against llama-batched-bench on 1 thread (scripts/bench-parallel.py);
# then chorus bench-memory on 1 and 2 threads. About 40 minutes on 2 cores;
# nothing else should run meanwhile. Writes one Markdown file per table into
# OUT_DIR and prints where.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
OUT="${1:-$ROOT/var/bench-classes}"
mkdir -p "$OUT"
CHORUS="$ROOT/.build/release/chorus"
[ -x "$CHORUS" ] || { echo "build Chorus first: swift build -c release" >&2; exit 1; }
NATIVE="$("$ROOT/scripts/build-llama-bench.sh")"
AVX2="$("$ROOT/scripts/build-llama-bench.sh" --avx2)"
M="$ROOT/.build-llama/models"
mkdir -p "$M"
for t in Q4_0 Q8_0; do
  f="$M/SmolLM2-135M-Instruct.$t.gguf"
  [ -f "$f" ] || "$NATIVE/llama-quantize" --allow-requantize "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$f" "$t" >/dev/null
done
MODELS=("$M/SmolLM2-135M-Instruct.Q4_0.gguf" "$M/SmolLM2-135M-Instruct.Q8_0.gguf" "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        "$ROOT/models/gemma-3-270m-q4_k_m.gguf" "$ROOT/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
{ grep -m1 "model name" /proc/cpuinfo; grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|bmi2|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' '; echo; date -u; git -C "$ROOT" rev-parse --short HEAD; } > "$OUT/machine.txt"
best="$("$CHORUS" models --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print((d[0] if isinstance(d, list) else d).get("kernels","?"))' || echo '?')"
classes=("avx2:$AVX2")
case "$best" in avx512-vnni) classes=("avx512-vnni:$NATIVE" "${classes[@]}") ;; esac
for class in "${classes[@]}"; do
  kernels="${class%%:*}" bin="${class#*:}"
  for model in "${MODELS[@]}"; do
    name="$(basename "$model" .gguf)"
    echo "==> $kernels $name: prefill and decode" >&2
    python3 "$ROOT/scripts/bench-inference.py" --rounds 3 --threads 1 2 --model "$model" --kernels "$kernels" \
      --llama-bench "$bin/llama-bench" > "$OUT/$kernels-$name.md"
    echo "==> $kernels $name: 8 sequences" >&2
    python3 "$ROOT/scripts/bench-parallel.py" --rounds 3 --threads 1 --sequences 1 8 --model "$model" --kernels "$kernels" \
      --llama-bin "$bin" > "$OUT/$kernels-$name-parallel.md"
  done
done
"$CHORUS" bench-memory --threads 1 2 > "$OUT/memory.txt" 2>/dev/null
echo "$OUT"
