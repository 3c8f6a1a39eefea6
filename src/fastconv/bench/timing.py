"""Timing: calibrated repetitions, interleaved rounds, medians.

Every measurement is `reps` back-to-back calls of one function divided by `reps`, with `reps`
calibrated so that a measurement lasts at least `min_time` (timer resolution and call overhead
become noise). The calibration calls also serve as warm-up (first-call costs such as JIT
compilation, workspace allocation or autotuning are excluded). Then all functions of a shape are
measured in rounds, one measurement each per round, the order rotated every round: a machine
that slows down or speeds up during the run (turbo, other tenants) affects every implementation
alike instead of whichever happened to run last. The median over rounds is the figure reported.

CPU work is timed with time.perf_counter. CUDA work is timed with CUDA events around the calls,
after synchronising the device before and after, so the figure is device time, not launch time;
CuPy is imported only when something runs on CUDA.
"""
from __future__ import annotations

import ctypes
import gc
import math
import statistics
import sys
import time
from typing import Callable

# glibc's mallopt parameters (malloc.h) and the values steady_heap sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 256 << 20, 1 << 30


def steady_heap() -> str | None:
    """Serve allocations under 256 MiB from the heap and keep freed heap memory, in this process.

    glibc maps each allocation above its mmap threshold afresh, page faults and all (~2 us a
    page here), and raises that threshold the first time such a mapping is freed. So whether
    PyTorch's multi-megabyte temporaries cost page faults on every call depends on what the
    process freed before: the same backward of the decoder's 64->3 transposed conv took 16 ms in
    one run and 4.4 ms in the next. Fixing the thresholds times every implementation at its
    fast setting, whatever ran first. Returns what was set, or None where mallopt is missing
    (not glibc) or refused."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError):
        return None
    return f"glibc mmap threshold {_MMAP_THRESHOLD >> 20} MiB, trim threshold {_TRIM_THRESHOLD >> 20} MiB" if ok else None


def seconds_per_call(fn: Callable[[], object], reps: int, device: str = "cpu") -> float:
    if device == "cpu":
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps
    import cupy

    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3 / reps


def calibrate(fn: Callable[[], object], min_time: float, device: str = "cpu") -> int:
    """The number of calls whose total lasts at least min_time (warm-up included here)."""
    fn()
    reps = 1
    while True:
        total = seconds_per_call(fn, reps, device) * reps
        if total >= min_time:
            return reps
        # aim 20 % past the target from the latest estimate, growing at most 10x per step
        reps = min(reps * 10, max(reps + 1, math.ceil(reps * 1.2 * min_time / max(total, 1e-9))))


def rounds(measurements: dict[str, tuple[Callable[[], object], str]], repeat: int, min_time: float) -> dict:
    """Time each function (key -> (fn, device)) in `repeat` interleaved rounds.

    Returns key -> {"reps": calls per measurement, "samples_s": seconds per call, one per round}."""
    keys = list(measurements)
    if not keys:  # every implementation failed on this shape
        return {}
    reps = {k: calibrate(fn, min_time, device) for k, (fn, device) in measurements.items()}
    samples: dict[str, list[float]] = {k: [] for k in keys}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection landing in one measurement is noise, as in timeit
    try:
        for r in range(repeat):
            shift = r % len(keys)
            for k in keys[shift:] + keys[:shift]:
                fn, device = measurements[k]
                samples[k].append(seconds_per_call(fn, reps[k], device))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: {"reps": reps[k], "samples_s": samples[k]} for k in keys}


def summary(samples_s: list[float]) -> dict:
    """Median, min and max in milliseconds."""
    return {"median_ms": statistics.median(samples_s) * 1e3, "min_ms": min(samples_s) * 1e3,
            "max_ms": max(samples_s) * 1e3}


def geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))
