"""winograd_s2, the cpp backend's F(2x2, 2x2) over the phases of a 4x4 stride-2 kernel: forced
on shapes that reach its edges (partial tiles, tiles crossing images, channel counts off the
register tile, long reductions, groups, every padding), forward, backward-data (also as the
transposed conv's forward) and backward-weight, against the float64 reference; random
geometries; thread counts; infinities; and the reasons it declines."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from oracle import absolute, assert_same_bits_at_thread_counts, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

NAME = "winograd_s2"

# (N, C, H, W, K, groups, padding)
S2_EDGES = [
    (2, 8, 8, 8, 8, 1, 1),  # DCGAN's geometry, small: 2x2 tiles, tiles cross images
    (3, 8, 9, 11, 13, 1, 0),  # odd outputs: partial tiles on the bottom and right; K off the 6x16 tile
    (1, 20, 40, 38, 8, 1, 1),  # 10 tiles a row: a vector and more; C off the panel height
    (1, 70, 6, 6, 9, 1, 1),  # 4 C = 280 rows of reduction: longer than one KC block
    (2, 16, 10, 12, 16, 2, 2),  # groups, padding 2 (tiles read only padding at the edges)
    (1, 8, 4, 4, 8, 1, 3),  # padding 3: rows of padding on every side
    (2, 9, 7, 5, 8, 1, (0, 2)),  # unequal padding
    (1, 8, 2, 2, 8, 1, 1),  # one output pixel per image
    (4, 12, 16, 16, 24, 1, 1),  # several tile rows per image and several blocks
]


def _bound_terms(c, k):
    # The transforms' sums of up to 4 inputs or taps (each rounded) over the 4 C (phase, channel)
    # rows of the GEMMs: 16 C products as the direct sum has, times 4 (as winograd_f23's).
    return c * 16 * 4, k * 16 * 4


def _problem(dtype, n, c, h, w, k, groups, padding, rng):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 4, 4)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    g = P.conv_params(x, wt, b, 2, padding, 1, groups)[5]
    return x, wt, b, g


def _check(dtype, n, c, h, w, k, groups, padding, rng, assert_chosen=True):
    x, wt, b, g = _problem(dtype, n, c, h, w, k, groups, padding, rng)
    kw = dict(stride=2, padding=padding, groups=groups)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force(NAME):
        if assert_chosen:
            for primitive in ("conv_forward", "conv_backward_data", "conv_backward_weight"):
                assert cpp.algorithm_for(primitive, g, dtype).name == NAME, primitive
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    fwd_terms, bd_terms = _bound_terms(c // groups, k // groups)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw), fwd_terms, dtype,
                  what=f"{NAME} forward")
    rx = ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)
    mx = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    assert_within(gx, rx[0], mx[0], bd_terms, dtype, what=f"{NAME} backward-data")
    # A (k, c) kernel's 16 taps come from the same transformed sums, whose terms are as large as
    # the largest tap's: its bound scales with that tap's magnitude (as winograd_f23's). The
    # transforms' own adds on either side of the sum over pixels: + 2.
    mw = np.broadcast_to(mx[1].max(axis=(2, 3), keepdims=True), mx[1].shape)
    assert_within(gw, rx[1], mw, (n * g.out_h * g.out_w + 2) * 4, dtype, what=f"{NAME} backward-weight")


@pytest.mark.parametrize("case", S2_EDGES, ids=[str(i) for i in range(len(S2_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_winograd_s2(case, dtype, rng):
    _check(dtype, *case, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_winograd_s2_as_the_transposed_conv(dtype, rng):
    """conv_transpose2d 4x4 s2 p1 (DCGAN's generator): its forward is the conv's backward-data."""
    x = rng.standard_normal((3, 16, 5, 7)).astype(dtype)
    wt = rng.standard_normal((16, 12, 4, 4)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    kw = dict(stride=2, padding=1)
    g = P.conv_transpose_params(x, wt, b, 2, 1, 0, 1, 1)[5]
    gy = rng.standard_normal((3, 12, 10, 14)).astype(dtype)
    with cpp_algorithms.force(NAME):
        assert cpp.algorithm_for("conv_backward_data", g, dtype).name == NAME
        y = fastconv.conv_transpose2d(x, wt, b, backend="cpp", **kw)
        gx, gw, _ = fastconv.conv_transpose2d_backward(gy, x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv_transpose2d, x, wt, b, **kw),
                  ref(fastconv.conv_transpose2d, ax, aw, ab, **kw), 12 * 16 * 4, dtype, what="conv_transpose2d")
    rx = ref(fastconv.conv_transpose2d_backward, gy, x, wt, b, **kw)
    mx = ref(fastconv.conv_transpose2d_backward, np.abs(gy), ax, aw, ab, **kw)
    assert_within(gx, rx[0], mx[0], 12 * 16 * 4, dtype, what="conv_transpose2d backward-data")
    mw = np.broadcast_to(mx[1].max(axis=(2, 3), keepdims=True), mx[1].shape)
    assert_within(gw, rx[1], mw, 3 * 10 * 14 * 4, dtype, what="conv_transpose2d backward-weight")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.integers(8, 20), k=st.integers(8, 20), h=st.integers(1, 30),
       w=st.integers(1, 30), ph=st.integers(0, 4), pw=st.integers(0, 4), float64=st.booleans(),
       seed=st.integers(0, 2**31))
def test_forced_winograd_s2_random(n, c, k, h, w, ph, pw, float64, seed):
    """Random geometries: rows shorter and longer than a vector, any padding, partial tiles."""
    h, w = max(h, 4 - 2 * ph), max(w, 4 - 2 * pw)
    _check(np.float64 if float64 else np.float32, n, c, h, w, k, 1, (ph, pw), np.random.default_rng(seed))


def test_winograd_s2_gives_the_same_bits_at_any_thread_count(rng):
    x, wt, b, g = _problem(np.float32, 5, 24, 18, 14, 40, 1, 1, rng)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    for primitive, args, shape in (("conv_forward", (x, wt, b), g.y_shape),
                                   ("conv_backward_data", (gy, wt, None), g.x_shape),
                                   ("conv_backward_weight", (gy, x), g.w_shape)):
        algo = next(a for a in cpp.ALGORITHMS[primitive] if a.name == NAME)
        assert_same_bits_at_thread_counts(algo, args, shape, np.float32, g)


@pytest.mark.parametrize("where", ["x", "weight", "grad_out"])
def test_winograd_s2_with_infinities_matches_the_direct_sum(where, rng):
    """inf - inf inside the transforms would give NaN; the result must be torch's +-inf."""
    x = rng.standard_normal((2, 8, 8, 8))
    w = rng.standard_normal((8, 8, 4, 4))
    gy = rng.standard_normal((2, 8, 4, 4))
    if where == "x":
        x[1, 0, 5, 5], x[1, 2, 0, 0] = np.inf, -np.inf
    elif where == "weight":
        w[2, 1, 1, 1] = np.inf
    else:
        gy[1, 3, 2, 1] = -np.inf
    kw = dict(stride=2, padding=1)
    with cpp_algorithms.force(NAME):
        got = (fastconv.conv2d(x, w, **kw, backend="cpp"),) + fastconv.conv2d_backward(gy, x, w, None, backend="cpp",
                                                                                         **kw)[:2]
    want = (ref(fastconv.conv2d, x, w, **kw),) + ref(fastconv.conv2d_backward, gy, x, w, None, **kw)[:2]
    for a, e in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        finite = np.isfinite(e)
        np.testing.assert_allclose(a[finite], e[finite], rtol=1e-10, atol=1e-10)


def test_winograd_s2_says_why_it_declines():
    def reason(primitive, x_shape, w_shape, stride=2, padding=1, dilation=1, groups=1):
        g = P.conv_params(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32), None, stride, padding,
                          dilation, groups)[5]
        return dict(cpp_algorithms.explain(cpp.ALGORITHMS[primitive], g))[NAME]

    assert reason("conv_forward", (1, 8, 8, 8), (8, 8, 4, 4)) is None
    assert reason("conv_forward", (1, 3, 8, 8), (8, 3, 4, 4)) == \
        "3 in / 8 out channels per group (the Winograd algorithms want 8 or more)"
    assert reason("conv_forward", (1, 8, 8, 8), (8, 8, 3, 3)) == "kernel 3x3 is not 4x4"
    assert reason("conv_backward_weight", (1, 8, 8, 8), (8, 8, 4, 4), stride=1) == "stride 1x1 is not 2"
    assert reason("conv_forward", (1, 8, 16, 16), (8, 8, 4, 4), dilation=2) == "dilation is not 1"
    # Bounded workspaces: a row of tiles (forward, backward-weight), a whole image (backward-data).
    assert reason("conv_forward", (1, 2048, 4, 4000), (2048, 2048, 4, 4)) == \
        "one row of tiles would take 703 MiB of transforms"
    assert reason("conv_backward_data", (1, 512, 512, 512), (512, 512, 4, 4)) == \
        "one image would take 2880 MiB of transforms (winograd_s2 backward-data works on whole images)"
    assert reason("conv_forward", (1, 512, 512, 512), (512, 512, 4, 4)) is None
