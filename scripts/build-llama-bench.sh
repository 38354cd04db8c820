#!/usr/bin/env bash
# Builds llama.cpp's tools, the reference Chorus is measured and checked
# against, into .build-llama/ (git-ignored): llama-bench, llama-batched-bench,
# llama-quantize, llama-perplexity, and the shared libraries that the
# llama-cpp-python sources in .build-llama/python use (fixture scripts set
# LLAMA_CPP_LIB_PATH to them). The sources come from the sdist of
# llama-cpp-python (pip download), which vendors llama.cpp. Takes about 12
# minutes on 2 cores. Prints the folder holding the binaries. Needs cmake, a
# C++ compiler and pip.
#
#   scripts/build-llama-bench.sh          built for this CPU (GGML_NATIVE), into build/
#   scripts/build-llama-bench.sh --avx2   AVX2, FMA, F16C and BMI2 only (as on a CPU
#                                         without AVX-512), into build-avx2/: the anchor
#                                         for Chorus's AVX2 kernels on any machine
#   scripts/build-llama-bench.sh --quantize-only
#                                         the sources and llama-quantize alone, into
#                                         build/ (what `chorus train` needs; about 6 minutes)
#   scripts/build-llama-bench.sh --sources-only
#                                         the sources alone (the converter to GGUF), into src/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
OUT="$ROOT/.build-llama"
BUILD="$OUT/build"
CPU_FLAGS=(-DGGML_NATIVE=ON)
case "${1:-}" in
  --quantize-only|--sources-only) ;;
  --avx2) BUILD="$OUT/build-avx2"
          CPU_FLAGS=(-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
                     -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF) ;;
  -h|--help|"") ;;
  *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
esac
BIN="$BUILD/bin"
TOOLS=(llama-bench llama-batched-bench llama-quantize llama-perplexity llama-server)
case "${1:-}" in -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ "${1:-}" = --quantize-only ] && TOOLS=(llama-quantize)
built=1
for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || built=0; done
if [ "$built" -eq 1 ] && [ -d "$OUT/python/llama_cpp" ]; then echo "$BIN"; exit 0; fi
[ "${1:-}" = --sources-only ] || command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$OUT"
if [ ! -d "$OUT/src" ]; then
  echo "==> downloading the llama-cpp-python $VERSION sources (pip download)" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$tmp" >&2 \
    || { echo "pip could not download llama-cpp-python $VERSION" >&2; exit 1; }
  tar -xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$OUT/src"
  rm -rf "$OUT/python"
  mkdir -p "$OUT/python"
  mv "$tmp/llama_cpp_python-$VERSION/llama_cpp" "$OUT/python/llama_cpp"
fi
if [ "${1:-}" = --sources-only ]; then echo "$OUT/src"; exit 0; fi
echo "==> building ${TOOLS[*]}" >&2
cmake -S "$OUT/src" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${CPU_FLAGS[@]}" -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON >&2
if [ "${1:-}" = --quantize-only ]; then
  cmake --build "$BUILD" --target llama-quantize -j"$(nproc)" >&2
else
  cmake --build "$BUILD" --target "${TOOLS[@]}" llama -j"$(nproc)" >&2
fi
echo "$BIN"
