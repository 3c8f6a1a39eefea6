"""Backend registry and selection: argument, use_backend (setter and context manager),
automatic choice by array type; unknown and unavailable backends; FASTCONV_NUM_THREADS;
the C++ kernels' portable fallback (FASTCONV_ISA=generic)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import dispatch


def test_backends_lists_cpp_and_reference_with_reasons_for_the_rest():
    found = fastconv.backends()
    assert list(found) == ["cpp", "numba", "cupy", "reference"]
    assert found["cpp"] is None and found["reference"] is None
    for name, why in found.items():
        assert why is None or (isinstance(why, str) and why), name


def test_selection_order(monkeypatch):
    x = np.ones((1, 1, 4, 4))
    w = np.ones((1, 1, 3, 3))
    seen = []
    real_select = dispatch.select

    def spy(backend, xp):
        module = real_select(backend, xp)
        seen.append(module.__name__.rsplit(".", 1)[-1])
        return module

    monkeypatch.setattr("fastconv.ops.select", spy)
    fastconv.conv2d(x, w)
    assert seen[-1] == "cpp"  # automatic: numpy arrays go to cpp when it is built
    with fastconv.use_backend("reference"):
        fastconv.conv2d(x, w)
        assert seen[-1] == "reference"
        fastconv.conv2d(x, w, backend="cpp")  # the argument wins over use_backend
        assert seen[-1] == "cpp"
    fastconv.conv2d(x, w)
    assert seen[-1] == "cpp"  # the context restored automatic selection
    try:
        fastconv.use_backend("reference")  # as a setter
        fastconv.conv2d(x, w)
        assert seen[-1] == "reference"
    finally:
        fastconv.use_backend(None)


def test_unknown_and_unavailable_backends_are_clear_errors():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown backend 'fortran'; known backends: cpp, numba, cupy, reference"):
        fastconv.conv2d(x, x[:, :, :3, :3], backend="fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        fastconv.use_backend("fortran")
    missing = [n for n, why in fastconv.backends().items() if why is not None]
    for name in missing:
        with pytest.raises(ValueError, match=f"backend '{name}' is not available: .+ Available: cpp"):
            fastconv.conv2d(x, x[:, :, :3, :3], backend=name)


def test_backend_must_take_the_array_type():
    if fastconv.backends()["cupy"] is None:
        pytest.skip("cupy is available here: a numpy array sent to it is tested on CPU-only machines")
    x = np.ones((1, 1, 4, 4))
    dispatch._REGISTRY["fake_gpu"] = ("fastconv.backends.reference", "cupy")
    try:
        with pytest.raises(TypeError, match="backend 'fake_gpu' takes cupy arrays, got numpy arrays"):
            fastconv.conv2d(x, x[:, :, :3, :3], backend="fake_gpu")
    finally:
        del dispatch._REGISTRY["fake_gpu"]
        dispatch._loaded.pop("fake_gpu", None)


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_num_threads_default_from_environment():
    out = _run("import fastconv; print(fastconv.get_num_threads())", FASTCONV_NUM_THREADS="3")
    assert out.stdout.strip() == "3", out.stderr
    bad = _run("import fastconv; fastconv.get_num_threads()", FASTCONV_NUM_THREADS="many")
    assert "FASTCONV_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr


def test_portable_fallback_passes_the_differential_suite():
    """The baseline x86-64 kernels (no AVX2/FMA), forced: the conv and pool suites on cpp."""
    probe = _run("from fastconv import _C; print(_C.isa())", FASTCONV_ISA="generic")
    assert probe.stdout.strip() == "generic", probe.stderr
    here = Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cpp and not torch",
         str(here / "test_conv.py"), str(here / "test_pool.py"), str(here / "test_gradcheck.py")],
        capture_output=True, text=True, env={**os.environ, "FASTCONV_ISA": "generic"}, timeout=900, cwd=here)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
