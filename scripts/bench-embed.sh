#!/usr/bin/env bash
# Sentence-embedding throughput: every GSM8K test question (1,319 texts, one
# per line) through `chorus embed --file`, on 1 and 2 threads; prints the
# median sentences per second of ROUNDS (3) runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${ROUNDS:-3}"
texts="$(mktemp)"; trap 'rm -f "$texts"' EXIT
python3 -c '
import json, sys
for line in open("datasets/gsm8k/test.jsonl"):
    print(" ".join(json.loads(line)["question"].split()))' > "$texts"
for threads in 1 2; do
  rates=()
  for _ in $(seq "$ROUNDS"); do
    rate="$(.build/release/chorus embed --file "$texts" --threads "$threads" 2>&1 >/dev/null | sed -n 's/.*(\([0-9.]*\) per second).*/\1/p')"
    rates+=("$rate")
  done
  median="$(printf '%s\n' "${rates[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  echo "threads $threads: $(wc -l < "$texts") texts, median $median sentences/s (runs: ${rates[*]})"
done
