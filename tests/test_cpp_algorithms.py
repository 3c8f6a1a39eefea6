"""The cpp backend's algorithm list: every algorithm forced on shapes that reach its edges
(partial tiles, channel counts off the register tile, long reductions, groups, padding),
against the float64 reference with the usual bound; `explain` reasons; autotuning and its
cache; FASTCONV_AUTOTUNE=0 and FASTCONV_CONV_ALGO."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from oracle import absolute, algorithm_call, assert_same_bits_at_thread_counts, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

# (N, C, H, W, K, groups, padding)
WINOGRAD_EDGES = [
    (2, 8, 7, 9, 8, 1, 1),  # odd output: partial 2x2 tiles on both edges; tiles cross images
    (1, 20, 6, 6, 13, 1, 0),  # K, C off the 6x16 register tile
    (1, 260, 5, 4, 9, 1, 1),  # reduction over C longer than one KC block
    (2, 16, 9, 8, 16, 2, 2),  # groups, padding 2
    (1, 8, 3, 3, 8, 1, "same"),
    (3, 8, 2, 2, 9, 1, 1),  # a single output tile per image
    (2, 8, 21, 38, 8, 1, 1),  # winograd_f43: 9 tiles a row (a vector and one over), last tile 2 wide
    (2, 8, 7, 7, 64, 1, 1),  # deep, few tiles: the forward's output channels split over tasks (12 + ... + 4)
    (2, 16, 7, 7, 128, 2, 1),  # the same in each of two groups
]


def _bound_factor(name):
    """F(4x4, 3x3)'s transforms have coefficients up to 8 (A), 5 (B) and 1/24 (G): each output
    carries that many more roundoffs than F(2x2, 3x3)'s +-1, 1/2 -- a further factor of 4
    (measured: within a quarter of this bound over WINOGRAD_EDGES and MNIST's shapes)."""
    return 4.0 if name.startswith("winograd_f43") else 1.0


def _forced_conv(name, dtype, n, c, h, w, k, groups, padding, rng):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(padding=padding, groups=groups)
    with cpp_algorithms.force(name):
        _, _, _, _, _, g, _ = P.conv_params(x, wt, b, 1, padding, 1, groups)
        assert cpp.algorithm_for("conv_forward", g, dtype).name == name
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    f43 = _bound_factor(name)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw),
                  (c // groups) * 9 * 4, dtype, factor=f43, what=f"{name} forward")
    rx = ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)
    mx = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    assert_within(gx, rx[0], mx[0], (k // groups) * 9 * 4, dtype, factor=f43, what=f"{name} backward-data")
    # x 4 as above: Winograd's transformed terms are sums of up to 4 inputs (each rounded); and
    # all 9 taps of a (k, c) kernel come from the same transformed sums, whose terms are as large
    # as the largest tap's: so its bound scales with that tap's magnitude.
    mw = np.broadcast_to(mx[1].max(axis=(2, 3), keepdims=True), mx[1].shape) if "winograd" in name else mx[1]
    assert_within(gw, rx[1], mw, n * y.shape[2] * y.shape[3] * 4, dtype, factor=f43, what=f"{name} backward-weight")


@pytest.mark.parametrize("case", WINOGRAD_EDGES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f43", "implicit_gemm"])
def test_forced_forward_algorithms(case, dtype, name, rng):
    _forced_conv(name, dtype, *case, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_f43_channel_blocks_do_not_depend_on_the_thread_count(dtype, rng):
    """The deep-layer tasks (tile rows x output-channel blocks) give the same bits at any thread count."""
    x = rng.standard_normal((2, 16, 7, 7)).astype(dtype)
    wt = rng.standard_normal((128, 8, 3, 3)).astype(dtype)
    b = rng.standard_normal(128).astype(dtype)
    g = P.conv_params(x, wt, b, 1, 1, 1, 2)[5]
    algo = next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == "winograd_f43")
    outs = []
    for threads in (1, 2, 3):
        out = np.empty(g.y_shape, dtype)
        algo.run(x, wt, b, out, g, threads)
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("case", WINOGRAD_EDGES)
@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f23_adjoint", "winograd_f43", "winograd_f43_adjoint",
                                  "implicit_gemm_subpixel"])
def test_forced_backward_data_algorithms(case, name, rng):
    n, c, h, w, k, groups, padding = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, 3, 3)).astype(np.float32)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, None, 1, padding, 1, groups)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    with cpp_algorithms.force(name):
        assert cpp.algorithm_for("conv_backward_data", g, np.float32).name == name
        gx = fastconv.conv2d_backward(gy, x, wt, None, padding=padding, groups=groups, backend="cpp",
                                      needs=(True, False, False))[0]
        # The transposed conv's forward is the same primitive, with a bias per output channel.
        xt = rng.standard_normal((n, k, h, w)).astype(np.float32)
        bt = rng.standard_normal(c).astype(np.float32)
        yt = fastconv.conv_transpose2d(xt, wt, bt, padding=1, groups=groups, backend="cpp")
    want = ref(fastconv.conv2d_backward, gy, x, wt, None, padding=padding, groups=groups)[0]
    mag = ref(fastconv.conv2d_backward, np.abs(gy), x, np.abs(wt), None, padding=padding, groups=groups)[0]
    f43 = _bound_factor(name)
    assert_within(gx, want, mag, (k // groups) * 9 * 4, np.float32, factor=f43, what=f"{name} backward-data")
    assert_within(yt, ref(fastconv.conv_transpose2d, xt, wt, bt, padding=1, groups=groups),
                  ref(fastconv.conv_transpose2d, np.abs(xt), np.abs(wt), np.abs(bt), padding=1, groups=groups),
                  (k // groups) * 9 * 4, np.float32, factor=f43, what=f"{name} conv_transpose2d")


def test_explain_says_why_an_algorithm_declines():
    x = np.zeros((1, 8, 8, 8), np.float32)
    _, _, _, _, _, g, _ = P.conv_params(x, np.zeros((8, 8, 3, 3), np.float32), None, 2, 1, 1, 1)
    reasons = dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], g))
    assert reasons == {"dilated_phases": "no dilation",
                       "depthwise_direct": "not depthwise (groups 1, 8 in / 8 out channels)",
                       "winograd_f23": "stride is not 1", "winograd_f43": "stride is not 1",
                       "winograd_s2": "kernel 3x3 is not 4x4", "gemm_1x1": "kernel 3x3 is not 1x1", "gemm_nhwc": None, "implicit_gemm_wide": None,
                       "implicit_gemm": None}
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_data"], g))["implicit_gemm_wide"] == \
        "stride 2x2 is not 1"
    _, _, _, _, _, g, _ = P.conv_params(x, np.zeros((8, 2, 3, 3), np.float32), None, 1, 1, 1, 4)
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], g))["winograd_f23"] == \
        "2 in / 2 out channels per group (the Winograd algorithms want 8 or more)"
    _, _, _, _, _, g, _ = P.conv_params(x, np.zeros((8, 8, 5, 5), np.float32), None, 1, 3, 1, 1)
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_data"], g))["winograd_f23"] == \
        "kernel 5x5 is not 3x3"


