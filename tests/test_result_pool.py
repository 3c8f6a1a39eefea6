"""Large NumPy results on reused memory (_result_pool.py): reuse only once no array refers to a buffer,
bounded idle memory, and results that behave as any fresh array."""
import numpy as np
import pytest

import fastconv
from fastconv import _params as P
from fastconv import _result_pool as _pool

SHAPE = (4, 64, 32, 32)  # 1 MiB of float32


@pytest.fixture(autouse=True)
def empty_pool():
    _pool.clear()
    yield
    _pool.clear()


def test_a_large_result_is_aligned_contiguous_and_writeable():
    a = P.empty(np, "test", SHAPE, np.float32)
    assert a.shape == SHAPE and a.dtype == np.float32
    assert a.flags["C_CONTIGUOUS"] and a.flags["WRITEABLE"] and a.ctypes.data % 64 == 0
    a[...] = 1.5
    assert float(a.sum()) == 1.5 * a.size


def test_small_results_are_plain_arrays():
    a = P.empty(np, "test", (4, 4), np.float32)
    assert a.base is None and _pool.pooled_bytes() == 0


def test_memory_is_reused_only_after_the_last_view_dies():
    a = P.empty(np, "test", SHAPE, np.float32)
    address = a.ctypes.data
    view = a[1:3]
    del a
    assert _pool.pooled_bytes() == 0  # the slice still holds the buffer
    b = P.empty(np, "test", SHAPE, np.float32)
    assert b.ctypes.data != address
    view[...] = 7.0  # still its own memory
    assert not np.shares_memory(view, b)
    del view
    assert _pool.pooled_bytes() > 0
    c = P.empty(np, "test", SHAPE, np.float32)
    assert c.ctypes.data == address and _pool.pooled_bytes() == 0


def test_a_buffer_is_reused_for_another_shape_of_the_same_size():
    a = P.empty(np, "test", SHAPE, np.float32)
    address = a.ctypes.data
    del a
    b = P.empty(np, "test", (SHAPE[0] // 2,) + SHAPE[1:], np.float64)
    assert b.ctypes.data == address and b.dtype == np.float64


def test_idle_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(_pool, "_MAX_POOLED_BYTES", 3 * (1 << 20) + 3 * 64)
    results = [P.empty(np, "test", SHAPE, np.float32) for _ in range(4)]
    del results
    assert _pool.pooled_bytes() == 2 * ((1 << 20) + 64)  # two per size
    others = [P.empty(np, "test", (SHAPE[0] * 2,) + SHAPE[1:], np.float32) for _ in range(2)]
    del others  # 2 MiB each: the oldest buffers go until the cap holds
    assert _pool.pooled_bytes() <= 3 * (1 << 20) + 3 * 64


def test_conv_results_on_reused_memory_are_correct(rng):
    x = rng.standard_normal((4, 16, 64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    first = fastconv.conv2d(x, w, padding=1, backend="cpp")
    expected = first.copy()
    address = first.ctypes.data
    del first
    second = fastconv.conv2d(x, w, padding=1, backend="cpp")
    assert second.ctypes.data == address
    assert np.array_equal(second, expected)
