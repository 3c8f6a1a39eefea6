"""The CUDA sources without a GPU: they compile, they compute the right thing, and the cupy
backend says clearly why it cannot run.

1. nvcc (CI has nvcc and no GPU) compiles every csrc/cuda/*.cu for sm_80 and sm_90 with exactly
   the template instantiations the backend asks NVRTC for (fastconv.backends.cupy.KERNELS), warnings
   as errors. Where an NVRTC library is at hand, the sources also go through NVRTC itself, which
   unlike nvcc has no host headers.
2. The kernels run on the CPU: csrc/cuda/cpu_emulation.h stands in for the CUDA built-ins (a
   block's threads are fibers, __syncthreads a switch), and the backend's own launch plans
   (grids, argument lists, workspaces) drive them. Results are compared with the NumPy reference
   on shapes chosen to reach every tile size, phase and split edge.
3. The rest of the suite's cupy-parametrised tests run in a subprocess against a stand-in `cupy`
   module whose arrays are numpy arrays and whose RawModule launches go to the emulator: the
   public API, dispatch, validation, the backend and the kernels, with no GPU.
4. unavailable_reason() names the missing piece (cupy, driver or device, NVRTC) without hanging.

On a machine with a GPU the same differential tests run on the real cupy backend (conftest.py
lists it as available); what the emulator cannot show (races between warps, timing, -ftz) is
checked only there.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

from fastconv import _params as P
from fastconv.backends import cupy as cb
from fastconv.backends import reference as ref

CUDA_DIR = Path(__file__).resolve().parents[1] / "csrc" / "cuda"
SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
ARCHES = ("sm_80", "sm_90")


def test_every_source_has_kernels_listed():
    assert SOURCES == sorted(cb.SOURCES) == sorted(cb.KERNELS)


def test_sources_found():
    """Installed package first (fastconv/cuda), then a source checkout; either way the same files."""
    import fastconv

    package_dir = Path(fastconv.__file__).resolve().parent / "cuda"
    assert cb.source_dirs()[0] == package_dir
    found = cb.source_dir()
    assert found is not None, cb.source_dirs()
    if package_dir.is_dir():  # an installed wheel ships its own copy
        assert found == package_dir
    else:
        assert found == CUDA_DIR
    for p in CUDA_DIR.iterdir():
        if p.suffix in (".cu", ".cuh"):
            assert (found / p.name).read_bytes() == p.read_bytes(), f"{found / p.name} differs from {p}"


def test_program_text_pastes_local_headers():
    for name in SOURCES:
        text = cb.program_text(name, CUDA_DIR)
        assert '#include "' not in text and "#pragma once" not in text
        assert "struct ConvGeom" in text and text.count("struct ConvGeom {") == 1
        for expr in cb.KERNELS[name]:
            assert expr.split("<")[0] in text


def _struct_fields(text, name):
    body = re.sub(r"//[^\n]*", "", text.split(f"struct {name} {{", 1)[1].split("};", 1)[0])
    return [field.strip() for decl in body.split(";") if decl.strip()
            for field in decl.strip().removeprefix("i64").split(",")]


def test_geometry_records_match_the_kernel_structs():
    """The numpy records CuPy passes by value have the kernels' field order, all int64."""
    text = (CUDA_DIR / "common.cuh").read_text()
    for record, struct_name in ((cb.CONV_GEOM, "ConvGeom"), (cb.POOL_GEOM, "PoolGeom")):
        assert list(record.names) == _struct_fields(text, struct_name)
        assert all(record[n] == np.int64 for n in record.names) and record.itemsize == 8 * len(record.names)


def _instantiation_shim(name):
    refs = ",\n".join(f"  (const void*)&{expr}" for expr in cb.KERNELS[name])
    return (f'#include "{CUDA_DIR / name}"\n'
            f"extern const void* const fc_instances[];\n"
            f"const void* const fc_instances[] = {{\n{refs}\n}};\n")


# --------------------------------------------------------------------------- nvcc

