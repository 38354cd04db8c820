#!/usr/bin/env bash
# MALT's loop on a CPU, end to end and measured:
#   1. harvest: `chorus harvest` of GSM8K tuning questions (301 on) with the
#      TEACHER model in the three tree roles (branching 3, 4 slots a worker);
#   2. train: `chorus train` of each role on its own rows, from MODEL: the
#      generator with SFT on its positives, the verifier and the refiner with
#      SFT, then DPO on their pairs when the harvest has any;
#   3. evaluate: scripts/answer-quality.py on the GSM8K measuring questions
#      (1 on), once with MODEL in every role and once with the trained
#      generator, verifier and refiner (the critic stays MODEL), same seeds;
#   4. compare: `chorus compare`, question by question, into OUT/report.txt.
# Each step is skipped when its output exists, so a run that stopped goes on
# where it was (the harvest and the trainer resume themselves).
#
# Settings (environment): MODEL (every role's base, default the 0.5B),
# TEACHER (the harvesting model, default MODEL; the 1.5B distils into MODEL),
# HARVEST (tuning questions, 60), HARVEST_OFFSET (questions skipped, 300 or
# more: the tuning split), BRANCHING (3), MEASURE (measuring questions,
# 100), SAMPLES and ROUNDS (the evaluation's chains a question and refining
# rounds, 3 and 2), EPOCHS (passes over each role's rows, 2), MAX_STEPS (cap
# per stage, 300), DPO_MAX_STEPS (cap of the DPO stage, MAX_STEPS),
# LORA_RANK (16), LR (1e-4), MAX_LENGTH (1024), OUT (var/malt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
MODEL="$(realpath "${MODEL:-models/qwen2.5-coder-0.5b-instruct.gguf}")"
TEACHER="$(realpath "${TEACHER:-$MODEL}")"
HARVEST="${HARVEST:-60}"; HARVEST_OFFSET="${HARVEST_OFFSET:-300}"; BRANCHING="${BRANCHING:-3}"; MEASURE="${MEASURE:-100}"
SAMPLES="${SAMPLES:-3}"; ROUNDS="${ROUNDS:-2}"
EPOCHS="${EPOCHS:-2}"; MAX_STEPS="${MAX_STEPS:-300}"; LORA_RANK="${LORA_RANK:-16}"; LR="${LR:-1e-4}"; MAX_LENGTH="${MAX_LENGTH:-1024}"
DPO_MAX_STEPS="${DPO_MAX_STEPS:-$MAX_STEPS}"
OUT="$(mkdir -p "${OUT:-var/malt}" && realpath "${OUT:-var/malt}")"
CHORUS=.build/release/chorus
[ -x "$CHORUS" ] || { echo "malt-loop: build first (swift build -c release)" >&2; exit 1; }
[ "$MEASURE" -le 300 ] || { echo "malt-loop: MEASURE must be at most 300 (questions past 300 are the tuning split)" >&2; exit 2; }
[ "$HARVEST_OFFSET" -ge 300 ] || { echo "malt-loop: HARVEST_OFFSET must be 300 or more (questions 1-300 measure)" >&2; exit 2; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
seconds() { python3 -c "import time; print(round(time.time() - $1))"; }

# 1. The harvest, with the teacher in every tree role.
H="$OUT/harvest"
if [ ! -f "$H/done" ]; then
  log "harvesting GSM8K $((HARVEST_OFFSET + 1))-$((HARVEST_OFFSET + HARVEST)) with $(basename "$TEACHER"), branching $BRANCHING"
  export CHORUS_VAR="$OUT/var-harvest" CHORUS_JOURNAL="$OUT/var-harvest/journal.sqlite"
  export GENERATOR_WORKERS=1 VERIFIER_WORKERS=1 REFINER_WORKERS=1 CRITIC_WORKERS=0 MEMORY_WORKERS=0 KVINDEX_WORKERS=0
  export GENERATOR_SLOTS=4 VERIFIER_SLOTS=4 REFINER_SLOTS=4
  export CHORUS_MODEL="$TEACHER" GENERATOR_MODEL="$TEACHER" VERIFIER_MODEL="$TEACHER" REFINER_MODEL="$TEACHER"
  ./deploy/up.sh >&2
  trap './deploy/down.sh >&2' EXIT
  start=$(date +%s.%N)
  "$CHORUS" harvest --dataset datasets/gsm8k/test.jsonl --offset "$HARVEST_OFFSET" --limit "$HARVEST" --branching "$BRANCHING" --seed 1 \
    --concurrency 4 --out "$H" >&2
  echo "$(seconds "$start")" >> "$H/seconds"
  ./deploy/down.sh >&2
  trap - EXIT
  unset CHORUS_VAR CHORUS_JOURNAL CHORUS_MODEL GENERATOR_MODEL VERIFIER_MODEL REFINER_MODEL
  touch "$H/done"
fi
log "harvest: $(tr -d '\n ' < "$H/summary.json")"

# 2. Each role trained on its own rows.
mkdir -p "$OUT/models"
rows() { local n=0; [ -f "$1" ] && n=$(grep -c . "$1" || true); echo "${n:-0}"; }
steps_for() { local n=$(( $1 * EPOCHS )) cap=${2:-$MAX_STEPS}; [ "$n" -gt "$cap" ] && n=$cap; [ "$n" -lt 1 ] && n=1; echo "$n"; }
for role in generator verifier refiner; do
  out="$OUT/models/$role.gguf"
  # Done when chorus train printed its <ROLE>_MODEL= line (it did not when its checks failed).
  [ -s "$OUT/models/$role.env" ] && { log "$role: trained already ($out)"; continue; }
  [ -f "$out" ] && { log "$role: $out is from a run whose checks failed; training again"; rm -f "$out" "$out.json"; }
  sft=$(rows "$H/sft/$role.jsonl"); pairs=$(rows "$H/dpo/$role.jsonl")
  if [ "$sft" -eq 0 ]; then log "$role: no positives in the harvest, keeps the base model"; continue; fi
  args=(--role "$role" --data "$H/sft" --base "$MODEL" --out "$out" --steps "$(steps_for "$sft")" --lora-rank "$LORA_RANK" --lr "$LR"
        --max-length "$MAX_LENGTH" --seed 1)
  if [ "$role" != generator ] && [ "$pairs" -gt 0 ]; then args+=(--dpo "$H/dpo" --dpo-steps "$(steps_for "$pairs" "$DPO_MAX_STEPS")"); fi
  log "$role: training on $sft positives and $([ "$role" != generator ] && echo "$pairs" || echo 0) pairs"
  "$CHORUS" train "${args[@]}" > "$OUT/models/$role.env"
done

# 3. The same measuring questions, the same seeds: base roles, then trained ones.
if ! grep -qs _MODEL= "$OUT"/models/*.env; then
  log "no role had positives to train on: harvest more questions (HARVEST) or with a stronger TEACHER"
  exit 3
fi
if [ ! -f "$OUT/base/report.json" ]; then
  log "evaluating the base team on GSM8K 1-$MEASURE"
  python3 scripts/answer-quality.py --model "$MODEL" --offset 0 --limit "$MEASURE" --samples "$SAMPLES" --rounds "$ROUNDS" --out "$OUT/base" >&2
fi
if [ ! -f "$OUT/trained/report.json" ]; then
  extra=()
  for role in generator verifier refiner; do
    [ -s "$OUT/models/$role.env" ] && extra+=(--extra "$(grep _MODEL= "$OUT/models/$role.env")")
  done
  log "evaluating the trained team on GSM8K 1-$MEASURE (${#extra[@]} trained roles)"
  python3 scripts/answer-quality.py --model "$MODEL" --offset 0 --limit "$MEASURE" --samples "$SAMPLES" --rounds "$ROUNDS" --out "$OUT/trained" "${extra[@]}" >&2
fi

# 4. Question by question.
{
  echo "MALT's loop: base $(basename "$MODEL"), harvested by $(basename "$TEACHER")"
  echo "settings: HARVEST=$HARVEST HARVEST_OFFSET=$HARVEST_OFFSET BRANCHING=$BRANCHING MEASURE=$MEASURE SAMPLES=$SAMPLES ROUNDS=$ROUNDS" \
       "EPOCHS=$EPOCHS MAX_STEPS=$MAX_STEPS DPO_MAX_STEPS=$DPO_MAX_STEPS LORA_RANK=$LORA_RANK LR=$LR MAX_LENGTH=$MAX_LENGTH"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores," \
       "$(grep -qw avx512_vnni /proc/cpuinfo && echo 'AVX-512 VNNI' || (grep -qw avx2 /proc/cpuinfo && echo 'AVX2, no AVX-512 VNNI' || echo 'no AVX2'))"
  echo "harvest: $(tr -d '\n ' < "$H/summary.json"), $(awk '{s+=$1} END {print s}' "$H/seconds") s of harvesting"
  for role in generator verifier refiner; do
    [ -f "$OUT/models/$role.gguf.json" ] && python3 - "$OUT/models/$role.gguf.json" "$role" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
stages = ", ".join(f"{k.upper()} {v['steps']} steps on {v['rows']} rows, loss {v['first_loss']:.3f} -> {v['last_loss']:.3f}, {v['seconds']:.0f} s"
                   for k, v in r["stages"].items())
print(f"{sys.argv[2]}: {stages}; {r['seconds']:.0f} s in all")
PY
  done
  echo
  echo "base team:"; cat "$OUT/base/report.txt"
  echo; echo "trained team:"; cat "$OUT/trained/report.txt"
  echo; echo "base against trained, question by question:"
  "$CHORUS" compare "$OUT/base/jobs.jsonl" "$OUT/trained/jobs.jsonl"
} > "$OUT/report.txt"
cat "$OUT/report.txt"
