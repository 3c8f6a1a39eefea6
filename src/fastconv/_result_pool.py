"""Large NumPy results on reused memory.

A fresh multi-MiB result is memory the allocator maps anew whenever it gave the last one back
to the system, and every 4 KiB page of it then costs a page fault on first touch (~2 us here).
That happens whenever other code allocated and freed in between: timed right after one of
PyTorch's calls, decoder.tconv2's grad_x (a 12 MiB result) took 2.75 ms a call against 2.30
after our own, all of it ~80 page faults a call. So a result of 1 MiB or more is a view of a
pooled buffer, and the next result of the same size takes that buffer once no array uses it,
its pages still mapped.

NumPy makes the buffer the `.base` of every view of a result (and of views of those), so the
buffer's reference count says whether any array still uses it: the pool's own reference is
the only one left when none does. (An owner object with a `__del__` that handed the buffer back
did the same at ~9 us a result, a tenth of a small max-pool backward; this costs ~3 us.) The pool
tracks at most `_MAX_BUFFERS_PER_SIZE` buffers of a size and `_MAX_POOLED_BYTES` in all,
dropping idle buffers of the sizes used longest ago beyond that; a result that finds every
tracked buffer of its size in use gets plain fresh memory.
"""
from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict

import numpy as np

MIN_POOLED_BYTES = 1 << 20
_MAX_POOLED_BYTES = 256 << 20
_MAX_BUFFERS_PER_SIZE = 2
_ALIGN = 64

_lock = threading.Lock()
# size -> [(buffer, offset of its first 64-byte aligned byte)], sizes used longest ago first
_tracked: OrderedDict[int, list[tuple[np.ndarray, int]]] = OrderedDict()


def _unused(entry) -> bool:
    """No array uses the entry's buffer: its references are the entry's and getrefcount's own."""
    return sys.getrefcount(entry[0]) == 2


def _tracked_bytes() -> int:
    return sum(size * len(entries) for size, entries in _tracked.items())


def _make_room(size: int) -> bool:
    """Drop idle buffers of the sizes used longest ago until `size` more bytes fit the bound;
    False if they cannot."""
    total = _tracked_bytes()
    for other in list(_tracked):
        if total + size <= _MAX_POOLED_BYTES:
            break
        entries = _tracked[other]
        for entry in [e for e in entries if _unused(e)]:
            if total + size > _MAX_POOLED_BYTES:
                entries.remove(entry)
                total -= other
        if not entries:
            del _tracked[other]
    return total + size <= _MAX_POOLED_BYTES


def _aligned(buffer: np.ndarray, offset: int, shape, dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, 64-byte aligned, on a pooled buffer when one of its
    size is idle."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize + _ALIGN
    with _lock:
        entries = _tracked.get(size)
        entry = next((e for e in entries if _unused(e)), None) if entries else None
        if entry is not None:
            _tracked.move_to_end(size)
            return _aligned(entry[0], entry[1], shape, dtype)
        buffer = np.empty(size, np.uint8)
        entry = (buffer, -buffer.__array_interface__["data"][0] % _ALIGN)
        if len(entries or ()) < _MAX_BUFFERS_PER_SIZE and size <= _MAX_POOLED_BYTES and _make_room(size):
            _tracked.setdefault(size, []).append(entry)
            _tracked.move_to_end(size)
    return _aligned(buffer, entry[1], shape, dtype)


def pooled_bytes() -> int:
    """Bytes of tracked buffers no array uses (for tests)."""
    with _lock:
        return sum(size for size, entries in _tracked.items() for entry in entries if _unused(entry))


def clear() -> None:
    """Stop tracking every buffer (those in use stay with their arrays)."""
    with _lock:
        _tracked.clear()
