"""gemm_nhwc, the cpp backend's GEMMs over channel-last pixels: forced on shapes that reach their
edges (pixel panels and blocks, channel tails, several column blocks, strides, dilation,
padding, chunks of images; for backward-weight also slabs of pixels and both B paths, in place
and packed), as the forward, the stride-1 backward-data and the backward-weight, against the
float64 reference; thread counts; the reasons it declines."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from oracle import absolute, assert_same_bits_at_thread_counts, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

NAME = "gemm_nhwc"

# (N, C, H, W, K, R, S, stride, padding, dilation)
NHWC_EDGES = [
    (64, 64, 5, 5, 64, 3, 3, 1, 0, 1),  # MNIST's conv3: 576 pixels, 6 blocks of 96
    (3, 13, 7, 9, 300, 3, 3, 1, 1, 1),  # K over one 256-column block, not a multiple of 16; C odd
    (2, 9, 11, 10, 17, 3, 2, 2, (1, 0), 1),  # strides, an even kernel width, unequal padding
    (1, 8, 12, 13, 8, 3, 3, 1, 2, 2),  # dilation: one segment per tap
    (2, 16, 9, 9, 24, 1, 1, 1, 0, 1),  # 1x1
    (1, 3, 20, 21, 10, 7, 7, 2, 3, 1),  # a stem: 3 channels, a 7-wide segment of 21
    (1, 520, 3, 3, 7, 3, 3, 1, 1, 1),  # a 3-wide kernel row over 520 channels: several KC blocks
    (2, 512, 66, 66, 8, 1, 1, 1, 0, 1),  # over 16 MiB per image made channel-last: one image a chunk
    (2, 2, 64, 64, 300, 3, 3, 1, 1, 1),  # backward-weight: 8192 pixels, two slabs; B packed (50 channel panels)
    (3, 5, 6, 7, 80, 2, 2, 1, 0, 1),  # 90 pixels: one short pixel block; 14 channel panels, the last partial
    (8, 24, 7, 7, 40, 3, 3, 1, 1, 1),  # layer4-like: the plane cut into 9 regions that skip the padding
    (2, 4, 3, 3, 20, 3, 3, 1, 3, 1),  # padding past the kernel: the outer rows and columns meet no input
    (2, 5, 1, 1, 20, 3, 3, 1, 1, 1),  # a 1x1 plane: only the centre tap meets the input (grad_w zero elsewhere)
]


@pytest.mark.parametrize("case", NHWC_EDGES, ids=[str(i) for i in range(len(NHWC_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_nhwc(case, dtype, rng):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    g = P.conv_params(x, wt, b, stride, padding, dilation, 1)[5]
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force(NAME):
        assert cpp.algorithm_for("conv_forward", g, dtype).name == NAME
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gx = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", needs=(True, False, False), **kw)[0]
        backward_data = cpp.algorithm_for("conv_backward_data", g, dtype).name
        assert cpp.algorithm_for("conv_backward_weight", g, dtype).name == NAME
        gw = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", needs=(False, True, False), **kw)[1]
    assert (backward_data == NAME) == (stride == 1 and np.all(np.array(padding) <= (r - 1) * dilation))
    ax, aw, ab = absolute(x, wt, b)
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw), c * r * s + 1,
                  dtype, what=f"{NAME} forward")
    assert_within(gx, ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)[0],
                  ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)[0], k * r * s, dtype,
                  what=f"{backward_data} backward-data")
    pixels = n * gy.shape[2] * gy.shape[3]
    assert_within(gw, ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)[1],
                  ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)[1], pixels, dtype,
                  what=f"{NAME} backward-weight")


def test_gemm_nhwc_gives_the_same_bits_at_any_thread_count(rng):
    # 9 channel blocks: at 1 and 3 threads each task packs its own block of B, at 2 B is shared
    x = rng.standard_normal((5, 40, 9, 8)).astype(np.float32)
    wt = rng.standard_normal((270, 40, 3, 3)).astype(np.float32)
    g = P.conv_params(x, wt, None, 1, 1, 1, 1)[5]
    algo = next(a for a in cpp.ALGORITHMS["conv_forward"] if a.name == NAME)
    assert_same_bits_at_thread_counts(algo, (x, wt, None), g.y_shape, np.float32, g)


def test_gemm_nhwc_backward_weight_gives_the_same_bits_at_any_thread_count(rng):
    x = rng.standard_normal((5, 40, 9, 8)).astype(np.float32)
    wt = rng.standard_normal((100, 40, 3, 3)).astype(np.float32)
    g = P.conv_params(x, wt, None, 1, 1, 1, 1)[5]
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    algo = next(a for a in cpp.ALGORITHMS["conv_backward_weight"] if a.name == NAME)
    assert_same_bits_at_thread_counts(algo, (gy, x), wt.shape, np.float32, g)


def test_gemm_nhwc_says_why_it_declines():
    def reason(x_shape, w_shape, groups=1):
        g = P.conv_params(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32), None, 1, 1, 1, groups)[5]
        return dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], g))[NAME]

    assert reason((1, 8, 8, 8), (8, 4, 3, 3), groups=2) == "groups 2 (gemm_nhwc takes one group)"
    assert reason((1, 1024, 100, 100), (8, 1024, 3, 3)) == "one image made channel-last would take 81 MiB"
    assert reason((1, 512, 100, 100), (8, 512, 3, 3)) is None
