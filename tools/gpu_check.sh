#!/usr/bin/env bash
# Run the CuPy backend's share of the test suite and its benchmarks (against cuDNN through the
# machine's PyTorch) on a CUDA machine, using the Python that holds CuPy and PyTorch there.
# Logs and JSON go to ${OUT:-gpu-out}. Usage: bash tools/gpu_check.sh [pytest -k expression]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
  PYTHON=$PY bash tools/dev_build.sh
  "$PY" -m fastconv info
  timeout 120 "$PY" -m fastconv verify
} 2>&1 | tee "$OUT/setup.log"
timeout 400 "$PY" -m pytest -q -p no:cacheprovider -n 8 -k "${1:-cupy}" tests 2>&1 | tee "$OUT/pytest.log" | tail -40
