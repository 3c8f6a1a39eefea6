"""The Numba backend: @njit(parallel=True, cache=True) kernels (numba_conv.py, numba_pool.py).

This module allocates outputs, chooses an algorithm and its tile sizes from the shape (the
tiles fix the order of every sum, so they never depend on the thread count: results do
not either), and sets the thread count and the threading layer; the kernels do the rest.

Threading layer (measured here, numba 0.68, 2 shared cores). Numba's default order is tbb,
then omp, then workqueue; the choice is made once per process, at the first parallel launch.
- workqueue is not thread-safe: two Python threads launching parallel kernels at once abort
  the process, and our kernels release the GIL (nogil=True), so such launches do happen.
- omp (GNU libgomp here) is thread-safe but (a) not fork-safe: Numba terminates a forked
  child that launches a kernel, which breaks multiprocessing 'fork' pools and data loaders;
  (b) libgomp's threads spin-wait at the barrier of Numba's statically split loop, so when
  the cores are shared with other processes a descheduled worker stalls the caller for whole
  scheduler slices: conv forward at 2 threads took 24-36 ms instead of 2.7 ms (1 thread:
  2.5 ms; OMP_WAIT_POLICY=passive or workqueue: 2.7-2.9 ms).
- tbb is thread-safe and fork-safe and steals work, but needs the tbb package (absent here).
So, unless the user chose a layer (NUMBA_THREADING_LAYER), we ask for tbb when it loads and
otherwise workqueue, whose workers sleep instead of spinning; whenever the layer in force is
workqueue (ours, the user's, or set by other code that launched Numba's threads first), every
kernel launch takes one process-wide lock, so concurrent calls queue instead of crashing.
With two cores a second concurrent kernel would only time-share them anyway.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from .. import _params as P
from .._threads import get_num_threads

try:
    import numba
    from numba import config as _numba_config
except ImportError as e:  # numba is a runtime dependency, but keep `backends()` informative
    numba = None
    _IMPORT_ERROR = f"numba is not installed ({e})"
else:
    _IMPORT_ERROR = None

# Layers whose launches may overlap across Python threads; any other (workqueue) is locked.
_THREADSAFE_LAYERS = ("tbb", "omp")


def _request_threading_layer():
    if os.environ.get("NUMBA_THREADING_LAYER") or _numba_config.THREADING_LAYER != "default":
        return  # the user's explicit choice wins
    try:
        import numba.np.ufunc.tbbpool  # noqa: F401  (loads only when libtbb is installed)
    except ImportError:
        _numba_config.THREADING_LAYER = "workqueue"
    else:
        _numba_config.THREADING_LAYER = "tbb"


if numba is not None:
    _request_threading_layer()
    from . import numba_conv as _conv
    from . import numba_conv_shifted as _shifted
    from . import numba_pool as _pool

_launch_lock = threading.Lock()
_serialize: bool | None = None  # decided at the first kernel call, once Numba's threads run


def unavailable_reason():
    return _IMPORT_ERROR


def threading_layer() -> str:
    """The Numba threading layer in force ('omp', 'tbb' or 'workqueue'); starts Numba's threads."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()
    return numba.threading_layer()


def cache_dir() -> str:
    """The directory where the cache=True compiled kernels are stored.

    Numba picks it per source file: next to the sources (__pycache__) when that is
    writable, else under NUMBA_CACHE_DIR or the user's cache directory. Numba checks a
    kernel's own file for changes, not the files of the kernels it calls: after editing
    numba_gemm.py during development, delete the cache (a new install replaces every file).
    """
    try:
        return _conv.conv_forward._cache._cache_path  # the locator Numba chose (no public API)
    except AttributeError:
        return _numba_config.CACHE_DIR or "(numba's default: __pycache__ next to the sources)"


@contextlib.contextmanager
def _kernel_call():
    """Set this thread's Numba thread count from fastconv's, and serialise on workqueue.

    numba.set_num_threads is thread-local, so concurrent callers with different counts do
    not disturb each other.
    """
    global _serialize
    numba.set_num_threads(max(1, min(get_num_threads(), _numba_config.NUMBA_NUM_THREADS)))
    if _serialize is None:
        _serialize = threading_layer() not in _THREADSAFE_LAYERS
    if _serialize:
        with _launch_lock:
            yield
    else:
        yield


# --------------------------------------------------------------------------- tile sizes
# What gemm_acc reads (a patch tile, or the windows of a shifted tile) is kept near 256 KiB
# so that it stays in L2 while the weight rows stream past it (a 1 MiB tile halves
# gemm_acc's rate). Tiles shrink until there are 8 tasks, so two cores stay busy and
# balanced on small problems, but not below 64 pixels, below which gemm_acc's vector loop
# loses half its rate or more. The gather kernels' tiles run over the (image, pixel) axis,
# so they stay long for small images too.

_TILE_BYTES = 256 * 1024
_MIN_TASKS = 8
_GRAIN = 16
_MIN_TILE = 64