def find_nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NVCC = find_nvcc()


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("source", SOURCES)
def test_nvcc_compiles(source, arch, tmp_path):
    if NVCC is None:
        pytest.skip("no nvcc on PATH or in /usr/local/cuda*/bin: the CUDA sources were not compiled")
    shim = tmp_path / f"instantiate_{source}"
    shim.write_text(_instantiation_shim(source))
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings", "-c", str(shim), "-o",
           str(tmp_path / "out.o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"


# --------------------------------------------------------------------------- NVRTC

def find_nvrtc():
    """An NVRTC shared library, if any is installed (CUDA toolkit, pip nvidia-cuda-nvrtc, cupy's)."""
    candidates = []
    for root in sys.path:
        candidates += glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libnvrtc.so*"))
        candidates += glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
    candidates += glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
    named = ctypes.util.find_library("nvrtc")
    if named:
        candidates.append(named)
    for path in candidates:
        if "builtins" in os.path.basename(path) or "alt" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def nvrtc_compile(lib, source_text, name, name_expressions, options):
    """Compile with NVRTC as cupy.RawModule does; returns (ok, log)."""
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or pytest.fail(f"{what} returned {rc}")  # noqa: E731
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source_text.encode(), name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    for expr in name_expressions:
        check(lib.nvrtcAddNameExpression(prog, expr.encode()), "nvrtcAddNameExpression")
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc == 0:
        for expr in name_expressions:
            lowered = ctypes.c_char_p()
            check(lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(lowered)), f"lowered name of {expr}")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace")


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("source", SOURCES)
def test_nvrtc_compiles(source, arch):
    lib = find_nvrtc()
    if lib is None:
        pytest.skip("no NVRTC library installed (CUDA toolkit or pip nvidia-cuda-nvrtc): NVRTC compile not checked")
    # The flags cupy's compiler adds to ours (cupy/cuda/compiler.py): a cubin for the device's
    # arch, every function a device function by default, denormals flushed.
    options = [*cb.NVRTC_OPTIONS, f"-arch={arch}", "--device-as-default-execution-space", "-ftz=true"]
    ok, log = nvrtc_compile(lib, cb.program_text(source, CUDA_DIR), source, cb.KERNELS[source], options)
    assert ok, log
    assert "warning" not in log.lower(), log


# --------------------------------------------------------------------------- unavailable_reason

def test_reason_when_cupy_is_missing(monkeypatch):
    monkeypatch.setattr(cb, "_cupy", None)
    monkeypatch.setattr(cb, "_CUPY_IMPORT_ERROR", "ModuleNotFoundError: No module named 'cupy'", raising=False)
    reason = cb.unavailable_reason()
    assert "cupy is not installed" in reason and "fastconv[cuda]" in reason


def _fake_cupy(device_count=None, runtime_error=None, nvrtc_error=None):
    def get_device_count():
        if runtime_error:
            raise runtime_error
        return device_count

    def nvrtc_version():
        if nvrtc_error:
            raise nvrtc_error
        return (12, 4)

    return types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count),
        nvrtc=types.SimpleNamespace(getVersion=nvrtc_version)))


def test_reason_when_no_driver(monkeypatch):
    error = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    monkeypatch.setattr(cb, "_cupy", _fake_cupy(runtime_error=error))
    reason = cb.unavailable_reason()
    assert "no NVIDIA driver or GPU" in reason and "InsufficientDriver" in reason


def test_reason_when_no_device(monkeypatch):
    monkeypatch.setattr(cb, "_cupy", _fake_cupy(device_count=0))
    assert cb.unavailable_reason() == "cupy sees no CUDA device"


def test_reason_when_no_nvrtc(monkeypatch):
    monkeypatch.setattr(cb, "_cupy", _fake_cupy(device_count=1, nvrtc_error=OSError("libnvrtc.so.12: not found")))
    assert "NVRTC" in cb.unavailable_reason()


