"""Argument normalisation, validation and output-shape arithmetic for every op.

This is the one place where parameters are checked (STYLE: ATen's front end). Every public
function turns its arguments into 4-D C-contiguous arrays of one float dtype plus a
geometry record (ConvGeometry / PoolGeometry); backends receive only those and never
re-validate. The rules and messages mirror PyTorch 2.x (aten/src/ATen/native/Convolution.cpp,
Pool.h), which is the oracle for every edge case.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from . import _result_pool as _pool

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _physical_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


# An output larger than the machine's RAM would pass np.empty (memory is overcommitted) and
# then get the process killed while a kernel writes it: refuse it up front with a message.
MAX_ARRAY_BYTES = _physical_memory_bytes()


class _Fields:
    """values(): the fields in declaration order, without dataclasses.astuple's deep copy
    (geometries are built and flattened on every call, so this is on the hot path)."""

    def values(self):
        # The instance dict holds exactly the fields, in declaration order (dataclass __init__
        # sets them in order; nothing else is stored on a geometry).
        return list(self.__dict__.values())


@dataclass(frozen=True)
class ConvGeometry(_Fields):
    """A convolution y = conv(x, w): x (N, C, H, W), w (K, C/groups, R, S), y (N, K, out_h, out_w).

    pad_h / pad_w are the top / left padding; the bottom / right padding is implied by out_h /
    out_w (PyTorch's 'same' pads the extra row at the bottom). A transposed convolution is
    described by the convolution whose backward-data it is, so out_h may exceed what the
    formula gives from H (output_padding >= stride is legal when dilation > stride).
    """

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    groups: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int
    out_h: int
    out_w: int

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def y_shape(self):
        return (self.N, self.K, self.out_h, self.out_w)

    @property
    def flops(self):
        """Multiply-adds x 2 of the forward pass."""
        return 2 * self.N * self.K * self.out_h * self.out_w * (self.C // self.groups) * self.R * self.S


@dataclass(frozen=True)
class PoolGeometry(_Fields):
    N: int
    C: int
    H: int
    W: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int
    out_h: int
    out_w: int
    ceil_mode: bool
    count_include_pad: bool = True
    divisor_override: int = 0  # 0: none

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self):
        return (self.N, self.C, self.out_h, self.out_w)


# --------------------------------------------------------------------------- arrays

def array_module(x):
    """numpy or cupy, by the array's type; anything else is a TypeError."""
    if isinstance(x, np.ndarray):
        return np
    mod = type(x).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    raise TypeError(f"expected a numpy.ndarray or cupy.ndarray, got {type(x).__name__}")


def _check_array(name, a, xp):
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        mod = array_module(a)
    except TypeError:
        raise TypeError(f"{name} must be a numpy.ndarray or cupy.ndarray, got {type(a).__name__}") from None
    if mod is not xp:
        raise TypeError(f"{name} is a {mod.__name__} array but the other arguments are {xp.__name__} arrays")
    if np.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; only float32 and float64 are supported")
    return xp.ascontiguousarray(a)


def _check_same_dtype(named):
    dtypes = {name: np.dtype(a.dtype) for name, a in named if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"mixed dtypes ({listed}): all arrays must have the same dtype")


def _batched(name, x, xp):
    """(C,H,W) -> (1,C,H,W) as PyTorch does for unbatched input; returns (x4, was_batched)."""
    if x.ndim in (3, 4):
        if 0 in x.shape[-3:]:
            raise ValueError(f"{name} must have non-zero channels, height and width, got shape {tuple(x.shape)}")
        return (x, True) if x.ndim == 4 else (x[None], False)
    raise ValueError(f"{name} must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def check_output_size(op, shape, dtype):
    nbytes = math.prod(int(v) for v in shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
    if nbytes > MAX_ARRAY_BYTES:
        raise MemoryError(
            f"{op}: the output of shape {tuple(shape)} ({nbytes / 2**30:.1f} GiB) cannot be allocated"
        )


def empty(xp, op, shape, dtype):
    """Allocate a result (its size was checked before any kernel ran), turning allocation
    failure into a clear MemoryError. A NumPy result of 1 MiB or more starts on a 64-byte
    boundary (kernels stream outputs of 8 MiB and more to memory with stores that need 32-byte
    alignment, and malloc gives 16) and reuses the memory of an earlier result of its size
    (_result_pool.py: a fresh one costs page faults). Smaller results skip both."""
    try:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if xp is not np or nbytes < _pool.MIN_POOLED_BYTES:
            return xp.empty(shape, dtype=dtype)
        return _pool.empty(shape, dtype)
    except (MemoryError, ValueError) as e:
        raise MemoryError(f"{op}: the output of shape {tuple(shape)} cannot be allocated ({e})") from None


# --------------------------------------------------------------------------- scalars

def _int(name, v, op):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int or a tuple of 2 ints, got {v!r}")
    return int(v)


def pair(name, v, op):
    """int or 1-/2-sequence of ints -> (int, int), as torch's _pair / expand_param_if_needed."""
    if isinstance(v, (list, tuple)):
        vals = [_int(name, e, op) for e in v]
        if len(vals) == 1:
            return vals[0], vals[0]
        if len(vals) == 2:
            return vals[0], vals[1]
        raise ValueError(f"{op}: expected {name} to be a single integer value or a list of 2 values, got {name}={v!r}")
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return pair(name, v.tolist(), op)
    i = _int(name, v, op)
    return i, i


def _positive(name, v, op):
    if min(v) <= 0:
        raise ValueError(f"{op}: {name} must be positive, got {name}={v}")
    return v


def _non_negative(name, v, op):
    if min(v) < 0:
        raise ValueError(f"{op}: {name} must be non-negative, got {name}={v}")
    return v


def _groups(groups, op):
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got groups={groups}")
    return int(groups)


def _needs(needs, op):
    if not (isinstance(needs, (tuple, list)) and len(needs) == 3):
        raise TypeError(f"{op}: needs must be a tuple of 3 bools (grad_x, grad_weight, grad_bias), got {needs!r}")
    return tuple(bool(n) for n in needs)


# --------------------------------------------------------------------------- convolution

def _conv_arrays(op, x, weight, bias, grad_out=None):
    xp = array_module(x) if not isinstance(x, (list, tuple)) else np
    x = _check_array("x", x, xp)
    weight = _check_array("weight", weight, xp)
    bias = None if bias is None else _check_array("bias", bias, xp)
    if grad_out is not None:
        grad_out = _check_array("grad_out", grad_out, xp)
    _check_same_dtype([("x", x), ("weight", weight), ("bias", bias), ("grad_out", grad_out)])
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D, got shape {tuple(weight.shape)}")
    return xp, x, weight, bias, grad_out


def _check_bias(op, bias, channels):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},), got {tuple(bias.shape)}")


def _out_size(size, pad_total, dil, k, stride):
    return (size + pad_total - dil * (k - 1) - 1) // stride + 1


def conv_params(x, weight, bias, stride, padding, dilation, groups, grad_out=None, op="conv2d"):
    """Validate conv2d arguments. Returns (xp, x4, weight, bias, grad_out4, geometry, batched)."""
    xp, x, weight, bias, grad_out = _conv_arrays(op, x, weight, bias, grad_out)
    x, batched = _batched("x", x, xp)
    stride = _positive("stride", pair("stride", stride, op), op)
    dilation = _positive("dilation", pair("dilation", dilation, op), op)
    groups = _groups(groups, op)
    N, C, H, W = map(int, x.shape)
    K, Cg, R, S = map(int, weight.shape)
    if K <= 0:
        raise ValueError(f"{op}: weight must have at least 1 output channel, got weight of shape {tuple(weight.shape)}")
    if K % groups:
        raise ValueError(f"{op}: out channels K={K} (weight.shape[0]) must be divisible by groups={groups}")
    if Cg * groups != C:
        raise ValueError(
            f"{op}: given groups={groups} and weight of shape {tuple(weight.shape)}, expected x to have "
            f"{Cg * groups} channels, got {C} channels"
        )
    if R <= 0 or S <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got weight of shape {tuple(weight.shape)}")
    _check_bias(op, bias, K)

    eff_r, eff_s = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
            # torch: total = d*(k-1); left = total // 2; the extra row/column goes bottom/right.
            th, tw = eff_r - 1, eff_s - 1
            pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        else:
            raise ValueError(f"{op}: invalid padding string {padding!r}, expected 'same' or 'valid'")
    else:
        ph, pw = _non_negative("padding", pair("padding", padding, op), op)
        pads = (ph, pw, ph, pw)
    pt, pl, pb, pr = pads
    if H + pt + pb < eff_r or W + pl + pr < eff_s:
        raise ValueError(
            f"{op}: padded input size ({H + pt + pb}, {W + pl + pr}) is smaller than the effective kernel "
            f"size ({eff_r}, {eff_s}): the kernel can't be greater than the padded input"
        )
    out_h = _out_size(H, pt + pb, dilation[0], R, stride[0])
    out_w = _out_size(W, pl + pr, dilation[1], S, stride[1])
    g = ConvGeometry(N, C, H, W, K, R, S, groups, *stride, pt, pl, *dilation, out_h, out_w)
    check_output_size(op, g.y_shape, x.dtype)
    if grad_out is not None:
        grad_out = _check_grad_out(op, grad_out, batched, g.y_shape, xp)
    return xp, x, weight, bias, grad_out, g, batched


def conv_transpose_params(x, weight, bias, stride, padding, output_padding, groups, dilation,
                          grad_out=None, op="conv_transpose2d"):
    """Validate conv_transpose2d arguments.

    The geometry returned is that of the convolution whose backward-data is this transposed
    convolution: its input is the transposed conv's output (N, C_out, H_out, W_out), its output
    the transposed conv's input. The weight (C_in, C_out/groups, R, S) is already that
    convolution's (K, C/groups, R, S).
    """
    xp, x, weight, bias, grad_out = _conv_arrays(op, x, weight, bias, grad_out)
    x, batched = _batched("x", x, xp)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a tuple of 2 ints, got {padding!r}")
    stride = _positive("stride", pair("stride", stride, op), op)
    dilation = _positive("dilation", pair("dilation", dilation, op), op)
    padding = _non_negative("padding", pair("padding", padding, op), op)
    output_padding = _non_negative("output_padding", pair("output_padding", output_padding, op), op)
    groups = _groups(groups, op)
    N, Cin, H, W = map(int, x.shape)
    wk, Coutg, R, S = map(int, weight.shape)
    if Cin % groups:
        raise ValueError(f"{op}: in channels {Cin} must be divisible by groups={groups}")
    if wk != Cin:
        raise ValueError(
            f"{op}: weight of shape {tuple(weight.shape)} expects x with {wk} channels "
            f"(weight.shape[0]), got {Cin} channels"
        )
    if Coutg <= 0 or R <= 0 or S <= 0:
        raise ValueError(f"{op}: weight must have positive output channels and kernel size, got {tuple(weight.shape)}")
    Cout = Coutg * groups
    _check_bias(op, bias, Cout)
    for i in range(2):
        if output_padding[i] >= max(stride[i], dilation[i]):
            raise ValueError(
                f"{op}: output_padding must be smaller than either stride or dilation, got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
    out_h = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (R - 1) + output_padding[0] + 1
    out_w = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (S - 1) + output_padding[1] + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"{op}: the output size ({out_h}, {out_w}) is too small (input ({H}, {W}))")
    g = ConvGeometry(N, Cout, out_h, out_w, Cin, R, S, groups, *stride, *padding, *dilation, H, W)
    check_output_size(op, g.x_shape, x.dtype)
    if grad_out is not None:
        grad_out = _check_grad_out(op, grad_out, batched, g.x_shape, xp)
    return xp, x, weight, bias, grad_out, g, batched


def _check_grad_out(op, grad_out, batched, expected, xp):
    if not batched:
        if grad_out.ndim != 3:
            raise ValueError(f"{op}: grad_out must be 3-D like the unbatched x, got shape {tuple(grad_out.shape)}")
        grad_out = grad_out[None]
    if tuple(grad_out.shape) != tuple(expected):
        shown = expected if batched else expected[1:]
        raise ValueError(f"{op}: grad_out must have shape {tuple(shown)}, got {tuple(grad_out.shape)}")
    return grad_out


# --------------------------------------------------------------------------- pooling

def _pool_out(size, k, pad, stride, dil, ceil_mode):
    # torch pooling_output_shape: floor (or ceil) division, then in ceil mode the last window
    # must start inside the input or the left padding.
    num = size + 2 * pad - dil * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_params(op, x, kernel_size, stride, padding, dilation, ceil_mode, grad_out=None,
                count_include_pad=True, divisor_override=None):
    xp = array_module(x)
    x = _check_array("x", x, xp)
    if grad_out is not None:
        grad_out = _check_array("grad_out", grad_out, xp)
        _check_same_dtype([("x", x), ("grad_out", grad_out)])
    x, batched = _batched("x", x, xp)
    kernel = _positive("kernel_size", pair("kernel_size", kernel_size, op), op)
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel
    else:
        stride = _positive("stride", pair("stride", stride, op), op)
    padding = _non_negative("padding", pair("padding", padding, op), op)
    dilation = _positive("dilation", pair("dilation", dilation, op), op)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    # torch Pool.h checks the padding against the kernel size itself, not the dilated one.
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{op}: padding should be at most half of kernel size, got padding={padding}, kernel_size={kernel}"
        )
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, numbers.Integral):
            raise TypeError(f"{op}: divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
    N, C, H, W = map(int, x.shape)
    out_h = _pool_out(H, kernel[0], padding[0], stride[0], dilation[0], bool(ceil_mode))
    out_w = _pool_out(W, kernel[1], padding[1], stride[1], dilation[1], bool(ceil_mode))
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: given input size ({C}, {H}, {W}), the calculated output size ({C}, {out_h}, {out_w}) "
            f"is too small"
        )
    g = PoolGeometry(N, C, H, W, *kernel, *stride, *padding, *dilation, out_h, out_w, bool(ceil_mode),
                     bool(count_include_pad), int(divisor_override or 0))
    check_output_size(op, g.y_shape, x.dtype)
    if grad_out is not None:
        grad_out = _check_grad_out(op, grad_out, batched, g.y_shape, xp)
    return xp, x, grad_out, g, batched


def max_pool_indices(op, indices, g, batched, xp):
    indices = _check_index_array(indices, xp, op)
    if not batched:
        if indices.ndim != 3:
            raise ValueError(f"{op}: indices must be 3-D like the unbatched x, got shape {tuple(indices.shape)}")
        indices = indices[None]
    if tuple(indices.shape) != g.y_shape:
        shown = g.y_shape if batched else g.y_shape[1:]
        raise ValueError(f"{op}: indices must have shape {tuple(shown)}, got {tuple(indices.shape)}")
    # Indices outside [0, H*W) are legal input: PyTorch's forward emits one for a window that
    # lies entirely in the padding. Backends give such an index no gradient, as PyTorch does.
    return indices


def _check_index_array(indices, xp, op):
    try:
        mod = array_module(indices)
    except TypeError:
        raise TypeError(f"{op}: indices must be an integer array, got {type(indices).__name__}") from None
    if mod is not xp or np.dtype(indices.dtype).kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer {xp.__name__} array, got dtype {indices.dtype}")
    return xp.ascontiguousarray(indices, dtype=np.int64)


def conv_needs(needs, op):
    return _needs(needs, op)
