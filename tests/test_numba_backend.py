"""Numba-specific behaviour: the threading layer, concurrent calls, fork, the thread count and
the on-disk cache. The numeric differential suite (test_conv.py, test_pool.py, ...) runs on
numba through conftest.BACKENDS; this file tests what only the Numba backend has."""
from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

import fastconv
from conftest import AVAILABLE, unavailable

pytestmark = pytest.mark.skipif("numba" not in AVAILABLE, reason=f"numba backend: {unavailable('numba')}")

if "numba" in AVAILABLE:
    import numba

    from fastconv.backends import numba as nb_backend


@pytest.fixture
def restore_threads():
    n = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(n)


def _workload(seed, dtype=np.float32):
    """Every primitive, on shapes that give several tiles, a ragged last tile, several
    weight-gradient blocks, groups, dilation, and a strided transposed conv (phases)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 8, 23, 21)).astype(dtype)
    w = rng.standard_normal((12, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    wt = rng.standard_normal((8, 5, 4, 4)).astype(dtype)
    bt = rng.standard_normal(5).astype(dtype)
    conv = dict(stride=1, padding=2, dilation=2, groups=2)
    y = fastconv.conv2d(x, w, b, **conv, backend="numba")
    grads = fastconv.conv2d_backward(y, x, w, b, **conv, backend="numba")
    tconv = dict(stride=2, padding=1, output_padding=1)
    yt = fastconv.conv_transpose2d(x, wt, bt, **tconv, backend="numba")
    gt = fastconv.conv_transpose2d_backward(yt, x, wt, bt, **tconv, backend="numba")
    mp, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numba")
    gmp = fastconv.max_pool2d_backward(mp, x, idx, 3, 2, 1, backend="numba")
    ap = fastconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, backend="numba")
    gap = fastconv.avg_pool2d_backward(ap, x, 3, 2, 1, ceil_mode=True, count_include_pad=False, backend="numba")
    return [y, *grads, yt, *gt, mp, idx, gmp, ap, gap]


def _assert_identical(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_threading_layer_is_threadsafe_or_locked():
    fastconv.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), backend="numba")
    layer = nb_backend.threading_layer()
    assert layer in ("tbb", "omp", "workqueue")
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        # Our choice: tbb where it loads, else workqueue (omp is not fork-safe and spin-waits).
        try:
            import numba.np.ufunc.tbbpool  # noqa: F401
        except ImportError:
            assert layer == "workqueue"
        else:
            assert layer == "tbb"
    # workqueue aborts the process on concurrent launches: then every launch takes the lock.
    assert nb_backend._serialize == (layer == "workqueue")


def test_four_python_threads_at_once_agree_with_one(restore_threads):
    fastconv.set_num_threads(2)
    want = _workload(7)
    barrier = threading.Barrier(4)
    results, errors = {}, []

    def run(i):
        try:
            barrier.wait()
            results[i] = [_workload(7) for _ in range(3)]
        except Exception as e:  # reported below: an exception in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    assert not errors, errors
    for runs in results.values():
        for got in runs:
            _assert_identical(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_independent_of_thread_count(dtype, restore_threads):
    counts = sorted({1, 2, numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS + 3})
    results = {}
    for n in counts:
        fastconv.set_num_threads(n)
        results[n] = _workload(3, dtype)
    for n in counts[1:]:
        _assert_identical(results[n], results[counts[0]])


def test_fastconv_thread_count_governs_numba(restore_threads):
    x = np.ones((1, 2, 6, 6), np.float32)
    for n in (1, 2, 64):
        fastconv.set_num_threads(n)
        fastconv.max_pool2d(x, 2, backend="numba")
        # numba.set_num_threads is per Python thread: the caller's value is what the kernel used.
        assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)


@pytest.fixture(scope="module")
def thread_probe():
    @numba.njit(parallel=True)
    def probe(out):
        for i in numba.prange(out.size):
            out[i] = numba.get_thread_id()

    return probe


def test_parallel_regions_use_at_most_the_set_threads(thread_probe, restore_threads):
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        fastconv.set_num_threads(n)
        ids = np.full(64, -1, dtype=np.int64)
        with nb_backend._kernel_call():  # what every primitive does around its kernel
            thread_probe(ids)
        assert ids.min() >= 0 and ids.max() < n


def _child_conv(_):
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    return float(fastconv.conv2d(x, w, backend="numba").sum())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_can_run_kernels():
    if nb_backend.threading_layer() == "omp":
        pytest.skip("GNU OpenMP is not fork-safe (the reason fastconv does not choose omp)")
    want = _child_conv(0)  # the parent has launched Numba's threads before forking
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map_async(_child_conv, range(2)).get(timeout=120)
    assert got == [want, want]


def test_cache_dir_holds_the_compiled_kernels():
    fastconv.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), backend="numba")
    where = nb_backend.cache_dir()
    assert os.path.isdir(where)
    assert any(name.startswith("numba_conv.conv_forward") and name.endswith(".nbi") for name in os.listdir(where))
