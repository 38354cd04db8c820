#!/usr/bin/env bash
# Harvest throughput, as BENCHMARKS.md reports it: for each slot count,
# starts the services with one worker per tree role (generator, verifier,
# refiner) and that many slots in each (its own CHORUS_VAR and journal),
# harvests N GSM8K questions from OFFSET on with branching B, and reports
# trees per hour, nodes per second, positives and pairs per question, and the
# prompt tokens the workers' caches supplied. OFFSET is 300 or more: questions
# 301 on are the split for harvesting (datasets/gsm8k/README.md).
# Settings: SLOTS ("1 4"), N (20), OFFSET (300), BRANCHING (3), CONCURRENCY (4),
# SEED (1), MODEL (every tree role's model; default the config's models),
# OUT (var/bench-harvest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
SLOTS="${SLOTS:-1 4}"; N="${N:-20}"; BRANCHING="${BRANCHING:-3}"; CONCURRENCY="${CONCURRENCY:-4}"; SEED="${SEED:-1}"; OFFSET="${OFFSET:-300}"
[ -n "${MODEL:-}" ] && export CHORUS_MODEL="$MODEL" GENERATOR_MODEL="$MODEL" VERIFIER_MODEL="$MODEL" REFINER_MODEL="$MODEL"
OUT="${OUT:-var/bench-harvest}"
DATA=datasets/gsm8k/test.jsonl
CHORUS=.build/release/chorus
mkdir -p "$OUT"
export GENERATOR_WORKERS=1 VERIFIER_WORKERS=1 REFINER_WORKERS=1 CRITIC_WORKERS=0 MEMORY_WORKERS=0 KVINDEX_WORKERS=0

for slots in $SLOTS; do
  echo "== $slots slot(s) per worker" >&2
  export CHORUS_VAR="$PWD/$OUT/var-$slots"
  export CHORUS_JOURNAL="$CHORUS_VAR/journal.sqlite"
  export GENERATOR_SLOTS=$slots VERIFIER_SLOTS=$slots REFINER_SLOTS=$slots
  rm -rf "$CHORUS_VAR" "$OUT/harvest-$slots"
  ./deploy/up.sh >&2
  trap './deploy/down.sh >&2' EXIT
  start=$(date +%s.%N)
  "$CHORUS" harvest --dataset "$DATA" --offset "$OFFSET" --limit "$N" --branching "$BRANCHING" --seed "$SEED" --concurrency "$CONCURRENCY" \
    --out "$OUT/harvest-$slots" >&2
  end=$(date +%s.%N)
  ./deploy/down.sh >&2
  trap - EXIT
  python3 - "$OUT/harvest-$slots" "$start" "$end" "$slots" "$CHORUS_JOURNAL" <<'PY'
import json, sqlite3, sys
root, start, end, slots, journal = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
prompt = reused = 0
for (record,) in sqlite3.connect(journal).execute("SELECT record FROM stages"):
    result = json.loads(record).get("result") or {}
    prompt += result.get("prompt_tokens", 0)
    reused += result.get("reused_prompt_tokens") or 0
wall = end - start
trees = [json.loads(l) for l in open(f"{root}/trees.jsonl")]
summary = json.load(open(f"{root}/summary.json"))
nodes = sum(len(t["nodes"]) for t in trees)
q = max(1, summary["questions"])
print(json.dumps({
    "slots": int(slots), "wall_seconds": round(wall, 1), "trees": len(trees),
    "trees_per_hour": round(len(trees) * 3600 / wall, 1), "nodes_per_second": round(nodes / wall, 2),
    "positives_per_question": {r: round(v / q, 2) for r, v in summary["positives"].items()},
    "pairs_per_question": {r: round(v / q, 2) for r, v in summary["pairs"].items()},
    "mean_leaf_reward": round(summary["mean_leaf_reward"], 3),
    "prompt_tokens": prompt, "reused_prompt_tokens": reused,
}, sort_keys=True))
PY
done
