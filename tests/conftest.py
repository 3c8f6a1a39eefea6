"""Shared test machinery: the backends under test and array conversion.

Every differential test is parametrised over BACKENDS, the available non-reference backends,
so a new backend gets the whole suite by registering itself in fastconv.dispatch. Inputs are
built as NumPy float64/float32 arrays; `call` moves them to the backend's array library and
brings results back as NumPy.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastconv
from fastconv import dispatch

# Import the installed package, never a source tree without the extension.
assert os.path.basename(os.path.dirname(fastconv.__file__)) == "fastconv"

AVAILABLE = {name for name, why in fastconv.backends().items() if why is None}
BACKENDS = [b for b in ("cpp", "numba", "cupy") if b in AVAILABLE]
CPU_BACKENDS = [b for b in BACKENDS if dispatch._REGISTRY[b][1] == "numpy"]


def unavailable(name):
    return fastconv.backends()[name]


def to_backend(backend, a):
    if a is None or not isinstance(a, np.ndarray):
        return a
    if dispatch._REGISTRY[backend][1] == "cupy":
        import cupy

        return cupy.asarray(a)
    return a


def to_numpy(a):
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(to_numpy(e) for e in a)
    if isinstance(a, np.ndarray):
        return a
    return a.get()  # cupy


def call(backend, fn, *args, **kwargs):
    """fn(*args, backend=backend, **kwargs) with array arguments moved to the backend's library."""
    args = [to_backend(backend, a) for a in args]
    kwargs = {k: to_backend(backend, v) for k, v in kwargs.items()}
    return to_numpy(fn(*args, backend=backend, **kwargs))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
