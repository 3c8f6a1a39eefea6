"""Large NumPy results on reused memory.

A fresh multi-MiB result is memory the allocator maps anew whenever it gave the last one back
to the system, and every 4 KiB page of it then costs a page fault on first touch (~2 us here).
That happens whenever other code allocated and freed in between: timed right after one of
PyTorch's calls, decoder.tconv2's grad_x (a 12 MiB result) took 2.75 ms a call against 2.30
after our own, all of it ~80 page faults a call. So a result of 1 MiB or more is a view of a
buffer that goes back to a small pool when the last array using it dies, and the next result
of the same size takes it, its pages still mapped.

Each result owns its buffer through a `_Lease` (its `.base`): NumPy keeps the owner of the
memory as the base of every view, so the lease dies -- and the buffer is pooled -- only when
no array refers to it any more. The pool keeps at most `_MAX_BUFFERS_PER_SIZE` buffers of a
size and `_MAX_POOLED_BYTES` in all, dropping the oldest beyond that.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

MIN_POOLED_BYTES = 1 << 20
_MAX_POOLED_BYTES = 256 << 20
_MAX_BUFFERS_PER_SIZE = 2
_ALIGN = 64

_lock = threading.Lock()
_free: OrderedDict[int, list[np.ndarray]] = OrderedDict()  # size -> idle buffers, oldest size first
_free_bytes = 0


class _Lease:
    """The owner of one result's memory: a 64-byte aligned window of a pooled buffer."""

    __slots__ = ("_buffer", "__array_interface__")

    def __init__(self, buffer: np.ndarray, shape: tuple, dtype: np.dtype):
        self._buffer = buffer
        start = buffer.ctypes.data + (-buffer.ctypes.data % _ALIGN)
        self.__array_interface__ = {"data": (start, False), "shape": tuple(shape), "typestr": dtype.str,
                                    "version": 3}

    def __del__(self):
        try:
            _give_back(self._buffer)
        except Exception:  # at interpreter exit the module may be half torn down
            pass


def _give_back(buffer: np.ndarray) -> None:
    global _free_bytes
    size = buffer.nbytes
    if size > _MAX_POOLED_BYTES:
        return
    with _lock:
        idle = _free.setdefault(size, [])
        _free.move_to_end(size)
        idle.append(buffer)
        _free_bytes += size
        if len(idle) > _MAX_BUFFERS_PER_SIZE:
            _free_bytes -= idle.pop(0).nbytes
        while _free_bytes > _MAX_POOLED_BYTES:  # the sizes used longest ago go first
            oldest, buffers = next(iter(_free.items()))
            _free_bytes -= buffers.pop(0).nbytes
            if not buffers:
                del _free[oldest]


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, 64-byte aligned, on a pooled buffer when one of its
    size is idle."""
    global _free_bytes
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + _ALIGN
    buffer = None
    with _lock:
        idle = _free.get(size)
        if idle:
            buffer = idle.pop()
            _free_bytes -= size
            if not idle:
                del _free[size]
    if buffer is None:
        buffer = np.empty(size, np.uint8)
    return np.asarray(_Lease(buffer, shape, dtype))


def pooled_bytes() -> int:
    """Bytes held idle in the pool (for tests)."""
    return _free_bytes


def clear() -> None:
    """Drop every idle buffer."""
    global _free_bytes
    with _lock:
        _free.clear()
        _free_bytes = 0
