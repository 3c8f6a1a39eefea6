"""The CuPy backend: CUDA C++ kernels from csrc/cuda/, compiled at run time by NVRTC.

Sources. conv.cu and pool.cu (with their headers common.cuh, gemm_tile.cuh) are looked up first
in the installed package (``fastconv/cuda/``, where CMakeLists.txt installs them), then in a
source checkout (``<repo>/csrc/cuda``). Local ``#include "x.cuh"`` lines are pasted in before
compiling, so the text CuPy hashes for its on-disk kernel cache covers the headers too.
Templates are instantiated through ``cupy.RawModule(name_expressions=...)``, float32 and
float64. Every kernel runs on the current CuPy stream (CuPy's default for a launch).

Kernels (csrc/cuda/):
- conv forward, backward-data and backward-weight: implicit GEMM on one shared-memory tile
  (gemm_tile.cuh: 256 threads, BK = 16, double-buffered), tile BM x BN = 64x64, 32x128 or
  16x128 picked by the GEMM's M (out channels, or in channels for backward-data).
- backward-data, which is also the transposed convolution's forward: the sub-pixel (phase)
  decomposition, one dense correlation per (ih mod sh, iw mod sw) phase, no zero insertion.
- pooling: one thread per output (forward) or input pixel (backward).

Determinism: always on, every kernel gives the same bits on every run; no kernel uses atomics.
Backward-weight is a fixed split of the N*OH*OW reduction (the split count is a function of
the shape alone: weight_splits) in which each thread block owns one grad_w tile and sums its
split in a fixed order; the splits' partial tiles are then added in split order by a second
kernel. Both pooling backward passes are gathers: each input pixel sums, in a fixed order, the
outputs whose window covers it (max-pool: those whose index names it, as PyTorch's CUDA kernel).

Precision: the conv kernels sum products in the input dtype (as cuDNN without TF32); max-pool
backward sums in the input dtype in PyTorch's CPU order (its bits); avg-pool sums in double and
rounds once, in the reference's order (its bits). CuPy compiles every module with -ftz=true, which cannot be overridden: float32 subnormals
are flushed to zero inside these kernels (PyTorch's CUDA kernels keep them).

Launch planning (plan_* below) is pure Python over array objects, apart from the CuPy calls
that run the plans, so the tests can run the same plans through a CPU emulation of the
kernels (tests/test_cuda_sources.py).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _params as P

try:  # cupy is an optional dependency (the `cuda` extra)
    import cupy as _cupy
except Exception as e:  # ImportError, or a broken install failing inside cupy's own import
    _cupy = None
    _CUPY_IMPORT_ERROR = f"{type(e).__name__}: {e}"

SOURCES = ("conv.cu", "pool.cu")
NVRTC_OPTIONS = ("--std=c++17",)
THREADS = 256  # every kernel: 256 threads per block (gemm_tile.cuh's 16 x 16 thread grid)
MAX_GRID_YZ = 65535
MAX_GRID_X = 2**31 - 1
INT32_LIMIT = 2**31 - 1

_DTYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# (TM, TN): each thread owns TM x TN outputs, the block a (16*TM) x (16*TN) tile.
TILES = ((4, 4), (2, 8), (1, 8))


# --------------------------------------------------------------------------- sources

def source_dirs():
    """Where the CUDA sources may be, in lookup order: installed package, then source checkout."""
    package = Path(__file__).resolve().parents[1]
    return [package / "cuda", Path(__file__).resolve().parents[3] / "csrc" / "cuda"]


def source_dir():
    """The first of source_dirs() that holds every source, or None."""
    for d in source_dirs():
        if all((d / name).is_file() for name in SOURCES):
            return d
    return None


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def program_text(name, directory=None):
    """The source `name` with its local #include "..." files pasted in (each once)."""
    directory = Path(directory) if directory is not None else source_dir()
    if directory is None:
        raise RuntimeError(f"the CUDA sources are missing; looked in {', '.join(map(str, source_dirs()))}")
    seen = set()

    def expand(path):
        out = []
        for line in (directory / path).read_text().splitlines():
            if line.strip() == "#pragma once":
                continue
            m = _INCLUDE.match(line)
            if m:
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    out.append(f"// ---- {m.group(1)}")
                    out.extend(expand(m.group(1)))
                    out.append(f"// ---- end {m.group(1)}")
                continue
            out.append(line)
        return out

    return "\n".join(expand(name)) + "\n"


