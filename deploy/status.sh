#!/usr/bin/env bash
# Shows the local Chorus processes and the broker's view: workers per role,
# their state, queue depths and jobs in flight.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h|--help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
printf 'local processes:\n'
if alive "$RUN/broker.pid"; then printf '  broker     pid %s\n' "$(pid_of "$RUN/broker.pid")"; else printf '  broker     not running\n'; fi
if alive "$RUN/gateway.pid"; then printf '  gateway    pid %s (http://%s)\n' "$(pid_of "$RUN/gateway.pid")" "${CHORUS_GATEWAY:-127.0.0.1:8080}"; fi
for role in "${ALL_ROLES[@]}"; do
  for f in $(running "$role"); do printf '  %-10s pid %s (%s)\n' "$role" "$(pid_of "$f")" "$(basename "$f" .pid)"; done
done
printf '\n'
"$BIN/chorus" status --config "$CONF"
