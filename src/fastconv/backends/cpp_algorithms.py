"""The cpp backend's convolution algorithms, as data (STYLE: oneDNN's implementation lists).

For each conv primitive, an ordered list of candidates, most specialised first. Each has an
`accepts(geometry)` that returns None or the reason it declines, and a `run` that computes
into a preallocated output. `choose` picks one per problem:

1. a forced algorithm: `force("name")` (a context manager, for tests) or
   FASTCONV_CONV_ALGO=name (for benchmarks); a forced name that declines a problem falls
   through to the normal choice;
2. with one candidate accepting, that one;
3. with several, the autotuner: each is timed on the real arguments (_time_candidates) and the fastest is
   remembered in this process and in the on-disk cache (fastconv.cache, namespace
   "cpp-algo"). FASTCONV_AUTOTUNE=0 skips timing and takes the first accepting candidate.

The choice is keyed by problem, dtype and kernel ISA but not by thread count, so a shape
computes with the same algorithm, hence the same bits, at any number of threads.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import cache
from .._params import ConvGeometry


# Part of the autotune cache key: raised when a kernel changes enough that choices made
# before should be timed again.
TUNING_REVISION = 19


@dataclass(frozen=True)
class Algorithm:
    name: str
    accepts: Callable[[ConvGeometry], str | None]
    run: Callable  # run(args..., out, geometry_list, threads)


def _always(g):
    return None


def _winograd_channels(g):
    cg, kg = g.C // g.groups, g.K // g.groups
    if cg < 8 or kg < 8:
        # The GEMMs are then too thin to pay for the transforms, and the error, a few roundoffs
        # per transform, would no longer be small next to the short sums' own.
        return f"{cg} in / {kg} out channels per group (the Winograd algorithms want 8 or more)"
    return None


def _winograd_accepts(g):
    if why := _winograd_channels(g):
        return why
    if (g.R, g.S) != (3, 3):
        return f"kernel {g.R}x{g.S} is not 3x3"
    if (g.stride_h, g.stride_w) != (1, 1):
        return "stride is not 1"
    if (g.dil_h, g.dil_w) != (1, 1):
        return "dilation is not 1"
    return None


# Workspace bounds of the Winograd kernels (float64, the larger case): a task transforms at
# least one tile row (forward, backward-weight) or one whole image (the adjoint backward-data).
_WINOGRAD_ROW_BYTES = 32 << 20
_WINOGRAD_IMAGE_BYTES = 64 << 20


def _winograd_bytes(g, tile_rows, m=2):
    """Bytes of the (m+2)^2 transformed planes of `tile_rows` rows of m x m output tiles, in and out."""
    return (m + 2) ** 2 * (g.C // g.groups + g.K // g.groups) * tile_rows * -(-g.out_w // m) * 8


def _winograd_bounded_accepts(g, m=2):
    why = _winograd_accepts(g)
    if why is None and _winograd_bytes(g, 1, m) > _WINOGRAD_ROW_BYTES:
        return f"one row of tiles would take {_winograd_bytes(g, 1, m) >> 20} MiB of transforms"
    return why


def _winograd_f43_accepts(g):
    return _winograd_bounded_accepts(g, m=4)


def _winograd_adjoint_accepts(g, m=2):
    why = _winograd_bounded_accepts(g, m)
    image_bytes = _winograd_bytes(g, -(-g.out_h // m), m)
    if why is None and image_bytes > _WINOGRAD_IMAGE_BYTES:
        return (f"one image would take {image_bytes >> 20} MiB of transforms "
                f"(winograd_f{m}3_adjoint works on whole images)")
    return why


def _winograd_f43_adjoint_accepts(g):
    return _winograd_adjoint_accepts(g, m=4)


def _winograd_backward_data_accepts(g, m=2):
    why = _winograd_accepts(g) or _winograd_bounded_accepts(_backward_data_as_forward(g), m)
    if why is None and (g.pad_h > 2 or g.pad_w > 2):
        return "padding above 2 would make the transposed problem's padding negative"
    return why


def _winograd_f43_backward_data_accepts(g):
    return _winograd_backward_data_accepts(g, m=4)


def _winograd_s2_bytes(g, tile_rows):
    """Bytes of winograd_s2's 9 transformed planes (4 C/groups rows in, K/groups out) of
    `tile_rows` rows of 2x2 output tiles."""
    return 9 * (4 * (g.C // g.groups) + g.K // g.groups) * tile_rows * -(-g.out_w // 2) * 8


def _winograd_s2_accepts(g):
    if why := _winograd_channels(g):
        return why
    if (g.R, g.S) != (4, 4):
        return f"kernel {g.R}x{g.S} is not 4x4"
    if (g.stride_h, g.stride_w) != (2, 2):
        return f"stride {g.stride_h}x{g.stride_w} is not 2"
    if (g.dil_h, g.dil_w) != (1, 1):
        return "dilation is not 1"
    if _winograd_s2_bytes(g, 1) > _WINOGRAD_ROW_BYTES:
        return f"one row of tiles would take {_winograd_s2_bytes(g, 1) >> 20} MiB of transforms"
    return None


def _winograd_s2_adjoint_accepts(g):
    why = _winograd_s2_accepts(g)
    image_bytes = _winograd_s2_bytes(g, -(-g.out_h // 2))
    if why is None and image_bytes > _WINOGRAD_IMAGE_BYTES:
        return (f"one image would take {image_bytes >> 20} MiB of transforms "
                f"(winograd_s2 backward-data works on whole images)")
    return why


def _stride_one(g):
    return None if (g.stride_h, g.stride_w) == (1, 1) else f"stride {g.stride_h}x{g.stride_w} is not 1"


def _padding_within_kernel(g):
    """Backward-data as a forward of the flipped kernel pads grad_out by the dilated kernel's
    extent less the padding: that must not be negative."""
    if g.pad_h > (g.R - 1) * g.dil_h or g.pad_w > (g.S - 1) * g.dil_w:
        return "padding beyond the dilated kernel would make the transposed problem's padding negative"
    return None


def _wide_backward_data_accepts(g):
    return _stride_one(g) or _padding_within_kernel(g)


# gemm_nhwc's channel-last copy of the input, per image (float64), and the largest it takes.
_NHWC_IMAGE_BYTES = 64 << 20


def _padding(g):
    """Whether any tap of any output pixel falls outside x: padding at the top or left, or at the
    bottom or right, which out_h / out_w imply (padding='same' with an even kernel, a transposed
    conv's output_padding)."""
    return ((g.pad_h, g.pad_w) != (0, 0) or (g.out_h - 1) * g.stride_h + (g.R - 1) * g.dil_h >= g.H
            or (g.out_w - 1) * g.stride_w + (g.S - 1) * g.dil_w >= g.W)


def _gemm_1x1_forward_accepts(g):
    if (g.R, g.S) != (1, 1):
        return f"kernel {g.R}x{g.S} is not 1x1"
    if _padding(g):
        return "padding: x's pixels are not the GEMM's columns"
    return None


def _gemm_1x1_accepts(g):
    """Backward-data: the forward GEMM with W transposed, where x's rows are the GEMM's."""
    reason = _gemm_1x1_forward_accepts(g)
    if reason is None and (g.stride_h, g.stride_w) != (1, 1):  # (1x1 at stride 1 without padding: out = H x W)
        return "stride: grad_x's rows are not the GEMM's"
    return reason


def _gemm_taps_accepts(g):
    if _padding(g):
        return "padding: a tap's pixels would fall on it (gathered without bounds)"
    return None


def _nhwc_accepts(g):
    if g.groups != 1:
        return f"groups {g.groups} (gemm_nhwc takes one group)"
    hp = max(g.H + g.pad_h, (g.out_h - 1) * g.stride_h + (g.R - 1) * g.dil_h + 1)
    wp = max(g.W + g.pad_w, (g.out_w - 1) * g.stride_w + (g.S - 1) * g.dil_w + 1)
    image_bytes = hp * wp * g.C * 8
    if image_bytes > _NHWC_IMAGE_BYTES:
        return f"one image made channel-last would take {image_bytes >> 20} MiB"
    return None


def _nhwc_backward_data_accepts(g):
    return _stride_one(g) or _padding_within_kernel(g) or _nhwc_accepts(_backward_data_as_forward(g))


def _dot_wide_accepts(g):
    if g.K // g.groups < 3 or (g.C // g.groups) * g.R * g.S < 4:
        return "fewer than 3 output channels or 4 patch rows per group (dot_wide's 3x4 blocks would be mostly empty)"
    return None


def _not_depthwise(g):
    return f"not depthwise (groups {g.groups}, {g.C} in / {g.K} out channels)"


def _depthwise_forward_accepts(g):
    """One input channel per group, any number of output channels each (a channel multiplier,
    or a first layer on a one-channel image)."""
    return None if g.C == g.groups else _not_depthwise(g)


def _depthwise_accepts(g):
    """One input and one output channel per group (the backward kernels)."""
    return None if g.C == g.K == g.groups else _not_depthwise(g)


def _depthwise_backward_data_accepts(g):
    return _depthwise_accepts(g) or _padding_within_kernel(g)


def _narrow_accepts(g):
    cg = g.C // g.groups
    return None if cg <= 3 else f"{cg} grad_x channels per group (direct_narrow takes 1-3)"


def _flipped_transposed(w, groups):
    """w (K, C/g, R, S) -> (C, K/g, R, S), each kernel rotated 180 degrees: the weights of the
    forward conv that computes this conv's backward-data at stride 1."""
    k, cg, r, s = w.shape
    kg = k // groups
    wt = w.reshape(groups, kg, cg, r, s).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return np.ascontiguousarray(wt).reshape(groups * cg, kg, r, s)


def _backward_data_as_forward(g):
    """The stride-1 forward problem whose output is this conv's grad_x: grad_out padded by the
    dilated kernel's extent less the padding, correlated with the flipped kernel."""
    return ConvGeometry(g.N, g.K, g.out_h, g.out_w, g.C, g.R, g.S, g.groups, 1, 1,
                        (g.R - 1) * g.dil_h - g.pad_h, (g.S - 1) * g.dil_w - g.pad_w, g.dil_h, g.dil_w, g.H, g.W)


def _dilated_phases_accepts(g):
    if (g.dil_h, g.dil_w) == (1, 1):
        return "no dilation"
    if why := _stride_one(g):
        return why
    # Each phase's output must be the conv without dilation of its input: the sizes and the padding
    # multiples of the dilation (a transposed conv's output_padding can leave rows no output reads).
    for size, pad, out, taps, d in ((g.H, g.pad_h, g.out_h, g.R, g.dil_h), (g.W, g.pad_w, g.out_w, g.S, g.dil_w)):
        if size % d or pad % d or out % d or size // d + 2 * (pad // d) - (taps - 1) != out // d:
            return (f"input {g.H}x{g.W}, padding {g.pad_h}x{g.pad_w} and output {g.out_h}x{g.out_w} do not split "
                    f"into equal phases of the dilation {g.dil_h}x{g.dil_w}")
    return None


def _phase_geometry(g):
    """The conv without dilation over the stack of x's dil_h x dil_w phases (dilated_phases)."""
    dh, dw = g.dil_h, g.dil_w
    return ConvGeometry(g.N * dh * dw, g.C, g.H // dh, g.W // dw, g.K, g.R, g.S, g.groups, 1, 1,
                        g.pad_h // dh, g.pad_w // dw, 1, 1, g.out_h // dh, g.out_w // dw)


def _dilated_phases(C, tables):
    """The three runs of dilated_phases. A stride-1 conv with dilation d reads, for the outputs of
    one phase (rows a, a + d, ...; padding a multiple of d), only the inputs of the same phase, as a
    conv without dilation: the phases of x are stacked as images (space-to-batch), the problem
    without dilation runs with whichever algorithm choose() picks for it (Winograd for DeepLab's
    3x3), and the phases of the result go back in place. Backward-weight sums over the stack's
    images, which is the sum over every pixel."""
    def split(a, stack_shape, g, t):  # stack_shape: the phase geometry's x_shape or y_shape
        stack = np.empty(stack_shape, a.dtype)
        C.dilation_phases(a, stack, g.dil_h, g.dil_w, True, t)
        return stack

    def inner(primitive, g2, dtype, timer_args):
        return choose(primitive, tables[primitive], g2, dtype, C.isa(), timer_args)

    def forward(x, w, b, y, g, t):
        g2 = _phase_geometry(g)
        xs = split(x, g2.x_shape, g, t)
        ys = np.empty(g2.y_shape, x.dtype)
        inner("conv_forward", g2, x.dtype, lambda: (xs, w, b, np.empty_like(ys), g2, t)).run(xs, w, b, ys, g2, t)
        C.dilation_phases(y, ys, g.dil_h, g.dil_w, False, t)

    def backward_data(gy, w, b, gx, g, t):
        g2 = _phase_geometry(g)
        gys = split(gy, g2.y_shape, g, t)
        gxs = np.empty(g2.x_shape, gy.dtype)
        inner("conv_backward_data", g2, gy.dtype, lambda: (gys, w, b, np.empty_like(gxs), g2, t)).run(
            gys, w, b, gxs, g2, t)
        C.dilation_phases(gx, gxs, g.dil_h, g.dil_w, False, t)

    def backward_weight(gy, x, gw, g, t):
        g2 = _phase_geometry(g)
        gys, xs = split(gy, g2.y_shape, g, t), split(x, g2.x_shape, g, t)
        inner("conv_backward_weight", g2, gy.dtype, lambda: (gys, xs, np.empty_like(gw), g2, t)).run(
            gys, xs, gw, g2, t)

    return forward, backward_data, backward_weight


def make_tables(C, geom):
    """The candidate lists, given the extension module and the geometry packer."""
    tables = {}
    phases_forward, phases_backward_data, phases_backward_weight = _dilated_phases(C, tables)
    forward = [
        Algorithm("dilated_phases", _dilated_phases_accepts, phases_forward),
        Algorithm("depthwise_direct", _depthwise_forward_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_depthwise(geom(g), x, w, b, y, t)),
        Algorithm("winograd_f23", _winograd_bounded_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_winograd_f23(geom(g), x, w, b, y, t)),
        Algorithm("winograd_f43", _winograd_f43_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_winograd_f43(geom(g), x, w, b, y, t)),
        Algorithm("winograd_s2", _winograd_s2_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_winograd_s2(geom(g), x, w, b, y, t)),
        Algorithm("gemm_1x1", _gemm_1x1_forward_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_1x1(geom(g), x, w, b, y, t)),
        Algorithm("gemm_nhwc", _nhwc_accepts,
                  lambda x, w, b, y, g, t: C.conv_forward_nhwc(geom(g), x, w, b, y, t)),
        Algorithm("implicit_gemm_wide", _always,
                  lambda x, w, b, y, g, t: C.conv_forward_wide(geom(g), x, w, b, y, t)),
        Algorithm("implicit_gemm", _always,
                  lambda x, w, b, y, g, t: C.conv_forward(geom(g), x, w, b, y, t)),
    ]
    backward_data = [
        Algorithm("dilated_phases", _dilated_phases_accepts, phases_backward_data),
        Algorithm("winograd_f23", _winograd_backward_data_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_forward_winograd_f23(
                      geom(_backward_data_as_forward(g)), gy, _flipped_transposed(w, g.groups), b, gx, t)),
        Algorithm("winograd_f23_adjoint", _winograd_adjoint_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_winograd_f23(geom(g), gy, w, b, gx, t)),
        Algorithm("winograd_f43", _winograd_f43_backward_data_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_forward_winograd_f43(
                      geom(_backward_data_as_forward(g)), gy, _flipped_transposed(w, g.groups), b, gx, t)),
        Algorithm("winograd_f43_adjoint", _winograd_f43_adjoint_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_winograd_f43(geom(g), gy, w, b, gx, t)),
        Algorithm("winograd_s2", _winograd_s2_adjoint_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_winograd_s2(geom(g), gy, w, b, gx, t)),
        Algorithm("depthwise_direct", _depthwise_backward_data_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_depthwise(geom(g), gy, w, b, gx, t)),
        Algorithm("gemm_1x1", _gemm_1x1_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_forward_1x1(
                      geom(_backward_data_as_forward(g)), gy, _flipped_transposed(w, g.groups), b, gx, t)),
        Algorithm("implicit_gemm_wide", _wide_backward_data_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_forward_wide(
                      geom(_backward_data_as_forward(g)), gy, _flipped_transposed(w, g.groups), b, gx, t)),
        Algorithm("gemm_nhwc", _nhwc_backward_data_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_nhwc(geom(g), gy, w, b, gx, t)),
        Algorithm("gemm_col2im", _always,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_col2im(geom(g), gy, w, b, gx, t)),
        Algorithm("direct_narrow", _narrow_accepts,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data_narrow(geom(g), gy, w, b, gx, t)),
        Algorithm("implicit_gemm_subpixel", _always,
                  lambda gy, w, b, gx, g, t: C.conv_backward_data(geom(g), gy, w, b, gx, t)),
    ]
    backward_weight = [
        Algorithm("dilated_phases", _dilated_phases_accepts, phases_backward_weight),
        Algorithm("depthwise_direct", _depthwise_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_depthwise(geom(g), gy, x, gw, t)),
        Algorithm("winograd_f23", _winograd_bounded_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_winograd_f23(geom(g), gy, x, gw, t)),
        Algorithm("winograd_f43", _winograd_f43_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_winograd_f43(geom(g), gy, x, gw, t)),
        Algorithm("winograd_s2", _winograd_s2_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_winograd_s2(geom(g), gy, x, gw, t)),
        Algorithm("gemm_taps", _gemm_taps_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_taps(geom(g), gy, x, gw, t)),
        Algorithm("gemm_nhwc", _nhwc_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_nhwc(geom(g), gy, x, gw, t)),
        Algorithm("dot_wide", _dot_wide_accepts,
                  lambda gy, x, gw, g, t: C.conv_backward_weight_wide(geom(g), gy, x, gw, t)),
        Algorithm("implicit_gemm", _always,
                  lambda gy, x, gw, g, t: C.conv_backward_weight(geom(g), gy, x, gw, t)),
    ]
    tables.update(conv_forward=forward, conv_backward_data=backward_data, conv_backward_weight=backward_weight)
    return tables


# --------------------------------------------------------------------------- choice

_forced = threading.local()
_memo: dict = {}
_memo_lock = threading.Lock()


@contextlib.contextmanager
def force(name: str | None):
    """Use algorithm `name` wherever it accepts the problem (in this thread), e.g. in tests."""
    previous = getattr(_forced, "name", None)
    _forced.name = name
    try:
        yield
    finally:
        _forced.name = previous


def forced_name():
    return getattr(_forced, "name", None) or os.environ.get("FASTCONV_CONV_ALGO") or None


def explain(candidates, g):
    """[(name, None or the reason it declines)] for a problem: what ONEDNN_VERBOSE would say."""
    return [(a.name, a.accepts(g)) for a in candidates]


def choose(primitive, candidates, g, dtype, isa, timer_args):
    """The algorithm for this problem (see the module docstring). timer_args() returns the
    argument tuples to time a candidate with (outputs are scratch)."""
    name = forced_name()
    memo_key = (primitive, dtype, isa, g)  # a frozen dataclass: hashable
    if name is None:  # the common case, a problem seen before: one dictionary lookup
        with _memo_lock:
            hit = _memo.get(memo_key)
        if hit is not None:
            return hit
    accepting = [a for a in candidates if a.accepts(g) is None]
    if name is not None:
        for a in accepting:
            if a.name == name:
                return a
    if len(accepting) == 1 or os.environ.get("FASTCONV_AUTOTUNE", "1").strip() == "0":
        return accepting[0]
    # The candidates are part of the key: a choice made before an algorithm existed is retuned.
    key = {"primitive": primitive, "dtype": np.dtype(dtype).name, "isa": isa, "revision": TUNING_REVISION,
           "geometry": list(g.values()), "candidates": [a.name for a in accepting]}
    stored = cache.get("cpp-algo", key, threads=0)
    if not (isinstance(stored, dict) and _by_name(accepting, stored.get("algorithm"))):
        stored = {"algorithm": _time_candidates(accepting, timer_args), "tuned_at_threads": _threads()}
        cache.put("cpp-algo", key, stored, threads=0)
    chosen = _by_name(accepting, stored["algorithm"])
    with _memo_lock:
        _memo[memo_key] = chosen
    return chosen


def _by_name(candidates, name):
    for a in candidates:
        if a.name == name:
            return a
    return None


def _threads():
    from .._threads import get_num_threads

    return get_num_threads()


# A tuning round times each candidate for about this long (repeated calls, at most
# _TUNE_MAX_REPS): single calls of a millisecond on a shared machine picked a 13 % slower
# algorithm for a transposed conv's backward-weight.
_TUNE_ROUND_S = 0.002
_TUNE_MAX_REPS = 50
_TUNE_ROUNDS = 5


def _time_candidates(accepting, timer_args):
    """The name of the fastest candidate: each run twice to warm up (first-call costs) and to
    size its repetitions, then the best of _TUNE_ROUNDS rounds in which every candidate runs
    its repetitions (interleaved, so a slow spell of a shared machine does not fall on one
    candidate only)."""
    args = timer_args()
    if args is None:
        raise ValueError(f"{len(accepting)} algorithms accept this problem and none is tuned yet: "
                         f"timing them needs the call's arguments")
    reps = []
    for a in accepting:
        a.run(*args)
        start = time.perf_counter()
        a.run(*args)
        once = time.perf_counter() - start
        reps.append(max(1, min(_TUNE_MAX_REPS, math.ceil(_TUNE_ROUND_S / max(once, 1e-7)))))
    best = [float("inf")] * len(accepting)
    for _ in range(_TUNE_ROUNDS):
        for i, a in enumerate(accepting):
            start = time.perf_counter()
            for _ in range(reps[i]):
                a.run(*args)
            best[i] = min(best[i], (time.perf_counter() - start) / reps[i])
    return accepting[best.index(min(best))].name
