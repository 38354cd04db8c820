#!/usr/bin/env bash
# Stops the gateway and the workers, then the broker: SIGTERM first, SIGKILL after 10 s.
# Accepted jobs are in the broker's journal and resume on the next deploy/up.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h|--help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
stop_pidfile "$RUN/gateway.pid" gateway
for role in "${ALL_ROLES[@]}"; do
  for f in "$RUN/$role"-*.pid; do [ -e "$f" ] && stop_pidfile "$f" "$role worker"; done
done
stop_pidfile "$RUN/broker.pid" broker
say "Chorus is down"