def test_forced_algorithm_that_declines_falls_through(rng):
    x = rng.standard_normal((1, 8, 7, 7)).astype(np.float32)
    wt = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    with cpp_algorithms.force("winograd_f23"):
        _, _, _, _, _, g, _ = P.conv_params(x, wt, None, 2, 0, 1, 1)
        np.testing.assert_allclose(fastconv.conv2d(x, wt, stride=2, backend="cpp"),
                                   ref(fastconv.conv2d, x, wt, stride=2), rtol=1e-5, atol=1e-5)
        # (tuned by the call above)
        accepting = [name for name, why in cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], g) if why is None]
        assert "winograd_f23" not in accepting
        assert cpp.algorithm_for("conv_forward", g, np.float32).name in accepting


def _python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_autotune_caches_its_choice_on_disk(tmp_path):
    code = (
        "import numpy as np, fastconv\n"
        "from fastconv import _params as P\n"
        "from fastconv.backends import cpp\n"
        "x = np.ones((2, 16, 12, 12), np.float32); w = np.ones((16, 16, 3, 3), np.float32)\n"
        "fastconv.conv2d(x, w, padding=1, backend='cpp')\n"
        "g = P.conv_params(x, w, None, 1, 1, 1, 1)[5]\n"
        "print(cpp.algorithm_for('conv_forward', g, np.float32).name)\n"
    )
    first = _python(code, FASTCONV_CACHE_DIR=str(tmp_path))
    assert first.returncode == 0, first.stderr
    files = list((tmp_path / "cpp-algo").glob("*.json"))
    assert len(files) == 1
    assert first.stdout.strip() in ("winograd_f23", "winograd_f43", "gemm_nhwc", "implicit_gemm_wide", "implicit_gemm")
    # A second process reads the choice instead of timing again: make the file name another one.
    other = "implicit_gemm" if first.stdout.strip() != "implicit_gemm" else "winograd_f23"
    entry = json.loads(files[0].read_text())
    entry["value"]["algorithm"] = other
    files[0].write_text(json.dumps(entry))
    second = _python(code, FASTCONV_CACHE_DIR=str(tmp_path))
    assert second.stdout.strip() == other, second.stderr
    # Without autotuning the first accepting candidate is used and nothing is written.
    off = _python(code, FASTCONV_CACHE_DIR=str(tmp_path / "off"), FASTCONV_AUTOTUNE="0")
    assert off.stdout.strip() == "winograd_f23" and not (tmp_path / "off").exists()
    # FASTCONV_CONV_ALGO forces one.
    forced = _python(code, FASTCONV_CACHE_DIR=str(tmp_path / "forced"), FASTCONV_CONV_ALGO="implicit_gemm")
    assert forced.stdout.strip() == "implicit_gemm"


