#!/usr/bin/env bash
# Starts the Chorus broker, the role workers and the HTTP gateway
# (CHORUS_GATEWAY, default 127.0.0.1:8080; off for none) in the background
# and returns once every worker has registered. Builds first if needed. Logs go to
# var/log, pid files to var/run (CHORUS_VAR moves both). Workers per role:
# <ROLE>_WORKERS in deploy/chorus.conf (default 1). Stop everything with
# deploy/down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

for role in "${ROLES[@]}"; do check_model "$role"; done
ensure_built

if alive "$RUN/broker.pid"; then
  say "broker already running (pid $(pid_of "$RUN/broker.pid"))"
else
  before=$(stat -c %s "$LOGS/broker.log" 2>/dev/null || echo 0)
  nohup "$BIN/chorus-broker" --config "$CONF" >>"$LOGS/broker.log" 2>&1 < /dev/null &
  write_pidfile "$RUN/broker.pid" $!
  # Ready when it answers STATUS. A broker that cannot bind its endpoints
  # (another Chorus on the same ports, say) exits instead: then stop here
  # rather than register workers with someone else's broker.
  deadline=$((SECONDS + 30))
  until "$BIN/chorus" status --config "$CONF" >/dev/null 2>&1; do
    if ! alive "$RUN/broker.pid"; then
      rm -f "$RUN/broker.pid"
      reason="$(tail -c +$((before + 1)) "$LOGS/broker.log" | grep -E ' error: |Error: ' | tail -n 1 || true)"
      fail "the broker exited at start: ${reason:-$(tail -n 1 "$LOGS/broker.log")} (another Chorus using the same endpoints? stop it with deploy/down.sh, with its CHORUS_VAR, or change the endpoints in $CONF)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "the broker (pid $(pid_of "$RUN/broker.pid")) runs but did not answer within 30 s; see $LOGS/broker.log"
    sleep 0.2
  done
  say "broker started (pid $(pid_of "$RUN/broker.pid")), log $LOGS/broker.log"
fi

expect=()
for role in "${ROLES[@]}"; do
  var="$(echo "$role" | tr a-z A-Z)_WORKERS"
  n="${!var:-1}"
  scale_role "$role" "$n"
  expect+=("$role=$n")
  say "$role: $n worker(s)"
done
say "waiting for the workers to register"
if ! wait_registered "$(IFS=,; echo "${expect[*]}")" 120; then
  "$BIN/chorus" status --config "$CONF" >&2 || true
  fail "not every worker registered within 120 s; see $LOGS"
fi
say "Chorus is up: $("$BIN/chorus" status --config "$CONF" --json | grep -c '"worker_id"') workers registered"
start_gateway
