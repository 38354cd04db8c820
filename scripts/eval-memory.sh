#!/usr/bin/env bash
# Accuracy on GSM8K with memory cold and warmed, as BENCHMARKS.md reports it.
#   cold: memory empty, then the first N test questions (each job still stores
#         itself, so later questions may recall earlier ones);
#   warm: memory emptied, a pass over the WARM questions after those N, then
#         the same N questions again.
# Needs the services up (deploy/up.sh); empties the memory and the kvindex.
# Settings: N (100), WARM (200), SAMPLES (1), ROUNDS (2), SEED (1),
# CONCURRENCY (2), OUT (var/eval-memory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${N:-100}"; WARM="${WARM:-200}"; SAMPLES="${SAMPLES:-1}"; ROUNDS="${ROUNDS:-2}"; SEED="${SEED:-1}"
CONCURRENCY="${CONCURRENCY:-2}"; OUT="${OUT:-var/eval-memory}"
DATA=datasets/gsm8k/test.jsonl
CHORUS=.build/release/chorus
mkdir -p "$OUT"

fresh_memory() {
  ./deploy/scale.sh memory 0 && ./deploy/scale.sh kvindex 0
  rm -rf "${MEMORY_DATABASE:-var/memory.sqlite}" "${MEMORY_DATABASE:-var/memory.sqlite}"-wal \
         "${MEMORY_DATABASE:-var/memory.sqlite}"-shm "${KVINDEX_DIRECTORY:-var/kvindex}"
  ./deploy/scale.sh kvindex 1 && ./deploy/scale.sh memory 1
}

evaluate() { # name, extra arguments
  local name="$1"; shift
  echo "== $name" >&2
  "$CHORUS" eval --dataset "$DATA" --samples "$SAMPLES" --rounds "$ROUNDS" --seed "$SEED" \
    --concurrency "$CONCURRENCY" --out "$OUT/$name.jsonl" --json "$@" > "$OUT/$name.json"
  cat "$OUT/$name.json"
  "$CHORUS" memory stats
}

fresh_memory
evaluate cold --limit "$N"
fresh_memory
evaluate warm-pass --offset "$N" --limit "$WARM"
evaluate warm --limit "$N"
