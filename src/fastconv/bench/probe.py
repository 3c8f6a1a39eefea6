"""The machine's FMA peak and memory bandwidth, measured once per machine and thread count and
cached (fastconv.cache, namespace "probe"). `bench` divides achieved GFLOP/s and GB/s by these.

FMA peak: a dedicated kernel, not a library call. A BLAS matmul reaches 70-90 % of peak at best
and depends on the BLAS, so it measures the BLAS, not the machine. Instead we emit a loop of
independent fused multiply-adds in LLVM IR and compile it for the host CPU with llvmlite (always
present: Numba is built on it). Each iteration updates ACCUMULATORS independent vector
accumulators, each `acc = fma(acc, m, c)` on the widest vector the ISA has (512-bit with AVX-512,
256-bit with AVX, else 128-bit); with 12 independent chains every FMA pipe stays busy behind
the 4-5 cycle FMA latency on current x86 and Arm cores, and 12 accumulators plus m and c fit in
the 16 vector registers of AVX2. The kernel is called through ctypes, which releases the GIL, from
`threads` Python threads at once, so the figure is the aggregate peak at that thread count
(turbo and SMT effects included).

Memory bandwidth: numpy copies of arrays far larger than the last-level cache, split across
`threads` threads (numpy releases the GIL while copying). Counted as STREAM counts copy: bytes
read + bytes written. Large memcpy uses non-temporal stores, so there is no hidden
read-for-ownership traffic.

Shared machines: a run in which another process took a thread's CPU says nothing about the
machine. Each thread's CPU time (time.thread_time) is compared with the wall time; runs are short
and repeated until one is uncontended, and the best uncontended run is the figure. When none is
within the time budget, the figure falls back to work over CPU time (right for the FMA peak,
optimistic for bandwidth), is marked "contended": true, and is not cached.
"""
from __future__ import annotations

import ctypes
import threading
import time
import warnings

import numpy as np

from .. import cache

# Bump when the method changes: cached figures measured the old way are then ignored.
PROBE_VERSION = 2
ACCUMULATORS = 12
UNROLL = 4  # iterations per loop trip, so the loop counter is negligible against the FMAs
COPY_BYTES = 256 << 20  # per array, source and destination: 8x a 32 MB L3
# A run counts when every thread was on a CPU for at least this share of the wall time; on a
# shared machine short runs are repeated (at least _MIN_RUNS, then up to _BUDGET_S seconds) until
# one is, and the best counting run is the figure.
_UNCONTENDED = 0.9
_MIN_RUNS = 5
_BUDGET_S = 3.0


def _vector_bits(features: str) -> int:
    if "+avx512f" in features:
        return 512
    if "+avx" in features.split(","):
        return 256
    return 128


def _fma_ir(scalar: str, lanes: int) -> str:
    """LLVM IR for `void fma_loop(i64 trips, T* m, T* c, T* out)`: trips x UNROLL x ACCUMULATORS
    vector FMAs; the accumulators are summed into *out so that nothing is dead code."""
    vec = f"<{lanes} x {scalar}>"
    intrinsic = f"@llvm.fma.v{lanes}{'f32' if scalar == 'float' else 'f64'}"
    lines = [
        f"declare {vec} {intrinsic}({vec}, {vec}, {vec})",
        f"define void @fma_loop(i64 %trips, {scalar}* %mp, {scalar}* %cp, {scalar}* %out) {{",
        "entry:",
        f"  %m0 = load {scalar}, {scalar}* %mp",
        f"  %c0 = load {scalar}, {scalar}* %cp",
        f"  %m1 = insertelement {vec} undef, {scalar} %m0, i32 0",
        f"  %m = shufflevector {vec} %m1, {vec} undef, <{lanes} x i32> zeroinitializer",
        f"  %c1 = insertelement {vec} undef, {scalar} %c0, i32 0",
        f"  %c = shufflevector {vec} %c1, {vec} undef, <{lanes} x i32> zeroinitializer",
        "  br label %loop",
        "loop:",
        "  %i = phi i64 [0, %entry], [%i.next, %loop]",
    ]
    for a in range(ACCUMULATORS):
        lines.append(f"  %a{a}.0 = phi {vec} [%c, %entry], [%a{a}.{UNROLL}, %loop]")
    for u in range(UNROLL):
        for a in range(ACCUMULATORS):
            lines.append(f"  %a{a}.{u + 1} = call {vec} {intrinsic}({vec} %a{a}.{u}, {vec} %m, {vec} %c)")
    lines += [
        "  %i.next = add i64 %i, 1",
        "  %done = icmp uge i64 %i.next, %trips",
        "  br i1 %done, label %exit, label %loop",
        "exit:",
        f"  %s0 = fadd {vec} %a0.{UNROLL}, %a1.{UNROLL}",
    ]
    for a in range(2, ACCUMULATORS):
        lines.append(f"  %s{a - 1} = fadd {vec} %s{a - 2}, %a{a}.{UNROLL}")
    lines += [
        f"  %lane0 = extractelement {vec} %s{ACCUMULATORS - 2}, i32 0",
        f"  store {scalar} %lane0, {scalar}* %out",
        "  ret void",
        "}",
    ]
    return "\n".join(lines)