# --------------------------------------------------------------------------- kernel names

def _t(dtype):
    return _DTYPE_NAMES[np.dtype(dtype)]


def gemm_kernel(name, dtype, tile):
    return f"{name}<{_t(dtype)},{tile[0]},{tile[1]}>"


def plain_kernel(name, dtype):
    return f"{name}<{_t(dtype)}>"


def _kernel_names():
    conv, pool = [], []
    for dtype in _DTYPE_NAMES:
        for tile in TILES:
            conv += [gemm_kernel(k, dtype, tile)
                     for k in ("fc_conv_forward", "fc_conv_backward_data", "fc_conv_backward_weight")]
        conv.append(plain_kernel("fc_sum_splits", dtype))
        pool += [plain_kernel(k, dtype) for k in
                 ("fc_max_pool_forward", "fc_max_pool_backward", "fc_avg_pool_forward", "fc_avg_pool_backward")]
    return {"conv.cu": tuple(conv), "pool.cu": tuple(pool)}


# source -> every template instantiation the backend asks for (also what the tests compile).
KERNELS = _kernel_names()


# --------------------------------------------------------------------------- launch plans

@dataclass(frozen=True)
class Launch:
    source: str
    kernel: str  # a name expression from KERNELS[source]
    grid: tuple
    args: tuple  # arrays (passed as device pointers), None (a null pointer), np.int64, geometry records
    block: tuple = (THREADS, 1, 1)


# Kernel-side structs ConvGeom / PoolGeom (common.cuh): all int64, no padding.
CONV_GEOM = np.dtype([(f, np.int64) for f in
                      ("N", "C", "H", "W", "K", "R", "S", "groups", "sh", "sw", "ph", "pw", "dh", "dw", "OH", "OW")])
POOL_GEOM = np.dtype([(f, np.int64) for f in
                      ("N", "C", "H", "W", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "OH", "OW",
                       "count_include_pad", "divisor_override")])


# Launches pass the records as opaque bytes (numpy "V128"): CuPy reads a by-value argument's
# address through __array_interface__, which for a structured dtype rebuilds the field list on
# every launch (about 10 us per call in the profile on an H100 host); the kernel sees the same bytes.
CONV_GEOM_BYTES = np.dtype((np.void, CONV_GEOM.itemsize))
POOL_GEOM_BYTES = np.dtype((np.void, POOL_GEOM.itemsize))


def conv_geom(g):
    """A size-1 array of ConvGeom's bytes: CuPy passes it by value as the kernel's ConvGeom argument."""
    return np.array([(g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.groups, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                      g.dil_h, g.dil_w, g.out_h, g.out_w)], dtype=CONV_GEOM).view(CONV_GEOM_BYTES)


def pool_geom(g):
    return np.array([(g.N, g.C, g.H, g.W, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                      g.dil_h, g.dil_w, g.out_h, g.out_w, int(g.count_include_pad), g.divisor_override)],
                    dtype=POOL_GEOM).view(POOL_GEOM_BYTES)


