"""The C++ versions of a training step's elementwise work (ReLU, Adam), for C-contiguous
NumPy float32/float64 arrays. NumPy's versions take several passes and one thread; these
take one pass on every thread. `available(*arrays)` says whether they apply; the autograd
functions and the optimiser fall back to NumPy (or CuPy) where not."""
from __future__ import annotations

import numpy as np

from ._threads import threads_for_elements

try:
    from . import _C
except ImportError:  # the extension is not built: the array-library paths are used
    _C = None


def available(*arrays):
    return _C is not None and all(
        type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous for a in arrays)


def relu(x):
    y = np.empty_like(x)
    _C.relu_forward(x, y, threads_for_elements(x.size))
    return y


def relu_backward(gy, y):
    gx = np.empty_like(gy)
    _C.relu_backward(gy, y, gx, threads_for_elements(gy.size))
    return gx


def adam_update(p, g, m, v, b1, b2, step_size, v_scale, eps):
    _C.adam_update(p, g, m, v, b1, b2, step_size, v_scale, eps, threads_for_elements(p.size))
