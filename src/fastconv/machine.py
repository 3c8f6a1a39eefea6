"""What this machine is: CPU model, ISA flags, cores, GPU, library versions.

Used by `python -m fastconv info`, by bench JSON files and by cache keys.
"""
from __future__ import annotations

import importlib
import os
import platform


def _cpuinfo_field(field):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD-relevant ISA flags the CPU reports."""
    flags = set((_cpuinfo_field("flags") or "").split())
    wanted = ["sse2", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "amx_tile", "neon", "asimd"]
    return [f for f in wanted if f in flags]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first CUDA device's name via CuPy, or None (no CuPy, no driver, no device)."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in ("fastconv", "numpy", "numba", "torch", "cupy"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:
            out[name] = None
    return out


def describe() -> dict:
    from . import get_num_threads

    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores": cores(),
        "isa_flags": cpu_flags(),
        "threads": get_num_threads(),
        "gpu": gpu_name(),
        "versions": versions(),
    }
