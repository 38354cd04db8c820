#!/usr/bin/env bash
# deploy/logs.sh ROLE [-f]: the last lines of the logs of ROLE (or broker);
# -f keeps following them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h|--help|"") sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ]; exit $? ;; esac
role="$1"; shift
[ "$role" = broker ] || is_role "$role" || fail "unknown role '$role' (broker, ${ALL_ROLES[*]})"
shopt -s nullglob
files=()
for f in "$LOGS/$role".log "$LOGS/$role"-*.log; do [ -f "$f" ] && files+=("$f"); done
[ ${#files[@]} -gt 0 ] || fail "no logs for $role in $LOGS"
exec tail -n 50 "$@" "${files[@]}"
