#!/usr/bin/env bash
# deploy/scale.sh ROLE N: runs exactly N workers of ROLE on this host (starting
# or stopping some), and waits until the broker has them registered.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h|--help|"") sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ]; exit $? ;; esac
role="$1"; n="${2:-}"
is_role "$role" || fail "unknown role '$role' (roles: ${ALL_ROLES[*]})"
[[ "$n" =~ ^[0-9]+$ ]] || fail "N must be a number of workers, got '${n}'"
# One kvindex owns its folder; more would each hold a different graph.
if [ "$role" = kvindex ] && [ "$n" -gt 1 ]; then fail "run at most one kvindex per KVINDEX_DIRECTORY"; fi
[ "$n" -eq 0 ] || check_model "$role"
ensure_built
alive "$RUN/broker.pid" || say "note: no broker is running here (deploy/up.sh starts one)"
scale_role "$role" "$n"
if [ "$n" -gt 0 ] && alive "$RUN/broker.pid"; then
  wait_registered "$role=$n" 120 || fail "the $role workers did not register; see $LOGS/$role-*.log"
fi
say "$role: $(running "$role" | wc -l) worker(s) running"