@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f43"])
@pytest.mark.parametrize("where", ["x", "weight"])
def test_winograd_with_infinities_matches_the_direct_sum(where, name, rng):
    """inf - inf inside the transforms would give NaN; the result must be torch's +-inf."""
    x = rng.standard_normal((2, 8, 8, 8))
    w = rng.standard_normal((8, 8, 3, 3))
    if where == "x":
        x[1, 0, 5, 5], x[1, 2, 0, 0] = np.inf, -np.inf
    else:
        w[2, 1, 1, 1] = np.inf
    with cpp_algorithms.force(name):
        y = fastconv.conv2d(x, w, padding=1, backend="cpp")
    expected = ref(fastconv.conv2d, x, w, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f43", "winograd_s2"])
@pytest.mark.parametrize("primitive", ["forward", "backward_data"])
def test_winograd_with_huge_finite_inputs_matches_the_direct_sum(primitive, name, rng):
    """Finite inputs of +-2e38 overflow float32 inside the transforms (which scale them up) but
    not in the direct sum's products with weights of 1e-4: the result must be the direct sum's,
    finite, not inf or NaN."""
    kernel, stride = (4, 2) if name == "winograd_s2" else (3, 1)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    wt = (rng.standard_normal((8, 8, kernel, kernel)) * 1e-4).astype(np.float32)
    kw = dict(stride=stride, padding=1)
    g = P.conv_params(x, wt, None, stride, 1, 1, 1)[5]
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    big = rng.choice(np.float32([-2e38, 2e38]), size=x.shape[2:] if primitive == "forward" else gy.shape[2:])
    if primitive == "forward":
        x[0, 1] = big
    else:
        gy[1, 2] = big
    with cpp_algorithms.force(name):
        assert cpp.algorithm_for(f"conv_{primitive}", g, np.float32).name.startswith(name)
        if primitive == "forward":
            got = fastconv.conv2d(x, wt, backend="cpp", **kw)
        else:
            got = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", needs=(True, False, False), **kw)[0]
    if primitive == "forward":
        want, bound = ref(fastconv.conv2d, x, wt, **kw), ref(fastconv.conv2d, np.abs(x), np.abs(wt), **kw)
    else:
        want = ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)[0]
        bound = ref(fastconv.conv2d_backward, np.abs(gy), x, np.abs(wt), None, **kw)[0]
    assert np.isfinite(want).all() and np.isfinite(got).all()
    assert_within(got, want, bound, wt.shape[1] * kernel * kernel, np.float32, what=f"{name} {primitive}")


# conv_transpose2d problems with 1-3 output channels per group: (N, C_in, H, W, C_out, R, S, kwargs)
NARROW_EDGES = [
    (2, 16, 9, 7, 3, 4, 4, dict(stride=2, padding=1)),  # generator last layer, odd sizes
    (1, 8, 5, 40, 1, 3, 3, dict(stride=1, padding=1)),  # one channel, rows wider than a strip
    (2, 6, 4, 5, 4, 3, 3, dict(stride=3, padding=1, output_padding=2, groups=2)),  # 2 per group
    (1, 5, 3, 3, 3, 5, 5, dict(stride=2, dilation=2, padding=3)),  # a phase no tap reaches
    (1, 4, 6, 6, 2, 2, 2, dict(stride=2)),
    (3, 300, 2, 2, 3, 4, 4, dict(stride=2, padding=1)),  # long reduction over k
]


