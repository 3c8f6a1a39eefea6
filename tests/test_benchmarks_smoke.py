"""The pytest-benchmark suites in benchmarks/ run (on one tiny shape per op family), so that they
cannot rot while the default test run leaves them out."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import fastconv
from conftest import BACKENDS

REPO = Path(__file__).resolve().parents[1]
TINY = [
    {"name": "tiny conv", "op": "conv2d", "N": 1, "C": 2, "H": 6, "W": 6, "K": 3, "R": 3, "S": 3, "padding": 1},
    {"name": "tiny tconv", "op": "conv_transpose2d", "N": 1, "C": 2, "H": 4, "W": 4, "K": 3, "R": 4, "S": 4,
     "stride": 2, "padding": 1},
    {"name": "tiny maxpool", "op": "max_pool2d", "N": 1, "C": 2, "H": 6, "W": 6, "kernel": 2},
    {"name": "tiny avgpool", "op": "avg_pool2d", "N": 1, "C": 2, "H": 6, "W": 6, "kernel": 3, "stride": 2},
]


def test_benchmark_suites_run(tmp_path):
    shapes = tmp_path / "tiny_shapes.json"
    shapes.write_text(json.dumps({"shapes": TINY}))
    # the child imports the fastconv this process imported, installed or not
    package_root = str(Path(fastconv.__file__).resolve().parents[1])
    env = dict(os.environ, FASTCONV_BENCH_SHAPES=str(shapes), FASTCONV_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "--benchmark-only", "-q", "-p", "no:cacheprovider",
         "--benchmark-warmup=off", "--benchmark-min-rounds=1", "--benchmark-max-time=0.0001",
         f"--benchmark-storage=file://{tmp_path / 'storage'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    impls = len(BACKENDS) + 1  # + torch
    expected = len(TINY) * impls * 2  # forward and backward
    assert re.search(rf"\b{expected} passed\b", proc.stdout), proc.stdout[-2000:]
