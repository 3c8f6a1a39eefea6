"""gemm_1x1, the cpp backend's GEMM for 1x1 kernels without padding (B read in place from x's
channel rows, or at a stride gathered per task; C written into y): forced on shapes that reach its
edges (the partial last pixel panel, planes smaller than a panel, channel tails, reductions over
several KC blocks, groups, blocks split for 8 tasks, a streamed output, strides), as the forward
and at stride 1 as backward-data (the transposed conv's forward), against the float64 reference;
thread counts; the reasons it declines."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from oracle import absolute, assert_named_algorithm_same_bits, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

NAME = "gemm_1x1"

# (N, C, H, W, K, groups)
EDGES_1X1 = [
    (4, 128, 28, 28, 256, 1),  # MobileNet's pointwise layer: 784 pixels, whole panels
    (2, 16, 7, 9, 24, 1),  # 63 pixels: the last panel partial (copied)
    (3, 5, 2, 3, 7, 1),  # 6 pixels: one partial panel per image; 7 channels, a short register panel
    (1, 700, 5, 6, 10, 1),  # 700 channels: three KC blocks, C accumulated in y, the bias once
    (2, 12, 9, 10, 18, 3),  # groups
    (1, 8, 40, 40, 100, 1),  # one image: pixel blocks and channel blocks split for 8 tasks
]


@pytest.mark.parametrize("case", EDGES_1X1, ids=[str(i) for i in range(len(EDGES_1X1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_1x1(case, dtype, rng):
    n, c, h, w, k, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    g = P.conv_params(x, wt, b, 1, 0, 1, groups)[5]
    with cpp_algorithms.force(NAME):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == NAME
        assert cpp.algorithm_for("conv_backward_data", g, dtype).name == NAME
        y = fastconv.conv2d(x, wt, b, groups=groups, backend="cpp")
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = fastconv.conv2d_backward(gy, x, wt, b, groups=groups, backend="cpp", needs=(True, False, False))[0]
        bt = rng.standard_normal(c).astype(dtype)
        xt = fastconv.conv_transpose2d(gy, wt, bt, groups=groups, backend="cpp")
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, groups=groups), ref(fastconv.conv2d, ax, aw, ab, groups=groups),
                  c // groups, dtype, what="gemm_1x1 forward")
    want = ref(fastconv.conv2d_backward, gy, x, wt, b, groups=groups)[0]
    bound = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, groups=groups)[0]
    assert_within(gx, want, bound, k // groups, dtype, what="gemm_1x1 backward-data")
    assert_within(xt, ref(fastconv.conv_transpose2d, gy, wt, bt, groups=groups),
                  ref(fastconv.conv_transpose2d, np.abs(gy), aw, np.abs(bt), groups=groups), k // groups, dtype,
                  what="gemm_1x1 conv_transpose2d")


# (N, C, H, W, K, groups, stride)
STRIDED_1X1 = [
    (4, 128, 28, 28, 256, 1, 2),  # ResNet's downsampling: 196 pixels an image
    (2, 16, 7, 9, 24, 1, 2),  # odd plane: 4 x 5 pixels, one partial panel per image
    (1, 700, 9, 10, 10, 1, (3, 2)),  # unequal strides, three KC blocks
    (2, 12, 9, 10, 18, 3, (2, 3)),  # groups
    (1, 8, 80, 80, 100, 1, 2),  # one image: pixel blocks and channel blocks split for 8 tasks
]


@pytest.mark.parametrize("case", STRIDED_1X1, ids=[str(i) for i in range(len(STRIDED_1X1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_1x1_strided_forward(case, dtype, rng):
    n, c, h, w, k, groups, stride = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    g = P.conv_params(x, wt, b, stride, 0, 1, groups)[5]
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_data"], g))[NAME] == \
        "stride: grad_x's rows are not the GEMM's"
    with cpp_algorithms.force(NAME):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == NAME
        y = fastconv.conv2d(x, wt, b, stride=stride, groups=groups, backend="cpp")
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, stride=stride, groups=groups),
                  ref(fastconv.conv2d, ax, aw, ab, stride=stride, groups=groups), c // groups, dtype,
                  what="gemm_1x1 strided forward")


def test_gemm_1x1_strided_same_bits_at_any_thread_count(rng):
    x = rng.standard_normal((3, 24, 11, 13)).astype(np.float32)
    wt = rng.standard_normal((20, 24, 1, 1)).astype(np.float32)
    assert_named_algorithm_same_bits(NAME, "conv_forward", x, wt, rng, stride=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_1x1_streams_a_large_output_aligned_or_not(dtype, rng):
    """An 8 MiB output (the streaming threshold), 64-byte aligned as conv2d allocates it, and
    misaligned (ordinary stores): the same bits."""
    k = 64 // np.dtype(dtype).itemsize
    x = rng.standard_normal((2, 4, 256, 256)).astype(dtype)
    wt = rng.standard_normal((k, 4, 1, 1)).astype(dtype)
    with cpp_algorithms.force(NAME):
        y = fastconv.conv2d(x, wt, backend="cpp")
    assert y.nbytes == 8 << 20 and y.ctypes.data % 64 == 0
    assert_within(y, ref(fastconv.conv2d, x, wt), ref(fastconv.conv2d, *absolute(x, wt)), 4, dtype,
                  what="gemm_1x1 streamed forward")
    g = P.conv_params(x, wt, None, 1, 0, 1, 1)[5]
    buf = np.empty(y.size + 8, dtype)
    start = next(i for i in range(8) if (buf.ctypes.data + i * buf.itemsize) % 32 == 16)
    misaligned = buf[start:start + y.size].reshape(y.shape)
    next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == NAME).run(x, wt, None, misaligned, g, 2)
    assert np.array_equal(misaligned, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_1x1_same_bits_with_rows_on_or_off_the_cache_lines(dtype, rng):
    """x's rows read in place where they start cache lines, copied first where not (NumPy's large
    arrays start 16 bytes past a line): the same bits at every offset, and the reference's values."""
    x = rng.standard_normal((2, 20, 16, 16)).astype(dtype)  # 256 pixels: 64-byte rows
    wt = rng.standard_normal((13, 20, 1, 1)).astype(dtype)
    g = P.conv_params(x, wt, None, 1, 0, 1, 1)[5]
    algo = next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == NAME)
    outs = []
    for offset in (0, 8, 16, 32):
        buf = np.empty(x.size + 64, dtype)
        start = (-buf.ctypes.data % 64 + offset) // x.itemsize
        moved = buf[start:start + x.size].reshape(x.shape)
        moved[...] = x
        assert moved.ctypes.data % 64 == offset
        outs.append(np.full(g.y_shape, np.nan, dtype))
        algo.run(moved, wt, None, outs[-1], g, 2)
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    assert_within(outs[0], ref(fastconv.conv2d, x, wt), ref(fastconv.conv2d, *absolute(x, wt)), 20, dtype,
                  what="gemm_1x1 forward off the cache lines")


