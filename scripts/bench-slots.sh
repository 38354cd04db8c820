#!/usr/bin/env bash
# Slots against one request per worker, as BENCHMARKS.md reports it: for
# each slot count, starts the services with one worker per model role and
# that many slots in each (its own CHORUS_VAR and journal, memory off), runs
# one job alone (its latency), then every GSM8K question at once (wall time,
# jobs per hour, prompt tokens reused), and reads each worker's peak resident
# memory (VmHWM) and CPU time before stopping them.
# Settings: SLOTS ("1 4"), N (30), SAMPLES (3), ROUNDS (2), SEED (1),
# OUT (var/bench-slots).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
SLOTS="${SLOTS:-1 4}"; N="${N:-30}"; SAMPLES="${SAMPLES:-3}"; ROUNDS="${ROUNDS:-2}"; SEED="${SEED:-1}"
OUT="${OUT:-var/bench-slots}"
DATA=datasets/gsm8k/test.jsonl
CHORUS=.build/release/chorus
mkdir -p "$OUT"
export GENERATOR_WORKERS=1 VERIFIER_WORKERS=1 REFINER_WORKERS=1 CRITIC_WORKERS=1 MEMORY_WORKERS=0 KVINDEX_WORKERS=0

for slots in $SLOTS; do
  echo "== $slots slot(s) per worker" >&2
  export CHORUS_VAR="$PWD/$OUT/var-$slots"
  export CHORUS_JOURNAL="$CHORUS_VAR/journal.sqlite"
  export GENERATOR_SLOTS=$slots VERIFIER_SLOTS=$slots REFINER_SLOTS=$slots CRITIC_SLOTS=$slots
  rm -rf "$CHORUS_VAR"
  ./deploy/up.sh >&2
  trap './deploy/down.sh >&2' EXIT
  # One job alone: its latency (a question after the measured ones).
  "$CHORUS" eval --dataset "$DATA" --offset "$N" --limit 1 --samples "$SAMPLES" --rounds "$ROUNDS" --seed "$SEED" \
    --concurrency 1 --no-memory --json > "$OUT/alone-$slots.json"
  # Every question at once.
  "$CHORUS" eval --dataset "$DATA" --limit "$N" --samples "$SAMPLES" --rounds "$ROUNDS" --seed "$SEED" \
    --concurrency "$N" --no-memory --out "$OUT/jobs-$slots.jsonl" --json > "$OUT/load-$slots.json"
  ticks="$(getconf CLK_TCK)"
  for f in "$CHORUS_VAR"/run/*-*.pid; do
    pid="$(cat "$f")"
    # peak resident kB, and CPU seconds used (user + system)
    echo "$(basename "$f" .pid) $(grep VmHWM "/proc/$pid/status" | awk '{print $2}') kB" \
         "$(awk -v t="$ticks" '{printf "%.0f", ($14 + $15) / t}' "/proc/$pid/stat") cpu-s"
  done > "$OUT/memory-$slots.txt"
  ./deploy/down.sh >&2
  trap - EXIT
  echo "alone: $(cat "$OUT/alone-$slots.json")"
  echo "load:  $(cat "$OUT/load-$slots.json")"
  echo "workers (peak resident, CPU used): $(tr '\n' ' ' < "$OUT/memory-$slots.txt")"
done