def test_reason_when_sources_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(cb, "_cupy", _fake_cupy(device_count=1))
    monkeypatch.setattr(cb, "source_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    assert "CUDA sources are missing" in cb.unavailable_reason()


def test_available_with_everything_present(monkeypatch):
    monkeypatch.setattr(cb, "_cupy", _fake_cupy(device_count=1))
    assert cb.unavailable_reason() is None


def test_reason_here_is_clear():
    import fastconv

    reason = fastconv.backends()["cupy"]
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert reason and "cupy is not installed" in reason
    else:
        assert reason is None or len(reason) > 10


def test_run_compiles_once_and_launches_like_rawkernel(monkeypatch):
    """_run's use of CuPy: one RawModule per source and device, RawKernel-style calls."""
    compiled, calls = [], []

    class FakeModule:
        def __init__(self, code, options, name_expressions):
            compiled.append((code, options, tuple(name_expressions)))

        def get_function(self, name):
            return lambda grid, block, args: calls.append((name, grid, block, args))

    fake = _fake_cupy(device_count=1)
    fake.RawModule = FakeModule
    fake.cuda.Device = lambda: types.SimpleNamespace(id=0)
    monkeypatch.setattr(cb, "_cupy", fake)
    cb._module.cache_clear()
    cb._function.cache_clear()
    try:
        x = np.zeros((2, 3, 8, 8), np.float32)
        _, x, _, g, _ = P.pool_params("max_pool2d", x, 2, 2, 0, 1, False)
        y, indices = np.empty(g.y_shape, np.float32), np.empty(g.y_shape, np.int64)
        for _ in range(2):
            cb._run(cb.plan_max_pool_forward(x, y, indices, g))
    finally:
        cb._module.cache_clear()
        cb._function.cache_clear()
    assert compiled == [(cb.program_text("pool.cu"), cb.NVRTC_OPTIONS, cb.KERNELS["pool.cu"])]
    assert len(calls) == 2
    name, grid, block, args = calls[0]
    assert name == "fc_max_pool_forward<float>" and block == (256, 1, 1) and grid[0] >= 1
    assert args[:3] == (x, y, indices) and args[3].dtype == cb.POOL_GEOM_BYTES and args[3].shape == (1,)
    assert args[3].view(cb.POOL_GEOM)[0]["kh"] == 2


# --------------------------------------------------------------------------- CPU emulation

class Emulator:
    """Runs cupy-backend launch plans on numpy arrays through the emulated kernels."""

    def __init__(self, exe):
        self.exe = exe

    def run(self, launches, tmp_path, reverse=False):
        """Run the launches; reverse=True schedules each block's threads last to first."""
        arrays, index = [], {}

        def buffer(a):
            assert a.flags.c_contiguous
            if id(a) not in index:
                index[id(a)] = len(arrays)
                arrays.append(a)
            return index[id(a)]

        script = [b""]  # buffers are written once all launches are known
        body = [struct.pack("<I", len(launches))]
        for launch in launches:
            name = launch.kernel.encode()
            body.append(struct.pack("<I", len(name)) + name)
            body.append(struct.pack("<3I", *launch.grid) + struct.pack("<3I", *launch.block))
            body.append(struct.pack("<I", len(launch.args)))
            for a in launch.args:
                if a is None:
                    body.append(struct.pack("<B", 1))
                elif isinstance(a, np.ndarray) and a.dtype.kind != "V":
                    body.append(struct.pack("<BI", 0, buffer(a)))
                else:  # np.int64 scalars and size-1 geometry records (opaque bytes) go by value
                    raw = np.ascontiguousarray(a).tobytes()
                    body.append(struct.pack("<BI", 2, len(raw)) + raw)
        script[0] = struct.pack("<I", len(arrays)) + b"".join(
            struct.pack("<Q", a.nbytes) + a.tobytes() for a in arrays)
        path_in, path_out = tmp_path / "launches.bin", tmp_path / "buffers.bin"
        path_in.write_bytes(script[0] + b"".join(body))
        env = {**os.environ, "FC_EMU_REVERSE": "1" if reverse else "0"}
        done = subprocess.run([self.exe, str(path_in), str(path_out)], capture_output=True, text=True, timeout=300,
                              env=env)
        assert done.returncode == 0, done.stderr
        raw, offset = path_out.read_bytes(), 0
        for a in arrays:
            a[...] = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
            offset += a.nbytes


def _emulator_source():
    table = ",\n".join(f'    {{"{expr}", fc_emu::entry(&{expr})}}' for name in SOURCES for expr in cb.KERNELS[name])
    includes = "".join(f'#include "{name}"\n' for name in SOURCES)
    return ('#include "cpu_emulation.h"\n' + includes +
            "std::map<std::string, fc_emu::Entry> fc_emu::kernel_table() {\n  return {\n" + table + "\n  };\n}\n"
            "int main(int argc, char** argv) { return fc_emu::main(argc, argv); }\n")


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler: the CUDA kernels were not run under CPU emulation")
    source = _emulator_source()
    digest = hashlib.sha256(source.encode())
    for p in sorted(CUDA_DIR.iterdir()):
        digest.update(p.read_bytes())
    build = tmp_path_factory.mktemp("cuda_emulation")
    exe = build / f"fc_emu_{digest.hexdigest()[:12]}"
    (build / "emulate.cpp").write_text(source)
    cmd = [cxx, "-std=c++17", "-O1", "-I", str(CUDA_DIR), str(build / "emulate.cpp"), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    return Emulator(str(exe))


def _tolerance(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 2e-5


def _assert_close(got, want, dtype):
    tol = _tolerance(dtype)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


# (N, C, H, W, K, R, S, stride, padding, dilation, groups): every GEMM tile (K/groups <= 16,
# <= 32, > 32), several blocks along M and along the pixel columns, 1 to 4 k-tiles, groups,
# dilation, 'same', strides larger than the kernel (phases no tap reaches) and stride/dilation
# pairs with a common factor (whole residues without taps).
CONV_CASES = [
    (2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1),
    (2, 4, 10, 9, 48, 3, 2, 2, (1, 0), 1, 2),
    (1, 6, 12, 12, 70, 3, 3, 1, 2, 2, 1),
    (3, 4, 7, 8, 8, 4, 4, 3, 1, (2, 1), 4),
    (2, 17, 6, 5, 20, 1, 1, 1, 0, 1, 1),
    (1, 3, 8, 8, 4, 4, 4, 1, "same", 1, 1),
    (2, 3, 13, 13, 5, 2, 2, 4, 0, 1, 1),
    (1, 3, 11, 11, 6, 3, 3, 2, 2, 2, 1),
    (2, 2, 14, 13, 36, 3, 3, (3, 2), (1, 2), (2, 3), 1),
    (5, 2, 3, 3, 3, 2, 2, 1, 0, 1, 1),
    (2, 3, 3, 5, 5, 2, 2, 4, 0, 1, 1),  # stride > H: fewer phases than sh * sw
]
DTYPES = [np.float64, np.float32]


def _conv_case(case, dtype, rng):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype)
    _, x, w, bias, _, g, _ = P.conv_params(x, w, bias, stride, padding, dilation, groups)
    return x, w, bias, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_emulated_conv_forward(emulator, case, dtype, rng, tmp_path):
    x, w, bias, g = _conv_case(case, dtype, rng)
    y = np.empty(g.y_shape, dtype)
    emulator.run(cb.plan_conv_forward(x, w, bias, y, g), tmp_path)
    _assert_close(y, ref.conv_forward(x, w, bias, g), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_emulated_conv_backward_data(emulator, case, dtype, rng, tmp_path):
    _, w, bias, g = _conv_case(case, dtype, rng)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    gx = np.empty(g.x_shape, dtype)
    emulator.run(cb.plan_conv_backward_data(gy, w, None, gx, g), tmp_path)
    _assert_close(gx, ref.conv_backward_data(gy, w, None, g), dtype)
    # With a bias per channel of gx, as the transposed convolution's forward uses it.
    bias_x = rng.standard_normal(g.C).astype(dtype)
    emulator.run(cb.plan_conv_backward_data(gy, w, bias_x, gx, g), tmp_path)
    _assert_close(gx, ref.conv_backward_data(gy, w, bias_x, g), dtype)


@pytest.mark.parametrize("split", ["auto", "forced"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_emulated_conv_backward_weight(emulator, case, dtype, split, rng, tmp_path, monkeypatch):
    if split == "forced":  # small chunks: several splits and the fixed-order sum kernel
        monkeypatch.setattr(cb, "MIN_SPLIT", 16)
    x, _, _, g = _conv_case(case, dtype, rng)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    gw = np.empty(g.w_shape, dtype)
    launches = cb.plan_conv_backward_weight(gy, x, gw, g, lambda shape, dt: np.empty(shape, dt))
    if split == "forced" and g.N * g.out_h * g.out_w > 16:
        assert launches[-1].kernel.startswith("fc_sum_splits")
    emulator.run(launches, tmp_path)
    _assert_close(gw, ref.conv_backward_weight(gy, x, g), dtype)


# conv_transpose2d: (N, Cin, H, W, Cout, R, S, stride, padding, output_padding, groups, dilation)
TRANSPOSED_CASES = [
    (2, 6, 5, 4, 4, 4, 4, 2, 1, 0, 1, 1),
    (1, 4, 3, 5, 6, 3, 3, 3, 1, (2, 1), 2, 1),
    (2, 3, 4, 4, 2, 3, 2, (2, 3), (0, 1), 1, 1, 2),
    (1, 2, 6, 6, 40, 3, 3, 1, 1, 0, 1, 1),
    (1, 3, 1, 2, 4, 2, 3, 5, 0, 0, 1, 1),  # output 2 x 8 with stride 5: phases clipped to the output
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=str)
def test_emulated_conv_transpose_forward(emulator, case, dtype, rng, tmp_path):
    N, Cin, H, W, Cout, R, S, stride, padding, output_padding, groups, dilation = case
    x = rng.standard_normal((N, Cin, H, W)).astype(dtype)
    w = rng.standard_normal((Cin, Cout // groups, R, S)).astype(dtype)
    bias = rng.standard_normal(Cout).astype(dtype)
    _, x, w, bias, _, g, _ = P.conv_transpose_params(x, w, bias, stride, padding, output_padding, groups, dilation)
    y = np.empty(g.x_shape, dtype)
    emulator.run(cb.plan_conv_backward_data(x, w, bias, y, g), tmp_path)
    _assert_close(y, ref.conv_backward_data(x, w, bias, g), dtype)


# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
MAX_POOL_CASES = [
    (2, 3, 8, 8, 2, 2, 0, 1, False),
    (1, 2, 9, 7, 3, 2, 1, 1, True),
    (2, 2, 11, 10, (3, 2), (2, 1), (1, 1), (2, 3), False),
    (1, 3, 6, 6, 3, 1, 1, 1, False),  # overlapping windows: several outputs may pick one pixel
    (1, 2, 5, 6, 4, 3, 2, 2, True),
]


def _poisoned(x, rng):
    """NaN and -inf entries, and a whole -inf plane (torch's first-in-bounds-tap index)."""
    x = x.copy()
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, min(3, flat.size), replace=False)] = np.nan
    flat[rng.choice(flat.size, min(5, flat.size), replace=False)] = -np.inf
    x[0, 0] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_POOL_CASES, ids=str)
def test_emulated_max_pool(emulator, case, dtype, rng, tmp_path):
    N, C, H, W, kernel, stride, padding, dilation, ceil_mode = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    for data in (x, _poisoned(x, rng)):
        _, data, _, g, _ = P.pool_params("max_pool2d", data, kernel, stride, padding, dilation, ceil_mode)
        y, indices = np.empty(g.y_shape, dtype), np.empty(g.y_shape, np.int64)
        emulator.run(cb.plan_max_pool_forward(data, y, indices, g), tmp_path)
        want_y, want_indices = ref.max_pool_forward(data, g)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(indices, want_indices)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    gx = np.empty(g.x_shape, dtype)
    emulator.run(cb.plan_max_pool_backward(gy, indices, gx, g), tmp_path)
    np.testing.assert_array_equal(gx, _max_pool_scatter(gy, indices, g))


def _max_pool_scatter(gy, indices, g):
    """PyTorch's CPU max-pool backward: grad_x[index] += grad_out in the dtype, output by output."""
    planes = g.N * g.C
    gx = np.zeros((planes, g.H * g.W), gy.dtype)
    rows = np.broadcast_to(np.arange(planes)[:, None], (planes, g.out_h * g.out_w))
    np.add.at(gx, (rows, indices.reshape(planes, -1)), gy.reshape(planes, -1))
    return gx.reshape(g.x_shape)


# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL_CASES = [
    (2, 3, 8, 8, 2, 2, 0, False, True, None),
    (1, 2, 9, 7, 3, 2, 1, True, True, None),
    (1, 2, 9, 7, 3, 2, 1, True, False, None),
    (2, 1, 10, 11, (3, 2), (1, 2), (1, 1), False, False, 5),
    (1, 2, 5, 5, 4, 3, 2, True, True, None),  # ceil mode: the last window hangs over the padding
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=str)
def test_emulated_avg_pool(emulator, case, dtype, rng, tmp_path):
    N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    _, x, _, g, _ = P.pool_params("avg_pool2d", x, kernel, stride, padding, 1, ceil_mode,
                                  count_include_pad=count_include_pad, divisor_override=divisor)
    y = np.empty(g.y_shape, dtype)
    emulator.run(cb.plan_avg_pool_forward(x, y, g), tmp_path)
    np.testing.assert_array_equal(y, ref.avg_pool_forward(x, g))
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    gx = np.empty(g.x_shape, dtype)
    emulator.run(cb.plan_avg_pool_backward(gy, gx, g), tmp_path)
    np.testing.assert_array_equal(gx, ref.avg_pool_backward(gy, g))


def _random_conv(rng, dtype):
    """A random valid conv2d problem (tensors and geometry), small enough to emulate quickly."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        Cg, Kg = int(rng.integers(1, 6)), int(rng.choice([1, 3, 17, 33, 65]))
        R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        x = rng.standard_normal((N, Cg * groups, H, W)).astype(dtype)
        w = rng.standard_normal((Kg * groups, Cg, R, S)).astype(dtype)
        try:
            _, x, w, _, _, g, _ = P.conv_params(x, w, None, stride, padding, dilation, groups)
        except ValueError:
            continue
        return x, w, g


@pytest.mark.parametrize("reverse", [False, True], ids=["threads-first-to-last", "threads-last-to-first"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_random_convs(emulator, dtype, reverse, tmp_path, monkeypatch):
    """40 random geometries, all three conv kernels, in one emulator run; in both thread orders,
    so that a shared-memory race between barriers would show."""
    monkeypatch.setattr(cb, "MIN_SPLIT", 64)  # reach the split path on small problems too
    rng = np.random.default_rng(7)
    launches, checks = [], []
    for _ in range(40):
        x, w, g = _random_conv(rng, dtype)
        bias = rng.standard_normal(g.K).astype(dtype)
        gy = rng.standard_normal(g.y_shape).astype(dtype)
        y, gx, gw = np.empty(g.y_shape, dtype), np.empty(g.x_shape, dtype), np.empty(g.w_shape, dtype)
        launches += cb.plan_conv_forward(x, w, bias, y, g)
        launches += cb.plan_conv_backward_data(gy, w, None, gx, g)
        launches += cb.plan_conv_backward_weight(gy, x, gw, g, lambda shape, dt: np.empty(shape, dt))
        checks += [(g, y, ref.conv_forward(x, w, bias, g)), (g, gx, ref.conv_backward_data(gy, w, None, g)),
                   (g, gw, ref.conv_backward_weight(gy, x, g))]
    emulator.run(launches, tmp_path, reverse=reverse)
    for g, got, want in checks:
        try:
            _assert_close(got, want, dtype)
        except AssertionError as e:
            raise AssertionError(f"{g}\n{e}") from None


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_random_pools(emulator, dtype, tmp_path):
    """60 random max- and avg-pool geometries, forward and backward, in one emulator run; same bits."""
    rng = np.random.default_rng(11)
    launches, checks = [], []
    while len(checks) < 4 * 30:
        kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        ceil_mode = bool(rng.integers(0, 2))
        x = _poisoned(rng.standard_normal((2, 2, int(rng.integers(1, 10)), int(rng.integers(1, 10)))).astype(dtype),
                      rng)
        try:
            _, x, _, gm, _ = P.pool_params("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode)
            _, x, _, ga, _ = P.pool_params("avg_pool2d", x, kernel, stride, padding, 1, ceil_mode,
                                           count_include_pad=bool(rng.integers(0, 2)),
                                           divisor_override=[None, 3][int(rng.integers(0, 2))])
        except ValueError:
            continue
        y, indices = np.empty(gm.y_shape, dtype), np.empty(gm.y_shape, np.int64)
        want_y, want_indices = ref.max_pool_forward(x, gm)
        gy = rng.standard_normal(gm.y_shape).astype(dtype)
        gx = np.empty(gm.x_shape, dtype)
        launches += cb.plan_max_pool_forward(x, y, indices, gm)
        launches += cb.plan_max_pool_backward(gy, want_indices, gx, gm)
        checks += [(gm, y, want_y), (gm, indices, want_indices), (gm, gx, _max_pool_scatter(gy, want_indices, gm))]
        ya, gya = np.empty(ga.y_shape, dtype), rng.standard_normal(ga.y_shape).astype(dtype)
        gxa = np.empty(ga.x_shape, dtype)
        launches += cb.plan_avg_pool_forward(x, ya, ga)
        launches += cb.plan_avg_pool_backward(gya, gxa, ga)
        checks += [(ga, ya, ref.avg_pool_forward(x, ga)), (ga, gxa, ref.avg_pool_backward(gya, ga))]
    emulator.run(launches, tmp_path)
    for g, got, want in checks:
        np.testing.assert_array_equal(got, want, err_msg=str(g))


def test_emulated_empty_batch(emulator, rng, tmp_path):
    """N = 0: nothing to launch except backward-weight, which must still write zeros."""
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    _, x, w, _, _, g, _ = P.conv_params(x, w, None, 1, 1, 1, 1)
    y = np.empty(g.y_shape, np.float32)
    assert cb.plan_conv_forward(x, w, None, y, g) == []
    assert cb.plan_conv_backward_data(y, w, None, np.empty(g.x_shape, np.float32), g) == []
    gw = np.full(g.w_shape, np.nan, np.float32)
    emulator.run(cb.plan_conv_backward_weight(y, x, gw, g, lambda shape, dt: np.empty(shape, dt)), tmp_path)
    np.testing.assert_array_equal(gw, 0)


def test_planes_beyond_32_bit_indexing_are_refused():
    g = P.ConvGeometry(N=1, C=1, H=2**16, W=2**15 + 1, K=1, R=1, S=1, groups=1, stride_h=1, stride_w=1, pad_h=0,
                       pad_w=0, dil_h=1, dil_w=1, out_h=2**16, out_w=2**15 + 1)
    with pytest.raises(ValueError, match="32-bit"):
        cb.plan_conv_forward(None, None, None, None, g)


# --------------------------------------------------------------------------- the differential suite, emulated

class EmulatedCupyArray:
    """A numpy array in cupy's clothing: not a numpy.ndarray, module 'cupy', `.get()` to the host."""

    def __init__(self, a):
        self._a = a

    def get(self):
        return self._a.copy()

    @property
    def device(self):
        return contextlib.nullcontext()

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)

    def __getattr__(self, name):  # shape, dtype, ndim, size, astype, sum, reshape, min, max, ...
        value = getattr(self._a, name)
        if callable(value):
            return lambda *a, **k: _emulated(value(*[_host(v) for v in a], **k))
        return _emulated(value)

    def __getitem__(self, index):
        return _emulated(self._a[index])

    def __len__(self):
        return len(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)


EmulatedCupyArray.__module__ = "cupy"  # what _params.array_module looks at


def _emulated(value):
    return EmulatedCupyArray(value) if isinstance(value, np.ndarray) else value


def _host(value):
    return value._a if isinstance(value, EmulatedCupyArray) else value


def fill_emulated_cupy(module, exe):
    """Make `module` a stand-in for cupy whose RawModule kernels run in the CPU emulator `exe`."""
    emulator = Emulator(exe)

    class RawModule:
        def __init__(self, code, options, name_expressions):
            self.names = set(name_expressions)

        def get_function(self, name):
            assert name in self.names, name

            def launch(grid, block, args):
                run = types.SimpleNamespace(kernel=name, grid=grid, block=block, args=tuple(map(_host, args)))
                with tempfile.TemporaryDirectory() as d:
                    emulator.run([run], Path(d))
            return launch

    module.ndarray = EmulatedCupyArray
    module.asarray = lambda a, dtype=None: _emulated(np.array(_host(a), dtype=dtype, copy=True))
    module.ascontiguousarray = lambda a, dtype=None: _emulated(np.ascontiguousarray(_host(a), dtype=dtype))
    module.empty = lambda shape, dtype=float: _emulated(np.empty(shape, dtype))
    module.float32, module.float64, module.int64 = np.float32, np.float64, np.int64
    module.RawModule = RawModule
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                        nvrtc=types.SimpleNamespace(getVersion=lambda: (12, 0)),
                                        Device=lambda *a: types.SimpleNamespace(id=0))


def test_differential_suite_on_emulated_cupy(emulator):
    """The whole suite's cupy-parametrised tests (tests/test_*.py, `-k cupy`), through the public API
    and the backend's own code, with the kernels running in the CPU emulator."""
    tests_dir = Path(__file__).resolve().parent
    code = "\n".join([
        "import sys, types, pytest",
        f"sys.path.insert(0, {str(tests_dir)!r})",
        # In place before fastconv imports cupy; filled once this module (which imports fastconv) is loaded.
        "sys.modules['cupy'] = fake = types.ModuleType('cupy')",
        "import test_cuda_sources",
        f"test_cuda_sources.fill_emulated_cupy(fake, {emulator.exe!r})",
        f"sys.exit(pytest.main([{str(tests_dir)!r}, '--ignore', {__file__!r}, '-k', 'cupy', '-q',",
        "                       '-p', 'no:cacheprovider', '-W', 'ignore::UserWarning']))",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=tests_dir.parent, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
