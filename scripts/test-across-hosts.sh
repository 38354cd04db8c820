#!/usr/bin/env bash
# Chorus across two hosts, as two network namespaces joined by a veth pair
# (needs root and iproute2): the broker on 10.77.0.1 with CURVE and
# allow-lists, every worker and the client on 10.77.0.2, over tcp. Checks
# that a job with memory completes (the memory worker reaches the broker's
# frontend on the broker's host), that a worker with an unlisted key and one
# using a client key are refused, that an unlisted client is refused, and
# that the broker's metrics count the job. Usage: test-across-hosts.sh BIN_DIR
set -euo pipefail
BIN="${1:?usage: test-across-hosts.sh BIN_DIR}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/chorus-hosts.XXXXXX)"
NB="chb$$" NW="chw$$"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    pkill -9 -f "$WORK/" 2>/dev/null || true
    ip netns del "$NB" 2>/dev/null || true
    ip netns del "$NW" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "across-hosts: FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
step() { echo "across-hosts: $*"; }
wait_for() { # seconds, command...
    local n=$(( $1 * 10 )); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

step "two hosts: $NB (broker, 10.77.0.1) and $NW (workers and client, 10.77.0.2)"
ip netns add "$NB"
ip netns add "$NW"
ip link add "vb$$" type veth peer name "vw$$"
ip link set "vb$$" netns "$NB"
ip link set "vw$$" netns "$NW"
ip -n "$NB" addr add 10.77.0.1/24 dev "vb$$"
ip -n "$NW" addr add 10.77.0.2/24 dev "vw$$"
for ns in "$NB" "$NW"; do ip -n "$ns" link set lo up; done
ip -n "$NB" link set "vb$$" up
ip -n "$NW" link set "vw$$" up
inb() { ip netns exec "$NB" "$@"; }
inw() { ip netns exec "$NW" "$@"; }
# Background processes: ip execs the program, so $! is its pid.
spawn() { # namespace log command...
    local ns="$1" log="$2"; shift 2
    ip netns exec "$ns" "$@" 2>"$log" &
    PIDS+=($!)
}

step "keys: the broker's pair, a client key and a worker key listed, a stranger's not"
mkdir -p "$WORK/clients" "$WORK/workers"
"$BIN/chorus" keygen --out "$WORK/broker" >/dev/null
"$BIN/chorus" keygen --out "$WORK/host2-client" >/dev/null
"$BIN/chorus" keygen --out "$WORK/host2-workers" >/dev/null
"$BIN/chorus" keygen --out "$WORK/stranger" >/dev/null
cp "$WORK/host2-client.pub" "$WORK/clients/"
cp "$WORK/host2-workers.pub" "$WORK/workers/"

cat > "$WORK/broker.conf" <<CONF
CHORUS_FRONTEND=tcp://10.77.0.1:5555
CHORUS_BACKEND=tcp://10.77.0.1:5556
CHORUS_EVENTS=tcp://10.77.0.1:5557
CHORUS_JOURNAL=$WORK/journal.sqlite
CHORUS_CURVE_SECRET_KEY_FILE=$WORK/broker.key
CHORUS_CLIENT_KEYS=$WORK/clients
CHORUS_WORKER_KEYS=$WORK/workers
CHORUS_METRICS=127.0.0.1:9464
CONF
# Host 2 names no broker address: every service gets --broker, and the
# memory worker must find the frontend on the broker's host by itself.
cat > "$WORK/host2.conf" <<CONF
CHORUS_CURVE_SERVER_KEY_FILE=$WORK/broker.pub
CHORUS_CLIENT_KEY_FILE=$WORK/host2-client.key
CHORUS_WORKER_KEY_FILE=$WORK/host2-workers.key
CHORUS_MODEL=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf
CHORUS_PROMPTS=$ROOT/deploy/prompts
EMBEDDER_MODEL=$ROOT/models/all-minilm-l6-v2
KVINDEX_DIRECTORY=$WORK/kvindex
MEMORY_DATABASE=$WORK/memory.sqlite
GENERATOR_MAX_TOKENS=64
VERIFIER_MAX_TOKENS=48
REFINER_MAX_TOKENS=64
CONF
for v in $(env | grep -o '^CHORUS_[A-Z_]*'); do unset "$v"; done

step "broker on host 1"
spawn "$NB" "$WORK/broker.log" "$BIN/chorus-broker" --config "$WORK/broker.conf"
client() { inw "$BIN/chorus" "$@" --broker tcp://10.77.0.1:5555 --config "$WORK/host2.conf"; }
wait_for 20 client status || fail "the broker did not answer from host 2"

step "workers on host 2"
for role in generator verifier refiner critic kvindex memory; do
    spawn "$NW" "$WORK/$role.log" "$BIN/chorus-$role" --broker tcp://10.77.0.1:5556 --config "$WORK/host2.conf"
done
client status --expect generator=1,verifier=1,refiner=1,critic=1,kvindex=1,memory=1 --wait 90 >/dev/null \
    || fail "the workers did not register"

step "a job with memory, from host 2"
client solve "Tom has 3 apples and buys 4 more. How many apples does he have?" --samples 1 --rounds 1 --seed 7 --json \
    >"$WORK/job.json" 2>"$WORK/solve.log" || fail "the job did not complete"
python3 - "$WORK/job.json" <<'PY' || fail "the job's memory stages did not reach the memory and kvindex workers"
import json, sys
job = json.load(open(sys.argv[1]))
if job["state"] != "done":
    sys.exit(f"the job is {job['state']}")
memory = [s for s in job["stages"] if s["role"] == "memory"]
if not memory or any((s.get("memory") or {}).get("error") for s in memory):
    sys.exit(f"memory stages: {memory}")
print("across-hosts: job", job["id"], "done; memory stages:", [s["stage"] for s in memory])
PY

step "an unlisted worker key and a client key used by a worker are refused"
for key in stranger host2-client; do
    CHORUS_WORKER_KEY_FILE="$WORK/$key.key" spawn "$NW" "$WORK/echo-$key.log" \
        "$BIN/chorus-echo" --broker tcp://10.77.0.1:5556 --config "$WORK/host2.conf"
done
wait_for 15 grep -q "refused this key" "$WORK/echo-stranger.log" || fail "a worker with an unlisted key was not told it was refused"
wait_for 15 grep -q "refused this key" "$WORK/echo-host2-client.log" || fail "a worker with a client key was not told it was refused"
client status --json | python3 -c 'import json,sys; w=json.load(sys.stdin)["workers"]; sys.exit(str(w) if [x for x in w if x["role"]=="echo"] else 0)' \
    || fail "a refused worker registered"
grep -q "refused a backend connection" "$WORK/broker.log" || fail "the broker did not log the refusal"

step "an unlisted client is refused, and told so"
if CHORUS_CLIENT_KEY_FILE="$WORK/stranger.key" client status >"$WORK/stranger.out" 2>&1; then fail "an unlisted client got a STATUS"; fi
grep -q "refused" "$WORK/stranger.out" || fail "the unlisted client was not told why: $(cat "$WORK/stranger.out")"

step "the broker's metrics count the job"
inb python3 -c 'import sys, urllib.request; t=urllib.request.urlopen("http://127.0.0.1:9464/metrics").read().decode(); sys.exit(0 if "chorus_jobs_done_total 1" in t else t)' \
    || fail "the metrics do not show the job"
step "passed"
