"""gemm_taps, the cpp backend's backward-weight for convs without padding (a GEMM per kernel tap:
grad_out's channel rows read in place, x's pixels at the tap gathered and transposed per task):
forced on shapes that reach its edges (1x1 at stride 1 read without the gather, strides 2 and 3,
unequal strides, dilation, channel panels and register panels partly filled, reductions over
several KC blocks and short tails, groups, gy's channels split into blocks when there are few
tasks), as conv2d's and conv_transpose2d's backward-weight, against the float64 reference; thread
counts; the reason it declines."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from oracle import absolute, assert_named_algorithm_same_bits, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

NAME = "gemm_taps"

# (N, C, H, W, K, kernel, stride, dilation, groups)
EDGES = [
    (4, 128, 28, 28, 256, 1, 1, 1, 1),  # MobileNet's pointwise layer: x's rows transposed in place
    (2, 16, 7, 9, 24, 1, 1, 1, 1),  # 63 pixels: a tail of 7 past the whole vectors
    (3, 5, 2, 3, 7, 1, 1, 1, 1),  # 5 channels (a partial panel read in place), 7 (a short register panel)
    (1, 8, 40, 40, 100, 1, 1, 1, 1),  # 1600 pixels: five KC blocks; one channel panel, gy's channels split
    (4, 128, 28, 28, 256, 1, 2, 1, 1),  # ResNet's 1x1 s2 downsampling: gathered as even lanes
    (2, 64, 56, 56, 128, 2, 2, 1, 1),  # U-Net's 2x2 s2 patches: four taps
    (2, 17, 11, 9, 13, 3, (2, 3), 1, 1),  # unequal strides (one gathered one by one), 17 channels
    (3, 12, 9, 9, 18, 2, 1, 2, 3),  # dilation, groups
    (2, 5, 7, 30, 7, 3, 3, 1, 1),  # stride 3, a partial panel gathered
    (1, 3, 8, 8, 5, 1, 2, 1, 1),  # 16 pixels, 3 channels
]


@pytest.mark.parametrize("case", EDGES, ids=[str(i) for i in range(len(EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_taps(case, dtype, rng):
    n, c, h, w, k, r, stride, dil, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, r)).astype(dtype)
    kw = dict(stride=stride, dilation=dil, groups=groups)
    g = P.conv_params(x, wt, None, stride, 0, dil, groups)[5]
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force(NAME):
        assert cpp.algorithm_for("conv_backward_weight", g, dtype).name == NAME
        gw = fastconv.conv2d_backward(gy, x, wt, None, **kw, backend="cpp", needs=(False, True, False))[1]
    terms = n * g.y_shape[2] * g.y_shape[3]
    assert_within(gw, ref(fastconv.conv2d_backward, gy, x, wt, None, **kw)[1],
                  ref(fastconv.conv2d_backward, np.abs(gy), *absolute(x, wt), None, **kw)[1], terms, dtype,
                  what="gemm_taps backward-weight")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_gemm_taps_transposed(dtype, rng):
    """conv_transpose2d's backward-weight (its grad_out is the conv's input): U-Net's 2x2 s2
    up-sampling, with an output padding the taps never read."""
    x = rng.standard_normal((2, 24, 7, 6)).astype(dtype)
    wt = rng.standard_normal((24, 20, 2, 2)).astype(dtype)
    kw = dict(stride=2, output_padding=1)
    y = fastconv.conv_transpose2d(x, wt, **kw, backend="reference")
    gy = rng.standard_normal(y.shape).astype(dtype)
    with cpp_algorithms.force(NAME):
        gw = fastconv.conv_transpose2d_backward(gy, x, wt, None, **kw, backend="cpp", needs=(False, True, False))[1]
    assert_within(gw, ref(fastconv.conv_transpose2d_backward, gy, x, wt, None, **kw)[1],
                  ref(fastconv.conv_transpose2d_backward, np.abs(gy), *absolute(x, wt), None, **kw)[1],
                  2 * 7 * 6, dtype, what="gemm_taps conv_transpose2d backward-weight")


@pytest.mark.parametrize("kernel,stride", [(1, 1), (2, 2), (3, 2)])
def test_gemm_taps_same_bits_at_any_thread_count(kernel, stride, rng):
    x = rng.standard_normal((3, 20, 11, 13)).astype(np.float32)
    wt = rng.standard_normal((22, 20, kernel, kernel)).astype(np.float32)
    assert_named_algorithm_same_bits(NAME, "conv_backward_weight", x, wt, rng, stride=stride)


def test_gemm_taps_says_why_it_declines():
    g = P.conv_params(np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32), None, 1, 1, 1, 1)[5]
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_weight"], g))[NAME] == \
        "padding: a tap's pixels would fall on it (gathered without bounds)"


@pytest.mark.parametrize("shape_x, kernel", [((1, 4, 4, 6), (2, 2)), ((2, 3, 7, 5), (1, 2))], ids=["2x2", "1x2"])
def test_gemm_taps_declines_padding_implied_by_the_output(shape_x, kernel, rng):
    """padding='same' with an even kernel pads the bottom and right only: no top or left padding,
    but the last taps fall past x (it read past the input and returned garbage, found by a
    hypothesis case). It declines, and the op still gives the reference's grad_w."""
    x = rng.standard_normal(shape_x).astype(np.float32)
    w = rng.standard_normal((2, shape_x[1], *kernel)).astype(np.float32)
    g = P.conv_params(x, w, None, 1, "same", 1, 1)[5]
    assert (g.pad_h, g.pad_w) == (0, 0)
    assert dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_backward_weight"], g))[NAME] == \
        "padding: a tap's pixels would fall on it (gathered without bounds)"
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    with cpp_algorithms.force(NAME):
        _, gw, _ = fastconv.conv2d_backward(gy, x, w, None, padding="same", needs=(False, True, False), backend="cpp")
    want = ref(fastconv.conv2d_backward, gy, x, w, None, padding="same", needs=(False, True, False))[1]
    bound = ref(fastconv.conv2d_backward, *absolute(gy, x, w), None, padding="same", needs=(False, True, False))[1]
    assert_within(gw, want, bound, g.N * g.out_h * g.out_w, np.float32, what="grad_w with padding='same'")