@pytest.mark.parametrize("case", NARROW_EDGES, ids=[str(c) for c in range(len(NARROW_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_direct_narrow(case, dtype, rng):
    n, cin, h, w, cout, r, s, kw = case
    groups = kw.get("groups", 1)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cin, cout // groups, r, s)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    _, _, _, _, _, g, _ = P.conv_transpose_params(x, wt, b, kw.get("stride", 1), kw.get("padding", 0),
                                                  kw.get("output_padding", 0), groups, kw.get("dilation", 1))
    with cpp_algorithms.force("direct_narrow"):
        assert cpp.algorithm_for("conv_backward_data", g, dtype).name == "direct_narrow"
        y = fastconv.conv_transpose2d(x, wt, b, backend="cpp", **kw)
    assert_within(y, ref(fastconv.conv_transpose2d, x, wt, b, **kw),
                  ref(fastconv.conv_transpose2d, *absolute(x, wt, b), **kw), cin // groups * r * s, dtype,
                  what="direct_narrow")


# (N, C, H, W, K, R, S, groups, padding, dilation)
WIDE_EDGES = [
    (2, 3, 8, 9, 5, 3, 3, 1, 0, 1),  # no padding: the slab is x itself
    (1, 30, 62, 9, 7, 3, 3, 1, 0, 1),  # two row blocks; 270 patch rows, longer than one KC block
    (2, 4, 7, 6, 6, 3, 2, 2, "same", 1),  # groups; an even kernel's extra right padding
    (1, 2, 9, 10, 3, 2, 4, 1, "same", 1),  # top padding 0, bottom 1: not aliasable
    (2, 3, 10, 11, 4, 3, 3, 1, (2, 1), 2),  # dilation with padding
    (1, 5, 4, 40, 8, 1, 5, 1, (0, 2), (1, 3)),  # long rows, a 1x5 kernel
    (3, 2, 3, 3, 2, 3, 3, 1, 0, 1),  # one output pixel per image
    (1, 1, 5, 5, 1, 5, 5, 1, 2, 1),  # one channel each way
    (1, 8, 6, 5, 100, 3, 3, 2, 1, 1),  # few pixels, many channels: tasks split the output channels
    # B read in place and C written into y (one image per task, whole NR-wide panels per row):
    (1, 3, 20, 32, 5, 3, 3, 1, 1, 1),  # two row blocks, a short channel panel
    (1, 40, 5, 16, 7, 3, 3, 1, 1, 1),  # 360 patch rows: two KC blocks, the bias added once
    (2, 4, 6, 18, 6, 3, 3, 2, 0, 1),  # groups, blocks of rows split until there are 8 tasks
    # One image per task, rows not whole panels: B's panels packed, C still written into y.
    (1, 30, 9, 13, 7, 3, 3, 1, 1, 1),  # 270 patch rows, a panel across output rows
]


@pytest.mark.parametrize("case", WIDE_EDGES, ids=[str(i) for i in range(len(WIDE_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_implicit_gemm_wide(case, dtype, rng):
    """The stride-1 wide-row GEMM, as the forward and as backward-data (the flipped-kernel
    forward), and so as the stride-1 transposed conv's forward."""
    n, c, h, w, k, r, s, groups, padding, dilation = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(padding=padding, dilation=dilation, groups=groups)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, b, 1, padding, dilation, groups)
    with cpp_algorithms.force("implicit_gemm_wide"):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == "implicit_gemm_wide"
        assert cpp.algorithm_for("conv_backward_data", g, dtype).name == "implicit_gemm_wide"
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", needs=(True, False, False), **kw)[0]
    ax, aw, ab = absolute(x, wt, b)
    terms = (c // groups) * r * s
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw),
                  terms, dtype, what="implicit_gemm_wide forward")
    assert_within(gx, ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)[0],
                  ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)[0],
                  (k // groups) * r * s, dtype, what="implicit_gemm_wide backward-data")


def test_forced_implicit_gemm_wide_transposed_conv(rng):
    """conv_transpose2d at stride 1 with dilation and output_padding through the wide GEMM."""
    x = rng.standard_normal((2, 6, 7, 8)).astype(np.float32)
    wt = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    kw = dict(padding=(1, 2), dilation=(2, 3), output_padding=(1, 2), groups=2)
    with cpp_algorithms.force("implicit_gemm_wide"):
        y = fastconv.conv_transpose2d(x, wt, b, backend="cpp", **kw)
    assert_within(y, ref(fastconv.conv_transpose2d, x, wt, b, **kw),
                  ref(fastconv.conv_transpose2d, np.abs(x), np.abs(wt), np.abs(b), **kw), 3 * 3 * 2, np.float32,
                  what="implicit_gemm_wide conv_transpose2d")


# (H, W, output channels in float32; half as many in float64): 8 MiB of output or more.
STREAMED = [(256, 512, 16), (256, 520, 16), (256, 516, 16), (1200, 28, 64)]


@pytest.mark.parametrize("shape", STREAMED, ids=["in-place-panels", "packed-panels", "partial-vector", "row-blocks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_implicit_gemm_wide_streams_a_large_output_aligned_or_not(dtype, shape, rng):
    """An 8 MiB output (the streaming threshold) written with streaming stores into the 64-byte
    aligned result conv2d allocates, and with ordinary ones into a misaligned one: same bits.
    At width 512 B's panels are read in place; at 520 (not a multiple of NR) they are packed;
    at 516 a row's last panel ends inside a float32 vector. 16 float32 (8 float64) channels
    end in a partial tile of rows. 28-wide rows go in blocks of several rows, cut so that each
    block starts on a 64-byte line (18 rows -> 16 in float32)."""
    h, width, k = shape
    k = k * 4 // np.dtype(dtype).itemsize
    x = rng.standard_normal((1, 2, h, width)).astype(dtype)
    wt = rng.standard_normal((k, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    with cpp_algorithms.force("implicit_gemm_wide"):
        y = fastconv.conv2d(x, wt, b, padding=1, backend="cpp")
    assert y.nbytes >= 8 << 20 and y.ctypes.data % 64 == 0
    assert_within(y, ref(fastconv.conv2d, x, wt, b, padding=1), ref(fastconv.conv2d, *absolute(x, wt, b), padding=1),
                  2 * 9, dtype, what="implicit_gemm_wide streamed forward")
    g = P.conv_params(x, wt, b, 1, 1, 1, 1)[5]
    buf = np.empty(y.size + 8, dtype)
    start = next(i for i in range(8) if (buf.ctypes.data + i * buf.itemsize) % 32 == 16)
    misaligned = buf[start:start + y.size].reshape(y.shape)
    algo = next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == "implicit_gemm_wide")
    algo.run(x, wt, b, misaligned, g, 2)
    assert np.array_equal(misaligned, y)


DOT_WIDE_EDGES = WIDE_EDGES + [
    (40, 16, 30, 30, 16, 3, 3, 1, 0, 1),  # several chunks: grad_w is stored, then added to
    (1, 2, 700, 3, 4, 3, 3, 1, 1, 1),  # several row blocks per image
]


@pytest.mark.parametrize("case", DOT_WIDE_EDGES, ids=[str(i) for i in range(len(DOT_WIDE_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_dot_wide_backward_weight(case, dtype, rng):
    n, c, h, w, k, r, s, groups, padding, dilation = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dtype)
    kw = dict(padding=padding, dilation=dilation, groups=groups)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, None, 1, padding, dilation, groups)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force("dot_wide"):
        gw = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", needs=(False, True, False), **kw)[1]
        name = cpp.algorithm_for("conv_backward_weight", g, dtype).name  # (tuned by the call above)
    if k // groups < 3 or (c // groups) * r * s < 4:
        assert name != "dot_wide"
    else:
        assert name == "dot_wide"
    assert_within(gw, ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)[1],
                  ref(fastconv.conv2d_backward, np.abs(gy), np.abs(x), wt, None, **kw)[1],
                  n * g.out_h * g.out_w, dtype, what="dot_wide backward-weight")


@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f43", "winograd_s2"])
@pytest.mark.parametrize("where", ["x", "grad_out", "huge"])
def test_winograd_backward_weight_with_infinities_matches_the_direct_sum(where, name, rng):
    """The Winograd backward-weight kernels are not handed infinite inputs up front: their grad_w
    comes out with inf or NaN, and is then made again by the direct kernel. So the result is the
    direct sum's, +-inf where it has them, even where the transforms would overflow ("huge": finite
    inputs whose transformed sums pass float32's range)."""
    kernel, stride = (4, 2) if name == "winograd_s2" else (3, 1)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    wt = rng.standard_normal((8, 8, kernel, kernel)).astype(np.float32)
    kw = dict(stride=stride, padding=1)
    g = P.conv_params(x, wt, None, stride, 1, 1, 1)[5]
    gy = np.abs(rng.standard_normal(g.y_shape)).astype(np.float32)
    if where == "x":
        x[1, 2, 4, 4], x[0, 3, 0, 1] = np.inf, -np.inf
    elif where == "grad_out":
        gy[1, 3, 2, 2] = np.inf
    else:  # differences of +-2e38 overflow; the direct sum's products (grad_out <= 1e-3) do not
        x[0, 1] = rng.choice(np.float32([-2e38, 2e38]), size=x.shape[2:])
        gy *= np.float32(1e-4)
    with cpp_algorithms.force(name):
        assert cpp.algorithm_for("conv_backward_weight", g, np.float32).name == name
        gw = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", needs=(False, True, False), **kw)[1]
    want = ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)[1]
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(gw), np.isinf(want))
    if where == "huge":
        assert_within(gw, want, ref(fastconv.conv2d_backward, gy, np.abs(x), wt, None, **kw)[1],
                      gy.shape[0] * gy.shape[2] * gy.shape[3], np.float32, what=f"{name} backward-weight")
    else:
        assert not np.isfinite(want).all()


def test_dot_wide_with_infinities_matches_the_direct_sum(rng):
    """An inf at x's corner reaches only tap (0, 0) of the true sum; the dropped columns must
    not turn the other taps' sums into NaN (dot_wide's grad_w then has NaN, and is made again by
    implicit_gemm)."""
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x[1, 2, 0, 0] = np.inf
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = np.abs(rng.standard_normal((2, 4, 7, 7))).astype(np.float32)
    with cpp_algorithms.force("dot_wide"):
        gw = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", needs=(False, True, False))[1]
    want = ref(fastconv.conv2d_backward, gy, x, wt, None)[1]
    np.testing.assert_array_equal(np.isfinite(gw), np.isfinite(want))
    assert np.isinf(gw[:, 2, 0, 0]).all() and np.isfinite(gw[:, 2, 1:, :]).all()


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (0, 4, 3, 3), (1, 1, 1, 1), (64, 32, 26, 26)])
def test_bias_grad_is_the_float64_sum_rounded_once(shape, rng):
    gy = (rng.standard_normal(shape) * 10).astype(np.float32)
    want = gy.sum(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(cpp.bias_grad(gy), want)
    gy64 = gy.astype(np.float64)
    np.testing.assert_array_equal(cpp.bias_grad(gy64), gy64.sum(axis=(0, 2, 3)))


# (N, C, H, W, K, R, S, stride, padding, dilation, groups) of the conv whose backward-data runs
COL2IM_EDGES = [
    (3, 5, 9, 8, 7, 3, 3, 1, 1, 1, 1),
    (2, 4, 15, 16, 6, 4, 4, 2, 1, 1, 2),  # DCGAN's 4x4 stride 2, groups
    (1, 120, 6, 7, 5, 3, 3, 1, 2, 1, 1),  # several channel blocks
    (2, 3, 40, 37, 4, 3, 2, (3, 2), (1, 0), (2, 3), 1),  # a column tile smaller than one image
    (5, 2, 4, 4, 3, 5, 5, 1, 2, 1, 1),  # most taps in the padding
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),
]


@pytest.mark.parametrize("case", COL2IM_EDGES, ids=[str(i) for i in range(len(COL2IM_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_col2im(case, dtype, rng):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, None, stride, padding, dilation, groups)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    bt = rng.standard_normal(c).astype(dtype)
    tkw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    short = fastconv.conv_transpose2d(gy, wt, **tkw, backend="reference").shape[2:]
    tkw["output_padding"] = tuple(int(a - b) for a, b in zip(x.shape[2:], short))
    with cpp_algorithms.force("gemm_col2im"):
        assert cpp.algorithm_for("conv_backward_data", g, dtype).name == "gemm_col2im"
        gx = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", needs=(True, False, False), **kw)[0]
        yt = fastconv.conv_transpose2d(gy, wt, bt, **tkw, backend="cpp")
    terms = (k // groups) * r * s
    assert_within(gx, ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)[0],
                  ref(fastconv.conv2d_backward, np.abs(gy), x, np.abs(wt), None, **kw)[0], terms, dtype,
                  what="gemm_col2im backward-data")
    assert_within(yt, ref(fastconv.conv_transpose2d, gy, wt, bt, **tkw),
                  ref(fastconv.conv_transpose2d, np.abs(gy), np.abs(wt), np.abs(bt), **tkw), terms + 1, dtype,
                  what="gemm_col2im conv_transpose2d")


# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
STRIDED_WIDE_EDGES = [
    (2, 3, 16, 15, 5, 4, 4, 2, 1, 1, 1),  # DCGAN's discriminator layers
    (1, 4, 13, 11, 6, 3, 3, (2, 3), (1, 2), 1, 2),  # unequal strides, groups
    (2, 5, 9, 12, 4, 1, 1, 2, 0, 1, 1),  # 1x1 stride 2: one phase of four is read
    (1, 2, 17, 19, 3, 3, 2, 3, (0, 1), (2, 4), 1),  # dilation next to stride
    (3, 2, 8, 8, 4, 7, 7, 2, 3, 1, 1),  # ResNet's stem
    (1, 2, 7, 67, 3, 3, 3, 2, (1, 2), 1, 1),  # long rows: the stride-2 phase split by vectors
    (2, 3, 64, 32, 8, 4, 4, 2, 1, 1, 1),  # DCGAN's D1 rows (16 wide): B read in place, C written to y
    (1, 3, 40, 64, 7, 7, 7, 2, 3, 1, 1),  # ResNet's stem, 32-wide rows: in place
]


@pytest.mark.parametrize("case", STRIDED_WIDE_EDGES, ids=[str(i) for i in range(len(STRIDED_WIDE_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_wide_algorithms_at_stride(case, dtype, rng):
    """implicit_gemm_wide forward over stride-phase slabs, dot_wide backward-weight over tap columns
    split by row phase."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, b, stride, padding, dilation, groups)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force("implicit_gemm_wide"):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == "implicit_gemm_wide"
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
    with cpp_algorithms.force("dot_wide"):
        want_name = "dot_wide" if k // groups >= 3 and (c // groups) * r * s >= 4 else "implicit_gemm"
        assert cpp.algorithm_for("conv_backward_weight", g, dtype).name == want_name
        gw = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", needs=(False, True, False), **kw)[1]
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw),
                  (c // groups) * r * s, dtype, what="implicit_gemm_wide forward at stride")
    assert_within(gw, ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)[1],
                  ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)[1],
                  n * g.out_h * g.out_w, dtype, what="dot_wide backward-weight at stride")


# (C, K, groups) on a 4 x C x 21 x 20 input with a 3x3 kernel, padding 1; the first one an
# algorithm accepts is used. The algorithms are run directly at 1, 2 and 3 threads (cpp's own
# serial threshold for small problems does not apply).
THREAD_PROBLEMS = [(16, 24, 1), (16, 16, 16), (3, 96, 1)]  # general, depthwise, 3 grad_x channels


def _thread_problem(name, primitive, stride):
    for c, k, groups in THREAD_PROBLEMS:
        g = P.conv_params(np.zeros((4, c, 21, 20), np.float32), np.zeros((k, c // groups, 3, 3), np.float32), None,
                          stride, 1, 1, groups)[5]
        algo = next(a for a in cpp.ALGORITHMS[primitive] if a.name == name)
        if algo.accepts(g) is None:
            return c, k, groups
    return None


# Every (primitive, algorithm, stride) that accepts one of THREAD_PROBLEMS; an algorithm that
# accepts no strided problem (stride-1 only) is tested at stride 1.
THREAD_CASES = [(prim, a.name, stride, problem) for prim, algos in
                (cpp.ALGORITHMS.items() if fastconv.backends()["cpp"] is None else [])
                for a in algos for stride in (1, 2)
                for problem in [_thread_problem(a.name, prim, stride)] if problem is not None]


@pytest.mark.parametrize("primitive,name,stride,problem", THREAD_CASES,
                         ids=[f"{p}-{n}-stride{s}" for p, n, s, _ in THREAD_CASES])
def test_every_algorithm_gives_the_same_bits_at_any_thread_count(primitive, name, stride, problem, rng):
    c, k, groups = problem
    x = rng.standard_normal((4, c, 21, 20)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, 3, 3)).astype(np.float32)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, None, stride, 1, 1, groups)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    algo = next(a for a in cpp.ALGORITHMS[primitive] if a.name == name)
    args, shape = algorithm_call(primitive, x, wt, gy, g)
    assert_same_bits_at_thread_counts(algo, args, shape, np.float32, g)


# (N, C, H, W, R, S, stride, padding, dilation) of depthwise convs (groups = C = K)
DEPTHWISE_EDGES = [
    (2, 5, 9, 8, 3, 3, 1, 1, 1),
    (3, 4, 12, 11, 3, 3, 2, 1, 1),  # MobileNet's stride-2 layer
    (1, 3, 10, 13, 5, 3, (1, 2), (2, 0), (1, 2)),
    (2, 2, 4, 4, 1, 1, 1, 0, 1),
    (1, 6, 7, 7, 7, 7, 1, 3, 1),  # the kernel as large as the plane
    (2, 3, 6, 70, 3, 3, 2, 1, 1),  # long rows at stride 2
    (2, 3, 9, 7, 3, 3, 3, 1, 1),  # stride 3: the scalar column phases
    (1, 2, 5, 5, 3, 3, 2, 2, 1),  # padding 2 at stride 2: both column phases start at slot 1
    (2, 3, 8, 9, 2, 2, 2, 0, 1),  # an even kernel at stride 2, no padding
    (1, 2, 6, 6, 1, 1, 2, 0, 1),  # 1x1 at stride 2: one phase of four read
    (1, 2, 7, 9, 3, 3, (2, 1), (0, 2), 1),  # stride 2 down, 1 across
    (2, 4, 3, 3, 3, 3, 2, 3, 1),  # padding beyond the kernel: some slab rows all padding
    (2, 19, 13, 21, 3, 3, 2, 1, 1),  # stride 2, interleaved: full channel blocks and a part one; ragged rows
    (1, 9, 11, 17, 3, 3, 3, 2, 2),  # stride 3 and dilation, interleaved
]


@pytest.mark.parametrize("case", DEPTHWISE_EDGES, ids=[str(i) for i in range(len(DEPTHWISE_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_depthwise_direct(case, dtype, rng):
    n, c, h, w, r, s, stride, padding, dilation = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((c, 1, r, s)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, b, stride, padding, dilation, c)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force("depthwise_direct"):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == "depthwise_direct"
        assert cpp.algorithm_for("conv_backward_weight", g, dtype).name == "depthwise_direct"
        pads, reach = np.broadcast_to(padding, 2), (np.array([r, s]) - 1) * np.broadcast_to(dilation, 2)
        if (pads <= reach).all():  # else the transposed problem's padding would be negative
            assert cpp.algorithm_for("conv_backward_data", g, dtype).name == "depthwise_direct"
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    rx = ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)
    mx = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw), r * s + 1, dtype,
                  what="depthwise_direct forward")
    assert_within(gx, rx[0], mx[0], r * s, dtype, what="depthwise backward-data")
    assert_within(gw, rx[1], mx[1], n * g.out_h * g.out_w, dtype, what="depthwise_direct backward-weight")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 2), c=st.integers(1, 11), h=st.integers(1, 40), w=st.integers(1, 40),
       r=st.integers(1, 5), s=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 4), pw=st.integers(0, 4), dh=st.integers(1, 2), dw=st.integers(1, 2),
       float64=st.booleans(), seed=st.integers(0, 2**31))
def test_forced_depthwise_direct_random(n, c, h, w, r, s, sh, sw, ph, pw, dh, dw, float64, seed):
    """Random depthwise geometries (rows shorter and longer than a vector, every stride-phase
    split and spreading path of plane_slabs) against the float64 reference."""
    dtype = np.float64 if float64 else np.float32
    h, w = max(h, (r - 1) * dh + 1 - 2 * ph), max(w, (s - 1) * dw + 1 - 2 * pw)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((c, 1, r, s)).astype(dtype)
    kw = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=c)
    g = P.conv_params(x, wt, None, (sh, sw), (ph, pw), (dh, dw), c)[5]
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force("depthwise_direct"):
        y = fastconv.conv2d(x, wt, None, backend="cpp", **kw)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, wt, None, backend="cpp", **kw)
    ax, aw = np.abs(x), np.abs(wt)
    rx = ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)
    mx = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, None, **kw)
    assert_within(y, ref(fastconv.conv2d, x, wt, None, **kw), ref(fastconv.conv2d, ax, aw, None, **kw), r * s, dtype,
                  what="depthwise_direct forward")
    assert_within(gx, rx[0], mx[0], r * s, dtype, what="depthwise backward-data")
    assert_within(gw, rx[1], mx[1], n * g.out_h * g.out_w, dtype, what="depthwise_direct backward-weight")


def test_depthwise_direct_threads_and_infinities(rng):
    x = rng.standard_normal((4, 64, 30, 30)).astype(np.float32)
    wt = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, None, 1, 1, 1, 64)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    for primitive, args, shape in (("conv_forward", (x, wt, None), g.y_shape),
                                   ("conv_backward_data", (gy, wt, None), g.x_shape),
                                   ("conv_backward_weight", (gy, x), g.w_shape)):
        algo = next(a for a in cpp.ALGORITHMS[primitive] if a.name == "depthwise_direct")
        assert_same_bits_at_thread_counts(algo, args, shape, np.float32, g)
    x[1, 5, 0, 0] = np.inf  # reaches tap (1, 1) of channel 5 only (padding 1): the rest stays finite
    with cpp_algorithms.force("depthwise_direct"):
        gw = fastconv.conv2d_backward(np.abs(gy), x, wt, None, padding=1, groups=64, backend="cpp",
                                      needs=(False, True, False))[1]
    want = ref(fastconv.conv2d_backward, np.abs(gy), x, wt, None, padding=1, groups=64)[1]
    np.testing.assert_array_equal(np.isfinite(gw), np.isfinite(want))


# Forward convs with one input channel per group and several output channels each:
# (N, C, H, W, K, stride, padding, groups); 3x3 kernels.
MULTIPLIER_EDGES = [
    (2, 1, 9, 11, 5, 1, 0, 1),  # a first layer on one channel; K = 4 + 1: both channel blocks
    (1, 2, 8, 30, 8, 2, 1, 2),  # multiplier 4, stride 2, rows longer than a block of q
    (3, 1, 28, 28, 32, 1, 0, 1),  # MNIST's first layer
]


@pytest.mark.parametrize("case", MULTIPLIER_EDGES, ids=[str(i) for i in range(len(MULTIPLIER_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_depthwise_forward_with_a_channel_multiplier(case, dtype, rng):
    n, c, h, w, k, stride, padding, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(stride=stride, padding=padding, groups=groups)
    _, _, _, _, _, g, _ = P.conv_params(x, wt, b, stride, padding, 1, groups)
    with cpp_algorithms.force("depthwise_direct"):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == "depthwise_direct"
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw), 9, dtype,
                  what="depthwise_direct forward with a channel multiplier")
    algo = next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == "depthwise_direct")
    for threads in (1, 3):  # the same bits at any thread count
        out = np.empty(g.y_shape, dtype)
        algo.run(x, wt, b, out, g, threads)
        np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("name", ["winograd_f23", "winograd_f23_adjoint", "winograd_f43", "winograd_f43_adjoint"])
def test_winograd_backward_with_infinities_matches_the_direct_sum(name, rng):
    """An infinite grad_out (backward-data) or x (backward-weight) goes to the direct sums."""
    x = rng.standard_normal((2, 8, 8, 8))
    w = rng.standard_normal((8, 8, 3, 3))
    gy = rng.standard_normal((2, 8, 8, 8))
    gy[1, 0, 5, 5], x[0, 2, 3, 3] = np.inf, -np.inf
    with cpp_algorithms.force(name):
        gx, gw, _ = fastconv.conv2d_backward(gy, x, w, None, padding=1, backend="cpp")
    for got, want in zip((gx, gw), ref(fastconv.conv2d_backward, gy, x, w, None, padding=1)[:2]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-10)


def test_winograd_declines_problems_whose_transforms_would_not_fit_a_bounded_workspace():
    big_image = P.conv_params(np.zeros((1, 256, 224, 224), np.float32), np.zeros((256, 256, 3, 3), np.float32),
                              None, 1, 1, 1, 1)[5]
    reasons = dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_data"], big_image))
    assert reasons["winograd_f23_adjoint"] == \
        "one image would take 784 MiB of transforms (winograd_f23_adjoint works on whole images)"
    assert reasons["winograd_f43_adjoint"] == \
        "one image would take 441 MiB of transforms (winograd_f43_adjoint works on whole images)"
    assert reasons["winograd_f23"] is None  # tile rows at a time: 7 MiB
    wide_row = P.conv_params(np.zeros((1, 2048, 4, 1000), np.float32), np.zeros((2048, 2048, 3, 3), np.float32),
                             None, 1, 1, 1, 1)[5]
    for primitive in ("conv_forward", "conv_backward_weight"):
        assert dict(cpp_algorithms.explain(cpp.ALGORITHMS[primitive], wide_row))["winograd_f23"] == \
            "one row of tiles would take 250 MiB of transforms"
    # F(4x4, 3x3): 36 planes of a quarter as many tiles per row
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], wide_row))["winograd_f43"] == \
        "one row of tiles would take 281 MiB of transforms"
