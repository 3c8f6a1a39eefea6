"""The thread count shared by the OpenMP (cpp) and Numba backends."""
from __future__ import annotations

import os

_num_threads: int | None = None


def _default() -> int:
    env = os.environ.get("FASTCONV_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"FASTCONV_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n > 0:
            return n
        raise ValueError(f"FASTCONV_NUM_THREADS must be a positive integer, got {env!r}")
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Set the number of threads the CPU backends use (process-wide)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """The thread count in force: set_num_threads, else $FASTCONV_NUM_THREADS, else the usable cores."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default()
    return _num_threads


# Below this many elements of memory-bound work, waking a second thread costs more than it
# saves (a few microseconds on an idle machine, a scheduler tick on a busy one).
SERIAL_ELEMENTS = 1 << 16


def threads_for_elements(n: int) -> int:
    """Threads for memory-bound work over n elements: one for small n, else get_num_threads()."""
    return 1 if n < SERIAL_ELEMENTS else get_num_threads()