class _FmaKernel:
    """The compiled FMA loop for one dtype; keeps the JIT engine alive as long as the function."""

    def __init__(self, dtype: np.dtype):
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        features = llvm.get_host_cpu_features().flatten()
        bits = _vector_bits(features)
        self.dtype = np.dtype(dtype)
        self.lanes = bits // (8 * self.dtype.itemsize)
        scalar = "float" if self.dtype == np.float32 else "double"
        target = llvm.Target.from_default_triple()
        machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, opt=3)
        module = llvm.parse_assembly(_fma_ir(scalar, self.lanes))
        module.verify()
        self._engine = llvm.create_mcjit_compiler(module, machine)
        self._engine.finalize_object()
        ctype = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        # CFUNCTYPE (not PYFUNCTYPE): ctypes drops the GIL for the call, so threads run in parallel.
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.POINTER(ctype), ctypes.POINTER(ctype),
                                 ctypes.POINTER(ctype))
        self._fn = proto(self._engine.get_function_address("fma_loop"))
        self._ctype = ctype
        self.vector_bits = bits

    def flops(self, trips: int) -> int:
        return 2 * trips * UNROLL * ACCUMULATORS * self.lanes

    def __call__(self, trips: int) -> float:
        # m slightly below 1 and c small keep the accumulators finite and normal (no denormal
        # slow path) however long the loop runs: acc converges to c / (1 - m).
        m, c, out = self._ctype(0.999), self._ctype(1e-3), self._ctype(0)
        self._fn(trips, ctypes.byref(m), ctypes.byref(c), ctypes.byref(out))
        return out.value


def _parallel_run(work, threads: int) -> tuple[float, list[float]]:
    """Wall time of `threads` threads each running work(index), started together, and the CPU
    time each of them got."""
    barrier = threading.Barrier(threads + 1)
    cpu = [0.0] * threads

    def body(index):
        barrier.wait()
        start = time.thread_time()
        work(index)
        cpu[index] = time.thread_time() - start

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - start, cpu


def _best_rate(work, threads: int, amount: float) -> tuple[float, bool]:
    """The best aggregate rate (amount / wall time) over uncontended runs, and False; when no run
    was uncontended within the time budget, the best sum of per-thread rates over CPU time, and
    True. `amount` is split evenly over the threads."""
    best_clean = best_cpu = 0.0
    runs, deadline = 0, time.perf_counter() + _BUDGET_S
    while runs < _MIN_RUNS or (not best_clean and time.perf_counter() < deadline):
        wall, cpu = _parallel_run(work, threads)
        runs += 1
        if min(cpu) >= _UNCONTENDED * wall:
            best_clean = max(best_clean, amount / wall)
        best_cpu = max(best_cpu, sum(amount / threads / max(c, 1e-9) for c in cpu))
    return (best_clean, False) if best_clean else (best_cpu, True)


def fma_peak_gflops(dtype, threads: int, seconds: float = 0.05) -> tuple[float, int, bool]:
    """Aggregate FMA throughput of `threads` threads, the vector width used (bits), and whether
    the machine was too busy for an uncontended run."""
    kernel = _FmaKernel(dtype)
    trips = 1 << 12
    while True:  # calibrate on one thread: about `seconds` per run
        start = time.perf_counter()
        kernel(trips)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            break
        trips *= 4
    trips = max(1, int(trips * seconds / elapsed))
    rate, contended = _best_rate(lambda _: kernel(trips), threads, kernel.flops(trips) * threads)
    return rate / 1e9, kernel.vector_bits, contended


def memory_gbs(threads: int, nbytes: int = COPY_BYTES) -> tuple[float, bool]:
    """Aggregate copy bandwidth (read + write bytes per second) of `threads` threads, and whether
    the machine was too busy for an uncontended run."""
    src = np.ones(nbytes // 8, dtype=np.float64)  # ones, not empty: the pages must be mapped
    dst = np.zeros_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)

    def copy(index):
        lo, hi = bounds[index], bounds[index + 1]
        np.copyto(dst[lo:hi], src[lo:hi])

    rate, contended = _best_rate(copy, threads, 2 * nbytes)
    return rate / 1e9, contended


def measure(threads: int) -> dict:
    """Measure everything now (a few seconds). A peak that cannot be measured is None."""
    peaks, bits, busy_fma = {}, None, False
    for dtype in ("float32", "float64"):
        try:
            gflops, bits, busy = fma_peak_gflops(dtype, threads)
            peaks[dtype] = round(gflops, 2)
            busy_fma |= busy
        except Exception as e:  # no LLVM target for this host: percentages of peak stay blank
            warnings.warn(f"FMA peak probe failed ({type(e).__name__}: {e}); % of peak will be blank",
                          RuntimeWarning, stacklevel=2)
            peaks[dtype] = None
    gbs, busy_memory = memory_gbs(threads)

    def how(busy):
        return "CPU-time estimate, no uncontended run" if busy else "best uncontended run"

    return {
        "threads": threads,
        "fma_peak_gflops": peaks,
        "fma_method": (f"llvmlite-jit loop of {ACCUMULATORS} independent {bits}-bit vector FMA chains "
                       f"per thread, {threads} thread(s), {how(busy_fma)}") if bits else None,
        "memory_gbs": round(gbs, 2),
        "memory_method": (f"numpy copy of {COPY_BYTES >> 20} MiB split over {threads} thread(s), "
                          f"bytes read + written, {how(busy_memory)}"),
        "contended": busy_fma or busy_memory,
    }


def get(threads: int, *, refresh: bool = False) -> dict:
    """The cached probe for this machine at `threads` threads, measured now when absent (or
    when refresh is set). `cached` in the result says which. Figures measured on a machine too
    busy for one uncontended run are returned but not cached, so that a quieter run replaces them."""
    key = {"probe": PROBE_VERSION}
    if not refresh:
        hit = cache.get("probe", key, threads=threads)
        if hit is not None:
            return dict(hit, cached=True)
    result = measure(threads)
    if not result["contended"]:
        cache.put("probe", key, result, threads=threads)
    return dict(result, cached=False)
