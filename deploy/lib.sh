# Shared by the deploy scripts: paths, the config, and process helpers.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF="${CHORUS_CONFIG:-$ROOT/deploy/chorus.conf}"
BIN="${CHORUS_BIN:-$ROOT/.build/release}"
# Run-time state (logs, pid files); CHORUS_VAR moves it, e.g. for a second
# deployment from the same checkout.
VAR="${CHORUS_VAR:-$ROOT/var}"
LOGS="$VAR/log"
RUN="$VAR/run"
ROLES=(kvindex memory generator verifier refiner critic)
ALL_ROLES=(kvindex memory generator verifier refiner critic echo)
mkdir -p "$LOGS" "$RUN"

# The config file: KEY=value lines, read by the same rules as the services'
# own reader (ServiceKit's Configuration): a value in quotes is taken as it
# is (so keys with '#' or '=' in them survive); otherwise " #" starts a
# comment. Environment variables win over it.
trim() { local v="$1"; v="${v#"${v%%[![:space:]]*}"}"; printf '%s' "${v%"${v##*[![:space:]]}"}"; }
if [ -f "$CONF" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line="$(trim "$line")"
    case "$line" in ""|\#*) continue ;; esac
    case "$line" in "export "*) line="$(trim "${line#export }")" ;; esac
    case "$line" in *=*) ;; *) continue ;; esac
    key="$(trim "${line%%=*}")"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    [ -n "${!key+x}" ] && continue
    value="$(trim "${line#*=}")"
    if [ "${#value}" -ge 2 ] && { [[ "$value" == \"*\" ]] || [[ "$value" == \'*\' ]]; }; then
      value="${value:1:${#value}-2}"
    elif [[ "$value" == *" #"* ]]; then
      value="$(trim "${value%% #*}")"
    fi
    export "$key=$value"
  done < "$CONF"
fi
export CHORUS_CONFIG="$CONF"

say() { printf '==> %s\n' "$*"; }
fail() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# No silent exit: a command that fails under set -e names itself, its line
# and its status on standard error (fail() above exits without tripping it).
on_error() {
  # Once, from the script itself: not again from each subshell it unwinds.
  [ "$BASH_SUBSHELL" -eq 0 ] || return 0
  printf '%s: error: line %s: "%s" failed with status %s; run it by hand to see why, or report it with the output above\n' \
    "$(basename "$0")" "$2" "$3" "$1" >&2
}
set -E
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

is_role() { local r; for r in "${ALL_ROLES[@]}"; do [ "$r" = "$1" ] && return 0; done; return 1; }

# Pid files hold "PID STARTTIME": the start time (clock ticks after boot, from
# /proc) tells the process that was started from a later one that got its pid.
start_time() { if [ -r "/proc/$1/stat" ]; then sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; fi; }
write_pidfile() { printf '%s %s\n' "$2" "$(start_time "$2")" > "$1"; }
pid_of() { local pid="" rest; read -r pid rest < "$1" 2>/dev/null || true; printf '%s' "$pid"; }

# alive PIDFILE: whether the process in PIDFILE runs, and is the one started
# (same start time, a Chorus program), not another that got its pid since.
alive() {
  [ -f "$1" ] || return 1
  local pid="" start="" exe
  read -r pid start < "$1" 2>/dev/null || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -n "$start" ] && [ -r "/proc/$pid/stat" ] && [ "$(start_time "$pid")" != "$start" ]; then return 1; fi
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  case "$exe" in ""|*/chorus*) return 0 ;; *) return 1 ;; esac
}

# Builds the services when a binary is missing or a source is newer than the
# newest of them (a change relinks at least one). CHORUS_NO_BUILD=1 uses the
# binaries in $BIN as they are.
ensure_built() {
  local newest
  if [ "${CHORUS_NO_BUILD:-0}" = 1 ]; then
    [ -x "$BIN/chorus-broker" ] || fail "no $BIN/chorus-broker (CHORUS_NO_BUILD=1 is set; build with swift build -c release)"
    return
  fi
  # The newest binary, without ls: on a fresh clone there is none, and a
  # failing pipeline would end the calling script under pipefail.
  local f newest=""
  for f in "$BIN"/chorus "$BIN"/chorus-*; do
    [ -x "$f" ] || continue
    if [ -z "$newest" ] || [ "$f" -nt "$newest" ]; then newest="$f"; fi
  done
  if [ -x "$BIN/chorus-broker" ] && [ -n "$newest" ] \
     && [ -z "$(find "$ROOT/Shared" "$ROOT/Services" "$ROOT/Package.swift" -newer "$newest" \( -name '*.swift' -o -name '*.h' -o -name '*.c' -o -name '*.modulemap' \) -print -quit 2>/dev/null || true)" ]; then
    return
  fi
  command -v swift >/dev/null || fail "swift is not on PATH; install Swift 6.1 or newer (https://www.swift.org/install) and run this again"
  if [ -z "$newest" ]; then
    say "building Chorus (swift build -c release; about 25 minutes on 2 cores the first time)"
  else
    say "sources changed since the last build; building (swift build -c release)"
  fi
  # The compiler's own progress lines ([n/m] ...) show how far it is.
  if ! (cd "$ROOT" && swift build -c release); then
    fail "the build failed (the compiler's errors are above); fix them, or run 'swift build -c release' in $ROOT to see them again"
  fi
  [ -x "$BIN/chorus-broker" ] || fail "the build did not produce $BIN/chorus-broker (is CHORUS_BIN set to another folder?)"
}

# stop_pidfile PIDFILE NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pidfile() {
  local file="$1" name="$2" pid i
  if ! alive "$file"; then rm -f "$file"; return; fi
  pid="$(pid_of "$file")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) did not stop in 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# start_gateway: starts chorus-gateway unless CHORUS_GATEWAY is off or it runs.
start_gateway() {
  local address="${CHORUS_GATEWAY:-127.0.0.1:8080}"
  [ "$address" = off ] && return 0
  if alive "$RUN/gateway.pid"; then say "gateway already running (pid $(pid_of "$RUN/gateway.pid"))"; return 0; fi
  local log="$LOGS/gateway.log" before i
  before=$(stat -c %s "$log" 2>/dev/null || echo 0)
  nohup "$BIN/chorus-gateway" --config "$CONF" >>"$log" 2>&1 < /dev/null &
  write_pidfile "$RUN/gateway.pid" $!
  # This start's lines only: the log keeps earlier runs'.
  for i in $(seq 1 50); do
    tail -c +$((before + 1)) "$log" | grep -q "serving http://" && break
    alive "$RUN/gateway.pid" || break
    sleep 0.2
  done
  if ! alive "$RUN/gateway.pid"; then
    rm -f "$RUN/gateway.pid"
    fail "the gateway exited at start: $(tail -c +$((before + 1)) "$log" | grep -E ' error: |Error: ' | tail -n 1) (set CHORUS_GATEWAY in $CONF to a free address, or off)"
  fi
  say "gateway at http://$address (the web page, and the OpenAI-style API under /v1), log $LOGS/gateway.log"
}

# running ROLE: pid files of the running workers of ROLE.
running() {
  local f
  for f in "$RUN/$1"-*.pid; do [ -e "$f" ] && alive "$f" && echo "$f"; done
  return 0
}

# Pid files of the workers this script started, for wait_registered.
STARTED=()

# start_worker ROLE: starts one more worker of ROLE under the first free
# index. The index is claimed by creating its pid file exclusively (noclobber),
# so two scripts starting workers at once never take the same one.
start_worker() {
  local role="$1" i=1 file
  while :; do
    file="$RUN/$role-$i.pid"
    if [ -e "$file" ] && ! alive "$file" && [ -s "$file" ]; then rm -f "$file"; fi
    if (set -C; : > "$file") 2>/dev/null; then break; fi
    i=$((i + 1))
  done
  nohup "$BIN/chorus-$role" --config "$CONF" >>"$LOGS/$role-$i.log" 2>&1 < /dev/null &
  write_pidfile "$file" $!
  STARTED+=("$file")
}

# model_of ROLE: the model file a role's workers load (<ROLE>_MODEL, else CHORUS_MODEL).
model_of() {
  local var model
  var="$(echo "$1" | tr a-z A-Z)_MODEL"
  model="${!var:-${CHORUS_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
  case "$model" in /*) ;; *) model="$ROOT/$model" ;; esac
  echo "$model"
}

is_model_role() { case "$1" in generator|verifier|refiner|critic) return 0 ;; *) return 1 ;; esac; }

# check_model ROLE: fails at once, naming the role and the file, when a model role's model is missing.
check_model() {
  is_model_role "$1" || return 0
  local model
  model="$(model_of "$1")"
  [ -f "$model" ] || fail "no model at $model for the $1 workers; run deploy/setup.sh first, or set $(echo "$1" | tr a-z A-Z)_MODEL"
}

# wait_registered EXPECT SECONDS: waits until the broker lists the workers in
# EXPECT (role=n,...); fails at once, with the reason from its log, when a
# worker this script started exits first (a model that does not load, say).
wait_registered() {
  local expect="$1" seconds="$2" deadline=$((SECONDS + $2)) f role log reason
  while :; do
    "$BIN/chorus" status --config "$CONF" --expect "$expect" >/dev/null 2>&1 && return 0
    for f in "${STARTED[@]}"; do
      alive "$f" && continue
      role="$(basename "$f" .pid)"
      log="$LOGS/$role.log"
      reason="$(grep ' error: ' "$log" 2>/dev/null | tail -n 1 | sed 's/^.* error: //')"
      rm -f "$f"
      fail "the ${role%-*} worker exited before registering: ${reason:-see $log}"
    done
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# scale_role ROLE N: starts or stops workers until N run.
scale_role() {
  local role="$1" want="$2" have files f
  mapfile -t files < <(running "$role")
  have=${#files[@]}
  while [ "$have" -lt "$want" ]; do start_worker "$role"; have=$((have + 1)); done
  if [ "$have" -gt "$want" ]; then
    mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -t- -k2 -n -r)
    for f in "${files[@]:0:$((have - want))}"; do stop_pidfile "$f" "$role worker"; done
  fi
}
