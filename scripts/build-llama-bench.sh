#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, the reference Chorus is measured against,
# into .build-llama/ (git-ignored). The sources come from the PyPI sdist of
# llama-cpp-python, which vendors llama.cpp. Takes about 10 minutes on 2 cores.
# Prints the path of the binary. Needs cmake and a C++ compiler.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
OUT="$ROOT/.build-llama"
BIN="$OUT/build/bin/llama-bench"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$OUT"
if [ ! -d "$OUT/src" ]; then
  echo "==> downloading llama-cpp-python $VERSION sources from PyPI" >&2
  python3 - "$VERSION" "$OUT" <<'PY'
import re, sys, tarfile, urllib.request, io
version, out = sys.argv[1:]
index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
links = re.findall(r'href="([^"]+llama_cpp_python-%s\.tar\.gz)[^"]*"' % re.escape(version), index)
if not links:
    sys.exit("llama-cpp-python %s has no sdist on PyPI" % version)
data = urllib.request.urlopen(links[0]).read()
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    t.extractall(out + "/unpacked")
PY
  mv "$OUT/unpacked/llama_cpp_python-$VERSION/vendor/llama.cpp" "$OUT/src"
  rm -rf "$OUT/unpacked"
fi
echo "==> building llama-bench" >&2
cmake -S "$OUT/src" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$OUT/build" --target llama-bench -j"$(nproc)" >&2
echo "$BIN"