def _ceil_div(a, b):
    return -(-a // b)


def choose_tile(rows):
    """The tile for a GEMM with `rows` rows: as few idle rows as possible, 256 threads always."""
    if rows <= 16:
        return (1, 8)
    if rows <= 32:
        return (2, 8)
    return (4, 4)


def _check_index_range(op, g):
    """The conv kernels index within a plane with 32-bit ints (conv.cu); refuse what would overflow."""
    Cg, Kg = g.C // g.groups, g.K // g.groups
    extent_h = max(g.H, g.out_h * g.stride_h) + g.pad_h + g.R * g.dil_h
    extent_w = max(g.W, g.out_w * g.stride_w) + g.pad_w + g.S * g.dil_w
    limits = {
        "H*W": g.H * g.W, "out_h*out_w": g.out_h * g.out_w, "the padded height": extent_h,
        "the padded width": extent_w, "C/groups*R*S": Cg * g.R * g.S, "K/groups*R*S": Kg * g.R * g.S,
    }
    for what, value in limits.items():
        if value > 2**30:
            raise ValueError(f"{op}: the cupy backend's kernels index planes with 32-bit integers; "
                             f"{what} = {value} exceeds 2^30")


def _z_chunks(total):
    """(z0, count) pieces of a grid.z range, each within CUDA's 65535 limit."""
    return [(z0, min(MAX_GRID_YZ, total - z0)) for z0 in range(0, total, MAX_GRID_YZ)]


def _gemm_launches(kernel, grid_x, grid_y, z_total, args):
    if grid_x == 0 or grid_y == 0:
        return []
    if grid_x > MAX_GRID_X or grid_y > MAX_GRID_YZ:
        raise ValueError(f"{kernel}: grid ({grid_x}, {grid_y}) exceeds CUDA's limits")
    return [Launch("conv.cu", kernel, (grid_x, grid_y, count), args + (np.int64(z0),))
            for z0, count in _z_chunks(z_total)]


def plan_conv_forward(x, w, bias, y, g):
    _check_index_range("conv2d", g)
    Kg = g.K // g.groups
    tile = choose_tile(Kg)
    grid_x = _ceil_div(g.N * g.out_h * g.out_w, 16 * tile[1])
    grid_y = _ceil_div(Kg, 16 * tile[0])
    return _gemm_launches(gemm_kernel("fc_conv_forward", x.dtype, tile), grid_x, grid_y, g.groups,
                          (x, w, bias, y, conv_geom(g)))


def plan_conv_backward_data(gy, w, bias, gx, g):
    _check_index_range("conv_backward_data", g)
    Cg = g.C // g.groups
    tile = choose_tile(Cg)
    # Sized for the largest phase, (ceil(H/sh), ceil(W/sw)) pixels; the others leave blocks idle.
    largest_phase = _ceil_div(g.H, g.stride_h) * _ceil_div(g.W, g.stride_w)
    grid_x = _ceil_div(g.N * largest_phase, 16 * tile[1])
    grid_y = _ceil_div(Cg, 16 * tile[0])
    phases = min(g.stride_h, g.H) * min(g.stride_w, g.W)  # residues >= H or W hold no pixel
    return _gemm_launches(gemm_kernel("fc_conv_backward_data", gy.dtype, tile), grid_x, grid_y,
                          g.groups * phases, (gy, w, bias, gx, conv_geom(g)))


# Backward-weight split: enough blocks to fill a large GPU (about 4 per SM of a 132-SM H100),
# but at least MIN_SPLIT reduction steps per block so the partial tiles stay cheap. These are
# constants, not device queries, so the bits do not depend on the GPU.
TARGET_BLOCKS = 512
MIN_SPLIT = 1024
MAX_SPLIT = 2**30  # keeps a block's k-tile count in an int (conv.cu)


def weight_splits(g, tiles):
    """(splits, chunk): the N*OH*OW reduction cut into `splits` ranges of `chunk` (a multiple of 16)."""
    reduction = g.N * g.out_h * g.out_w
    splits = max(1, min(_ceil_div(TARGET_BLOCKS, tiles), _ceil_div(reduction, MIN_SPLIT)))
    splits = max(splits, _ceil_div(reduction, MAX_SPLIT))
    chunk = max(16, _ceil_div(_ceil_div(reduction, splits), 16) * 16)
    return max(1, _ceil_div(reduction, chunk)), chunk


def plan_conv_backward_weight(gy, x, gw, g, alloc):
    """alloc(shape, dtype) provides the split workspace (cupy.empty on the GPU)."""
    _check_index_range("conv_backward_weight", g)
    Kg, columns = g.K // g.groups, (g.C // g.groups) * g.R * g.S
    tile = choose_tile(Kg)
    grid_x, grid_y = _ceil_div(columns, 16 * tile[1]), _ceil_div(Kg, 16 * tile[0])
    splits, chunk = weight_splits(g, grid_x * grid_y * g.groups)
    out = gw if splits == 1 else alloc((splits, g.K, columns), gy.dtype)
    launches = _gemm_launches(gemm_kernel("fc_conv_backward_weight", gy.dtype, tile), grid_x, grid_y,
                              g.groups * splits, (gy, x, out, conv_geom(g), np.int64(splits), np.int64(chunk)))
    if splits > 1:
        count = g.K * columns
        launches.append(Launch("conv.cu", plain_kernel("fc_sum_splits", gy.dtype), (_elementwise_blocks(count), 1, 1),
                               (out, gw, np.int64(count), np.int64(splits))))
    return launches


def _elementwise_blocks(total):
    return max(1, min(_ceil_div(total, THREADS), MAX_GRID_YZ))  # grid-stride loops cover the rest


def _pool_launch(kernel, dtype, total, args):
    if total == 0:
        return []
    return [Launch("pool.cu", plain_kernel(kernel, dtype), (_elementwise_blocks(total), 1, 1), args)]


def plan_max_pool_forward(x, y, indices, g):
    return _pool_launch("fc_max_pool_forward", x.dtype, g.N * g.C * g.out_h * g.out_w, (x, y, indices, pool_geom(g)))


def plan_max_pool_backward(gy, indices, gx, g):
    return _pool_launch("fc_max_pool_backward", gy.dtype, g.N * g.C * g.H * g.W, (gy, indices, gx, pool_geom(g)))


def plan_avg_pool_forward(x, y, g):
    return _pool_launch("fc_avg_pool_forward", x.dtype, g.N * g.C * g.out_h * g.out_w, (x, y, pool_geom(g)))


def plan_avg_pool_backward(gy, gx, g):
    return _pool_launch("fc_avg_pool_backward", gy.dtype, g.N * g.C * g.H * g.W, (gy, gx, pool_geom(g)))


# --------------------------------------------------------------------------- running on the GPU

def unavailable_reason():
    if _cupy is None:
        return (f"cupy is not installed or failed to import ({_CUPY_IMPORT_ERROR}); it needs an NVIDIA GPU and "
                f"`pip install fastconv[cuda]`")
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, a driver too old, no device
        return f"cupy cannot reach a CUDA device (no NVIDIA driver or GPU?): {type(e).__name__}: {e}"
    if count == 0:
        return "cupy sees no CUDA device"
    try:
        _cupy.cuda.nvrtc.getVersion()
    except Exception as e:
        return f"NVRTC, which compiles the CUDA sources, is not available: {type(e).__name__}: {e}"
    if source_dir() is None:
        return f"the CUDA sources are missing; looked in {', '.join(map(str, source_dirs()))}"
    return None


@functools.lru_cache(maxsize=None)
def _module(source, device_id):
    # One RawModule per source and device; NVRTC output is also cached on disk by CuPy.
    return _cupy.RawModule(code=program_text(source), options=NVRTC_OPTIONS, name_expressions=KERNELS[source])


@functools.lru_cache(maxsize=None)
def _function(source, kernel, device_id):
    return _module(source, device_id).get_function(kernel)


def _run(launches):
    device_id = _cupy.cuda.Device().id
    for launch in launches:
        # No stream argument: CuPy launches on the current stream.
        _function(launch.source, launch.kernel, device_id)(launch.grid, launch.block, launch.args)


def _empty(op, shape, dtype):
    return P.empty(_cupy, op, shape, dtype)


def _on_input_device(primitive):
    """Allocate and launch on the GPU that holds the first array, whatever device is current."""
    @functools.wraps(primitive)
    def on_device(a, *args):
        with a.device:
            return primitive(a, *args)
    return on_device


@_on_input_device
def conv_forward(x, w, bias, g):
    y = _empty("conv2d", g.y_shape, x.dtype)
    _run(plan_conv_forward(x, w, bias, y, g))
    return y


@_on_input_device
def conv_backward_data(gy, w, bias, g):
    gx = _empty("conv2d_backward", g.x_shape, gy.dtype)
    _run(plan_conv_backward_data(gy, w, bias, gx, g))
    return gx


@_on_input_device
def conv_backward_weight(gy, x, g):
    gw = _empty("conv2d_backward", g.w_shape, gy.dtype)
    _run(plan_conv_backward_weight(gy, x, gw, g, lambda shape, dtype: _empty("conv2d_backward", shape, dtype)))
    return gw


@_on_input_device
def max_pool_forward(x, g):
    y = _empty("max_pool2d", g.y_shape, x.dtype)
    indices = _empty("max_pool2d", g.y_shape, np.int64)
    _run(plan_max_pool_forward(x, y, indices, g))
    return y, indices


@_on_input_device
def max_pool_backward(gy, indices, g):
    gx = _empty("max_pool2d_backward", g.x_shape, gy.dtype)
    _run(plan_max_pool_backward(gy, indices, gx, g))
    return gx


@_on_input_device
def avg_pool_forward(x, g):
    y = _empty("avg_pool2d", g.y_shape, x.dtype)
    _run(plan_avg_pool_forward(x, y, g))
    return y


@_on_input_device
def avg_pool_backward(gy, g):
    gx = _empty("avg_pool2d_backward", g.x_shape, gy.dtype)
    _run(plan_avg_pool_backward(gy, gx, g))
    return gx