@pytest.mark.parametrize("primitive", ["conv_forward", "conv_backward_data"])
def test_gemm_1x1_same_bits_at_any_thread_count(primitive, rng):
    x = rng.standard_normal((3, 24, 11, 13)).astype(np.float32)
    wt = rng.standard_normal((20, 24, 1, 1)).astype(np.float32)
    assert_named_algorithm_same_bits(NAME, primitive, x, wt, rng)


@pytest.mark.parametrize("primitive,kw,reason", [
    ("conv_forward", dict(weight=(4, 3, 3, 3)), "kernel 3x3 is not 1x1"),
    ("conv_forward", dict(padding=1), "padding: x's pixels are not the GEMM's columns"),
    ("conv_backward_data", dict(padding=1), "padding: x's pixels are not the GEMM's columns"),
    ("conv_backward_data", dict(stride=2), "stride: grad_x's rows are not the GEMM's"),
])
def test_gemm_1x1_says_why_it_declines(primitive, kw, reason):
    g = P.conv_params(np.zeros((1, 3, 8, 8), np.float32), np.zeros(kw.get("weight", (4, 3, 1, 1)), np.float32), None,
                      kw.get("stride", 1), kw.get("padding", 0), 1, 1)[5]
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS[primitive], g))[NAME] == reason
