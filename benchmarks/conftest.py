"""pytest-benchmark suites: `pytest benchmarks --benchmark-only`.

Each test file covers one op family and names its ops in OPS; every test is parametrised here
by shape (from the shapes file), implementation (each available fastconv backend, and torch
when importable) and direction (forward; backward with every gradient). The calls are the ones
`python -m fastconv bench` times (fastconv.bench.workloads and .peers), so the two agree on what
is measured.

    FASTCONV_BENCH_SHAPES=file.json   shapes file (default: the seed shapes shipped with fastconv)
    FASTCONV_BENCH_DTYPE=float64      dtype (default float32)
    FASTCONV_NUM_THREADS=N            threads, for fastconv and torch alike
"""
from __future__ import annotations

import os

import pytest

import fastconv
from fastconv.bench import peers, shapes, timing, workloads

SHAPES = shapes.load(os.environ.get("FASTCONV_BENCH_SHAPES") or None)
DTYPE = os.environ.get("FASTCONV_BENCH_DTYPE", "float32")
BACKENDS = [b for b in ("cpp", "numba", "cupy") if fastconv.backends()[b] is None]
PEERS = [p for p in peers.PEERS if peers.unavailable_reason(p) is None]


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        ops = metafunc.module.OPS
        selected = [s for s in SHAPES if s.op in ops]
        metafunc.parametrize("shape", selected, ids=[s.name for s in selected])
    if "impl_name" in metafunc.fixturenames:
        metafunc.parametrize("impl_name", BACKENDS + PEERS)
    if "direction" in metafunc.fixturenames:
        metafunc.parametrize("direction", workloads.DIRECTIONS)


@pytest.fixture(scope="session", autouse=True)
def _same_threads():
    timing.steady_heap()  # PyTorch's temporaries served from the heap, whatever ran first
    if PEERS:
        peers.set_threads(fastconv.get_num_threads())


@pytest.fixture
def run_case(benchmark, impl_name, direction):
    """run_case(shape): benchmark one implementation of one shape in one direction."""

    def run(shape):
        inputs = workloads.make_inputs(shape, DTYPE)
        if impl_name in BACKENDS:
            impl = workloads.backend_impl(impl_name, shape, inputs)
        else:
            impl = peers.torch_impl(shape, inputs)
        fn = impl.call(direction)
        if impl.device == "cuda":  # wall-clock timer: wait for the kernels, not just the launches
            import cupy

            launched = fn

            def fn():
                launched()
                cupy.cuda.Device().synchronize()
        work = shape.flops() or shape.bytes_moved(DTYPE)
        benchmark.group = f"{shape.name} {direction}"
        benchmark.extra_info.update(op=shape.op, impl=impl_name, direction=direction, dtype=DTYPE,
                                    threads=fastconv.get_num_threads(),
                                    **({"flops": work[direction]} if shape.is_conv else {"bytes": work[direction]}))
        benchmark(fn)

    return run
