"""The C++/OpenMP backend: thin calls into fastconv._C, outputs allocated here."""
from __future__ import annotations


import numpy as np

from .. import _params as P
from .._threads import get_num_threads, threads_for_elements
from . import cpp_algorithms

try:
    from .. import _C
except ImportError as e:  # a source checkout without the built extension
    _C = None
    _IMPORT_ERROR = str(e)


def unavailable_reason():
    if _C is None:
        return f"the C++ extension fastconv._C is not built ({_IMPORT_ERROR}); install with `pip install .`"
    return None


def isa():
    return _C.isa()


# Below this size waking a second thread costs more than it saves; results do not depend on the
# thread count. A conv with few flops but large planes (a depthwise conv: 9 flops per pixel) is
# memory-bound, and gets the threads of memory-bound work over its input and output.
_SERIAL_CONV_FLOPS = 4_000_000


def _conv_threads(g):
    if g.flops >= _SERIAL_CONV_FLOPS:
        return get_num_threads()
    return threads_for_elements(g.N * (g.C * g.H * g.W + g.K * g.out_h * g.out_w))


def _pool_threads(g):
    return threads_for_elements(g.N * g.C * g.H * g.W)


def _geom(g):
    values = g.values()  # ints already (the geometries are built from int())
    return values + [0] * (16 - len(values))


def _pool_geom(g):
    # PoolGeometry: 14 sizes, ceil_mode (already folded into out_h/out_w), count_include_pad, divisor.
    v = g.values()
    return [int(x) for x in v[:14]] + [int(g.count_include_pad), int(g.divisor_override)]


ALGORITHMS = cpp_algorithms.make_tables(_C, _geom) if _C is not None else {}


def algorithm_for(primitive, g, dtype, timer_args=None):
    """The Algorithm the cpp backend uses for this problem (tuning it now if needed);
    timer_args() returns the arguments to time candidates with (built only when tuning)."""
    return cpp_algorithms.choose(primitive, ALGORITHMS[primitive], g, dtype, _C.isa(), timer_args or (lambda: None))


def bias_grad(gy):
    """grad_bias: gy summed over images and pixels in double, rounded once (ops' default,
    which numpy computes slowly for float32: a strided float64 reduction)."""
    if gy.dtype != np.float32:
        return gy.sum(axis=(0, 2, 3), dtype=np.float64).astype(gy.dtype)
    out = np.empty(gy.shape[1], np.float32)
    _C.bias_grad_f32(gy, out, threads_for_elements(gy.size))
    return out


def conv_forward(x, w, bias, g):
    # P.empty aligns large results to 64 bytes (here and for the tuner's scratch), so that the
    # kernels stream large outputs to memory.
    y = P.empty(np, "conv2d", g.y_shape, x.dtype)
    threads = _conv_threads(g)
    algo = algorithm_for("conv_forward", g, x.dtype,
                         lambda: (x, w, bias, P.empty(np, "conv2d", g.y_shape, x.dtype), g, threads))
    algo.run(x, w, bias, y, g, threads)
    return y


def conv_backward_data(gy, w, bias, g):
    gx = P.empty(np, "conv2d_backward", g.x_shape, gy.dtype)
    threads = _conv_threads(g)
    algo = algorithm_for("conv_backward_data", g, gy.dtype, lambda: (gy, w, bias, np.empty_like(gx), g, threads))
    algo.run(gy, w, bias, gx, g, threads)
    return gx


def conv_backward_weight(gy, x, g):
    gw = P.empty(np, "conv2d_backward", g.w_shape, gy.dtype)
    threads = _conv_threads(g)
    algo = algorithm_for("conv_backward_weight", g, gy.dtype, lambda: (gy, x, np.empty_like(gw), g, threads))
    algo.run(gy, x, gw, g, threads)
    return gw


# The fused conv + 2x2 max pool (conv_max_pool.cpp) pays where the conv is memory-bound: few
# input channels, so the conv's output is large next to its work. Beyond, the conv algorithms'
# GEMMs do the conv better than its direct sums.
_CONV_MAX_POOL_CHANNELS = 4


def conv_max_pool_accepts(g):
    """None if conv_max_pool_forward takes this conv (then 2x2 stride-2 max pooling), else why not."""
    if g.C > _CONV_MAX_POOL_CHANNELS:
        return f"{g.C} input channels (the fused conv + max pool takes up to {_CONV_MAX_POOL_CHANNELS})"
    if g.groups != 1 or (g.stride_h, g.stride_w, g.dil_h, g.dil_w) != (1, 1, 1, 1):
        return "not a stride-1, dilation-1, one-group conv"
    if g.out_h < 2 or g.out_w < 2:
        return f"conv output {g.out_h}x{g.out_w} has no 2x2 pooling window"
    return None


def conv_max_pool_forward(x, w, bias, g):
    """max_pool2d(conv2d(x, w, bias), 2) and, per window, its winning pixel dh * 2 + dw (uint8)."""
    shape = (g.N, g.K, g.out_h // 2, g.out_w // 2)
    y = P.empty(np, "conv2d", shape, x.dtype)
    where = P.empty(np, "conv2d", shape, np.uint8)
    _C.conv_max_pool_forward(_geom(g), np.ascontiguousarray(x), np.ascontiguousarray(w),
                             None if bias is None else np.ascontiguousarray(bias), y, where, _conv_threads(g))
    return y, where


def conv_max_pool_backward_weight(gy, where, x, g):
    """grad_w of the fused layer from the pooled grad_out, or None when x holds an inf or NaN
    (the caller then runs the dense backward)."""
    gw = P.empty(np, "conv2d_backward", g.w_shape, x.dtype)
    ok = _C.conv_max_pool_backward_weight(_geom(g), np.ascontiguousarray(gy, x.dtype), where,
                                          np.ascontiguousarray(x), gw, _conv_threads(g))
    return gw if ok else None


def max_pool_forward(x, g):
    y = P.empty(np, "max_pool2d", g.y_shape, x.dtype)
    indices = P.empty(np, "max_pool2d", g.y_shape, np.int64)
    _C.max_pool_forward(_pool_geom(g), x, y, indices, _pool_threads(g))
    return y, indices


def max_pool_backward(gy, indices, g):
    gx = P.empty(np, "max_pool2d_backward", g.x_shape, gy.dtype)
    _C.max_pool_backward(_pool_geom(g), gy, indices, gx, _pool_threads(g))
    return gx


def avg_pool_forward(x, g):
    y = P.empty(np, "avg_pool2d", g.y_shape, x.dtype)
    _C.avg_pool_forward(_pool_geom(g), x, y, _pool_threads(g))
    return y


def avg_pool_backward(gy, g):
    gx = P.empty(np, "avg_pool2d_backward", g.x_shape, gy.dtype)
    _C.avg_pool_backward(_pool_geom(g), gy, gx, _pool_threads(g))
    return gx