def _round_up(a, b):
    return -(-a // b) * b


def _choose_tile(rows, pixels, outer_tasks, itemsize):
    """Pixels per tile for a patch tile of `rows` rows that stays whole in L2."""
    tile = _TILE_BYTES // (max(rows, 1) * itemsize)
    tile = min(max(tile // _GRAIN * _GRAIN, _MIN_TILE), 1024)
    tile = min(tile, _round_up(max(pixels, 1), _GRAIN))
    while outer_tasks * -(-pixels // tile) < _MIN_TASKS and tile > _MIN_TILE:
        tile = max(_MIN_TILE, _round_up(tile // 2, _GRAIN))
    return tile


def _choose_tile_and_chunk(rows, out_rows, pixels, outer_tasks, itemsize):
    """(pixels per tile, patch rows per chunk) for the gather kernels, which gather and
    multiply a tile's patch rows a chunk at a time: tiles stay 256 pixels wide (gemm_acc's
    per-row overhead is paid per 16 multiply-adds at 64 pixels, per 64 at 256) however long
    the reduction, while the chunk (chunk x tile) and the result tile (out_rows x tile) each
    stay near 256 KiB, so both live in L2."""
    tile = min(256, max(_TILE_BYTES // (max(out_rows, 1) * itemsize) // _GRAIN * _GRAIN, _MIN_TILE))
    tile = min(tile, _round_up(max(pixels, 1), _GRAIN))
    while outer_tasks * -(-pixels // tile) < _MIN_TASKS and tile > _MIN_TILE:
        tile = max(_MIN_TILE, _round_up(tile // 2, _GRAIN))
    chunk = max(4, _TILE_BYTES // (tile * itemsize) // 4 * 4)  # a multiple of gemm_acc's 4 terms
    return tile, min(chunk, _round_up(max(rows, 1), 4))


def _bias_or_empty(bias, dtype):
    return np.empty(0, dtype=dtype) if bias is None else bias


def _phase_taps(stride, pad, dil, kernel):
    """Per residue a of the gx row (mod stride): the taps r that reach it and their grad_out offsets."""
    count = np.zeros(stride, dtype=np.int64)
    offset = np.zeros((stride, kernel), dtype=np.int64)
    tap = np.zeros((stride, kernel), dtype=np.int64)
    for a in range(stride):  # stride x kernel entries: geometry, not data
        for r in range(kernel):
            v = a + pad - r * dil
            if v % stride == 0:
                offset[a, count[a]] = v // stride
                tap[a, count[a]] = r
                count[a] += 1
    return count, offset, tap


# --------------------------------------------------------------------------- convolution

# Two algorithms for the forward and backward-data (STYLE: one file each, chosen by data).
# numba_conv.py gathers patch tiles, R*S copies of every input value, and wastes no
# arithmetic; numba_conv_shifted.py reads shifted windows of one padded copy of the input
# and computes (and drops) garbage columns to do so. The gather costs about as much as
# gemm_acc's work when the gemm has few output rows (the 1-3 channels of an image-producing
# layer: 2-3x faster shifted, seed shapes decoder.tconv2, dcgan.G4, dcgan.D1's backward),
# and is a small part of it from 32 channels on, where the shifted form's per-image tiles
# and extra columns make it slower (dcgan.G1-G3: up to 2.5x), so it takes only the former,
# with rows at most a third wider than the output's and grids long enough for gemm_acc's
# vector loop.
_SHIFTED_MAX_CHANNELS = 8


def _shifted_accepts(out_channels, out_cols, grid_cols, grid_rows):
    return (out_channels <= _SHIFTED_MAX_CHANNELS and 3 * grid_cols <= 4 * out_cols
            and grid_rows * grid_cols >= _MIN_TILE)


def conv_forward(x, w, bias, g):
    y = P.empty(np, "conv2d", g.y_shape, x.dtype)
    rows = (g.C // g.groups) * g.R * g.S
    bias = _bias_or_empty(bias, x.dtype)
    plane_w = g.out_w + ((g.S - 1) * g.dil_w) // g.stride_w
    if _shifted_accepts(g.K // g.groups, g.out_w, plane_w, g.out_h):
        tile = _choose_tile(rows, g.out_h * plane_w, g.N * g.groups, x.itemsize)
        with _kernel_call():
            _shifted.conv_forward(x, w, bias, y, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w,
                                  g.groups, tile)
    else:
        tile, chunk = _choose_tile_and_chunk(rows, g.K // g.groups, g.N * g.out_h * g.out_w, g.groups, x.itemsize)
        with _kernel_call():
            _conv.conv_forward(x, w, bias, y, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.groups,
                               tile, chunk)
    return y


def conv_backward_data(gy, w, bias, g):
    gx = P.empty(np, "conv2d_backward", g.x_shape, gy.dtype)
    bias = _bias_or_empty(bias, gy.dtype)
    ntap_h, off_h, tap_h = _phase_taps(g.stride_h, g.pad_h, g.dil_h, g.R)
    ntap_w, off_w, tap_w = _phase_taps(g.stride_w, g.pad_w, g.dil_w, g.S)
    phases = g.stride_h * g.stride_w
    kd = (g.K // g.groups) * g.R * g.S // phases + 1
    max_rows, max_cols = -(-g.H // g.stride_h), -(-g.W // g.stride_w)
    # The grad_out planes of the shifted form: padding for the most negative tap offset,
    # room for the most positive one, one slack row.
    lo_h, hi_h = _offset_range(ntap_h, off_h)
    lo_w, hi_w = _offset_range(ntap_w, off_w)
    pad_top, pad_left = max(0, -lo_h), max(0, -lo_w)
    plane_h, plane_w = max_rows + hi_h + pad_top + 1, max_cols + hi_w + pad_left
    if _shifted_accepts(g.C // g.groups, max_cols, plane_w, max_rows):
        tile = _choose_tile(kd, max_rows * plane_w, g.N * g.groups * phases, gy.itemsize)
        with _kernel_call():
            _shifted.conv_backward_data(gy, w, bias, gx, g.stride_h, g.stride_w, g.groups, ntap_h, off_h, tap_h,
                                        ntap_w, off_w, tap_w, pad_top, pad_left, plane_h, plane_w, tile)
    else:
        tile, chunk = _choose_tile_and_chunk(kd, g.C // g.groups, g.N * max_rows * max_cols, g.groups * phases,
                                             gy.itemsize)
        with _kernel_call():
            _conv.conv_backward_data(gy, w, bias, gx, g.stride_h, g.stride_w, g.groups, ntap_h, off_h, tap_h,
                                     ntap_w, off_w, tap_w, tile, chunk)
    return gx


def _offset_range(count, offset):
    """(lowest, highest) grad_out offset over the taps that exist; (0, 0) if none do."""
    used = [int(offset[a, i]) for a in range(count.size) for i in range(int(count[a]))]
    return (min(used), max(used)) if used else (0, 0)


def conv_backward_weight(gy, x, g):
    gw = P.empty(np, "conv2d_backward", g.w_shape, gy.dtype)
    rows = (g.C // g.groups) * g.R * g.S
    k_per_group = g.K // g.groups
    # Blocks of gw do not change any sum (numba_conv.conv_backward_weight), so they follow
    # the thread count: one block per task on one thread (every k block gathers the patch
    # rows again, every row block reads grad_out again), two per thread otherwise so that
    # uneven blocks still balance. Rows split first: a row block costs a re-read of grad_out,
    # a k block a re-gather of patches. Blocks of at most 512 rows keep the tiles in L2.
    threads = max(1, min(get_num_threads(), _numba_config.NUMBA_NUM_THREADS))
    want_blocks = -(-(1 if threads == 1 else 2 * threads) // g.groups)
    row_block = min(_round_up(max(-(-rows // want_blocks), _GRAIN), 4), _round_up(rows, 4), 512)
    row_blocks = -(-rows // row_block)
    k_block = k_per_group
    if row_blocks < want_blocks:
        split = -(-want_blocks // row_blocks)
        k_block = min(k_per_group, max(_GRAIN, _round_up(-(-k_per_group // split), 4)))
    # The tile fixes each sum's order: from the shape alone.
    tile = _TILE_BYTES // ((min(_round_up(rows, 4), 512) + _round_up(k_per_group, 4)) * x.itemsize)
    tile = min(max(tile // _GRAIN * _GRAIN, _MIN_TILE), 1024, _round_up(max(g.N * g.out_h * g.out_w, 1), _GRAIN))
    with _kernel_call():
        _conv.conv_backward_weight(gy, x, gw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w,
                                   g.groups, row_block, k_block, tile)
    return gw


# --------------------------------------------------------------------------- pooling

def max_pool_forward(x, g):
    y = P.empty(np, "max_pool2d", g.y_shape, x.dtype)
    indices = P.empty(np, "max_pool2d", g.y_shape, np.int64)
    with _kernel_call():
        _pool.max_pool_forward(x, y, indices, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                               g.dil_h, g.dil_w, x.dtype.type(-np.inf))
    return y, indices


def max_pool_backward(gy, indices, g):
    gx = P.empty(np, "max_pool2d_backward", g.x_shape, gy.dtype)
    with _kernel_call():
        _pool.max_pool_backward(gy, indices, gx)
    return gx


def avg_pool_forward(x, g):
    y = P.empty(np, "avg_pool2d", g.y_shape, x.dtype)
    with _kernel_call():
        _pool.avg_pool_forward(x, y, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                               g.count_include_pad, g.divisor_override)
    return y


def avg_pool_backward(gy, g):
    gx = P.empty(np, "avg_pool2d_backward", g.x_shape, gy.dtype)
    with _kernel_call():
        _pool.avg_pool_backward(gy, gx, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                                g.count_include_pad, g.divisor_override)
    return gx
