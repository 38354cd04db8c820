#!/usr/bin/env bash
# One command from a fresh machine to a real answer: installs what is needed
# (deploy/setup.sh), builds, starts the broker and one worker per role
# (deploy/up.sh), and solves a GSM8K question with the generator, verifier,
# refiner and critic. The services keep running; stop them with deploy/down.sh.
set -euo pipefail
set -E
trap 'rc=$?; [ "$BASH_SUBSHELL" -eq 0 ] && printf "demo.sh: error: line %s: \"%s\" failed with status %s (its own message, if any, is above)\n" "$LINENO" "$BASH_COMMAND" "$rc" >&2' ERR
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "${1:-}" in -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
"$DIR/setup.sh"
"$DIR/up.sh"
QUESTION="${1:-}"
if [ -z "$QUESTION" ]; then
  QUESTION="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for \$2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?"
fi
echo "==> solving: $QUESTION"
"$DIR/../.build/release/chorus" solve "$QUESTION" --seed 1
echo "==> the services are still running: deploy/status.sh, deploy/logs.sh ROLE, deploy/down.sh"
