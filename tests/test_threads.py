"""Threads: results do not depend on the thread count (bit for bit), and four Python threads
calling at once get exactly what one thread gets (the GIL is released in the kernels)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import fastconv
from conftest import call


def _workload(backend, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 8, 20, 19)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((8, 5, 4, 4)).astype(np.float32)
    y = call(backend, fastconv.conv2d, x, w, None, stride=1, padding=1)
    grads = call(backend, fastconv.conv2d_backward, y, x, w, None, padding=1)
    yt = call(backend, fastconv.conv_transpose2d, x, wt, None, stride=2, padding=1)
    gt = call(backend, fastconv.conv_transpose2d_backward, yt, x, wt, None, stride=2, padding=1)
    mp, idx = call(backend, fastconv.max_pool2d, x, 3, 2, 1, return_indices=True)
    gmp = call(backend, fastconv.max_pool2d_backward, mp, x, idx, 3, 2, 1)
    ap = call(backend, fastconv.avg_pool2d, x, 3, 1, 1)
    gap = call(backend, fastconv.avg_pool2d_backward, ap, x, 3, 1, 1)
    return [y, *grads[:2], yt, *gt[:2], mp, idx, gmp, ap, gap]


@pytest.fixture
def restore_threads():
    n = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(n)


def test_results_independent_of_thread_count(cpu_backend, restore_threads):
    results = {}
    for n in (1, 2, 3):
        fastconv.set_num_threads(n)
        results[n] = _workload(cpu_backend, 0)
    for n in (2, 3):
        for a, b in zip(results[1], results[n]):
            np.testing.assert_array_equal(a, b)


def test_four_python_threads_match_one(backend):
    expected = {seed: _workload(backend, seed) for seed in range(4)}
    got, errors = {}, []

    def worker(seed):
        try:
            for _ in range(3):
                got[seed] = _workload(backend, seed)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seed in range(4):
        for a, b in zip(expected[seed], got[seed]):
            np.testing.assert_array_equal(a, b)


def test_set_num_threads_validates(restore_threads):
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        fastconv.set_num_threads(0)
    fastconv.set_num_threads(3)
    assert fastconv.get_num_threads() == 3
