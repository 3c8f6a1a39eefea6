#!/usr/bin/env bash
# Developer build: compile fastconv._C into build/dev and drop it into src/fastconv/, so that
# `PYTHONPATH=src python ...` runs the working tree without reinstalling. The copy is
# renamed into place so running processes keep their mapped old copy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build build/dev -j2
so=$(ls build/dev/_C*.so)
cp "$so" "src/fastconv/.$(basename "$so").tmp"
mv "src/fastconv/.$(basename "$so").tmp" "src/fastconv/$(basename "$so")"
echo "built $(basename "$so")"
