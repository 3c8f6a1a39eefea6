"""What gets timed: one shape's inputs, and an implementation's forward and backward of it as
zero-argument calls. The same calls serve `python -m fastconv bench` and the pytest-benchmark
suites in benchmarks/.

Forward and backward are what a training step runs: conv forward with bias; conv backward with
every gradient (grad_x, grad_weight, grad_bias); max-pool forward with the indices its backward
needs; pool backward to grad_x. Inputs are made once per shape as NumPy arrays from a fixed seed;
each implementation moves them to its own device once, outside the timed calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv
from .. import dispatch
from .shapes import Shape


@dataclass
class Impl:
    """One implementation of one shape: a fastconv backend or a peer library."""

    name: str  # "cpp", "numba", "cupy", "torch", "torch-cuda"
    kind: str  # "backend" or "peer"
    device: str  # "cpu" or "cuda": how it is timed (CUDA: events, then synchronise)
    forward: Callable[[], object]
    backward: Callable[[], object]

    def call(self, direction: str) -> Callable[[], object]:
        return self.forward if direction == "forward" else self.backward


DIRECTIONS = ("forward", "backward")


def make_inputs(shape: Shape, dtype, seed: int = 0) -> dict[str, np.ndarray]:
    """x, grad_out (the gradient arriving at the op's output) and, for convs, weight and bias."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    arrays = {"x": rng.standard_normal(shape.x_shape, dtype=dtype),
              "grad_out": rng.standard_normal(shape.out_shape, dtype=dtype)}
    if shape.is_conv:
        arrays["weight"] = rng.standard_normal(shape.weight_shape, dtype=dtype)
        arrays["bias"] = rng.standard_normal(shape.bias_shape, dtype=dtype)
    return arrays


def array_library(backend: str) -> str:
    """"numpy" or "cupy": the arrays a fastconv backend takes."""
    return dispatch._REGISTRY[backend][1]


def backend_impl(backend: str, shape: Shape, inputs: dict[str, np.ndarray]) -> Impl:
    """fastconv's public ops on `backend`, through the same entry points users call."""
    if array_library(backend) == "cupy":
        import cupy as xp

        device = "cuda"
    else:
        xp, device = np, "cpu"
    a = {k: xp.asarray(v) for k, v in inputs.items()}
    x, gy, kw = a["x"], a["grad_out"], shape.kwargs
    if shape.op == "conv2d":
        def forward():
            return fastconv.conv2d(x, a["weight"], a["bias"], **kw, backend=backend)

        def backward():
            return fastconv.conv2d_backward(gy, x, a["weight"], a["bias"], **kw, backend=backend)
    elif shape.op == "conv_transpose2d":
        def forward():
            return fastconv.conv_transpose2d(x, a["weight"], a["bias"], **kw, backend=backend)

        def backward():
            return fastconv.conv_transpose2d_backward(gy, x, a["weight"], a["bias"], **kw, backend=backend)
    elif shape.op == "max_pool2d":
        _, indices = fastconv.max_pool2d(x, **kw, return_indices=True, backend=backend)

        def forward():
            return fastconv.max_pool2d(x, **kw, return_indices=True, backend=backend)

        def backward():
            return fastconv.max_pool2d_backward(gy, x, indices, **kw, backend=backend)
    else:
        def forward():
            return fastconv.avg_pool2d(x, **kw, backend=backend)

        def backward():
            return fastconv.avg_pool2d_backward(gy, x, **kw, backend=backend)
    return Impl(backend, "backend", device, forward, backward)
