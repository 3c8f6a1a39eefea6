"""dilated_phases, the cpp backend's space-to-batch route for dilated convs: forced on shapes that
reach its edges (unequal dilations, dilation along one axis only, no padding, groups, depthwise,
a 5-tap kernel), as the forward, backward-data and backward-weight, against the float64
reference; thread counts; the phase copies on their own; the reasons it declines."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from oracle import absolute, assert_named_algorithm_same_bits, assert_within, ref

pytestmark = pytest.mark.skipif(fastconv.backends()["cpp"] is not None, reason="the C++ extension is not built")

if fastconv.backends()["cpp"] is None:
    from fastconv import _params as P
    from fastconv.backends import cpp, cpp_algorithms

NAME = "dilated_phases"

# (N, C, H, W, K, R, S, padding, dilation, groups); H, W and the padding multiples of the dilation
PHASE_EDGES = [
    (2, 12, 12, 10, 12, 3, 3, 2, 2, 1),  # DeepLab-like: four 6x5 phases, padding 1 each
    (1, 6, 9, 8, 5, 3, 3, (3, 2), (3, 2), 1),  # unequal dilations: six phases
    (1, 5, 10, 7, 3, 3, 3, (2, 1), (2, 1), 1),  # dilation along the rows only
    (2, 4, 8, 8, 6, 3, 3, 0, 2, 2),  # no padding (the output smaller than the input); two groups
    (2, 6, 8, 12, 6, 3, 3, 2, 2, 6),  # depthwise
    (1, 3, 12, 12, 4, 5, 3, (4, 2), 2, 1),  # a 5-tap kernel axis
]


def _inner(primitive, g, dtype):
    """The algorithm the phases' problem (without dilation) ran with."""
    return cpp.algorithm_for(primitive, cpp_algorithms._phase_geometry(g), dtype).name


@pytest.mark.parametrize("case", PHASE_EDGES, ids=[str(i) for i in range(len(PHASE_EDGES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_dilated_phases(case, dtype, rng):
    n, c, h, w, k, r, s, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(padding=padding, dilation=dilation, groups=groups)
    g = P.conv_params(x, wt, b, 1, padding, dilation, groups)[5]
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    with cpp_algorithms.force(NAME):
        for primitive in ("conv_forward", "conv_backward_data", "conv_backward_weight"):
            assert cpp.algorithm_for(primitive, g, dtype).name == NAME
        y = fastconv.conv2d(x, wt, b, backend="cpp", **kw)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, wt, b, backend="cpp", **kw)
    ax, aw, ab = absolute(x, wt, b)
    inner = {p: _inner(p, g, dtype) for p in ("conv_forward", "conv_backward_data", "conv_backward_weight")}
    # The phases' problem may run with Winograd: its bound (test_cpp_algorithms._bound_factor), and
    # for backward-weight the largest tap's magnitude for all of a kernel's taps.
    factor = {p: 4.0 if name.startswith("winograd_f43") else 1.0 for p, name in inner.items()}
    terms = 4 if "winograd" in " ".join(inner.values()) else 1
    cg, kg = c // groups, k // groups
    assert_within(y, ref(fastconv.conv2d, x, wt, b, **kw), ref(fastconv.conv2d, ax, aw, ab, **kw), cg * r * s * terms,
                  dtype, factor=factor["conv_forward"], what=f"{NAME} forward ({inner['conv_forward']})")
    rx = ref(fastconv.conv2d_backward, gy, x, wt, b, **kw)
    mx = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    assert_within(gx, rx[0], mx[0], kg * r * s * terms, dtype, factor=factor["conv_backward_data"],
                  what=f"{NAME} backward-data ({inner['conv_backward_data']})")
    mw = mx[1]
    if "winograd" in inner["conv_backward_weight"]:
        mw = np.broadcast_to(mx[1].max(axis=(2, 3), keepdims=True), mx[1].shape)
    assert_within(gw, rx[1], mw, n * g.out_h * g.out_w * terms, dtype, factor=factor["conv_backward_weight"],
                  what=f"{NAME} backward-weight ({inner['conv_backward_weight']})")


@pytest.mark.parametrize("primitive", ["conv_forward", "conv_backward_data", "conv_backward_weight"])
def test_dilated_phases_gives_the_same_bits_at_any_thread_count(primitive, rng):
    x = rng.standard_normal((2, 16, 12, 10)).astype(np.float32)
    wt = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    assert_named_algorithm_same_bits(NAME, primitive, x, wt, rng, padding=2, dilation=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dh,dw", [(2, 2), (3, 1), (1, 3), (2, 4)])
def test_dilation_phases_split_and_merge(dh, dw, dtype, rng):
    planes = rng.standard_normal((3, 2, 12, 12)).astype(dtype)
    stack = np.full((dh * dw * 3, 2, 12 // dh, 12 // dw), np.nan, dtype)
    cpp._C.dilation_phases(planes, stack, dh, dw, True, 2)
    for a in range(dh):
        for b in range(dw):
            np.testing.assert_array_equal(stack[(a * dw + b) * 3:(a * dw + b + 1) * 3], planes[:, :, a::dh, b::dw])
    back = np.full_like(planes, np.nan)
    cpp._C.dilation_phases(back, stack, dh, dw, False, 3)
    np.testing.assert_array_equal(back, planes)


def test_dilation_phases_rejects_mismatched_shapes():
    planes = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"the stack must be \(dh dw N, C, H / dh, W / dw\)"):
        cpp._C.dilation_phases(planes, np.zeros((8, 3, 3, 2), np.float32), 2, 2, True, 1)
    with pytest.raises(ValueError, match="H and W multiples of dh, dw"):
        cpp._C.dilation_phases(planes, np.zeros((8, 3, 3, 1), np.float32), 2, 4, True, 1)
    with pytest.raises(ValueError, match="positive dilations"):
        cpp._C.dilation_phases(planes, np.zeros((2, 3, 6, 6), np.float32), 0, 1, True, 1)


def test_dilated_phases_says_why_it_declines():
    def reason(x_shape, k, stride=1, padding=2, dilation=2):
        x, w = np.zeros(x_shape, np.float32), np.zeros((k, x_shape[1], 3, 3), np.float32)
        g = P.conv_params(x, w, None, stride, padding, dilation, 1)[5]
        return dict(cpp_algorithms.explain(cpp.ALGORITHMS["conv_forward"], g))[NAME]

    assert reason((2, 256, 28, 28), 256) is None  # DeepLab's dilated layer
    assert reason((1, 4, 8, 8), 4, padding=1, dilation=1) == "no dilation"
    assert reason((1, 4, 8, 8), 4, stride=2) == "stride 2x2 is not 1"
    assert reason((1, 4, 9, 8), 4) == ("input 9x8, padding 2x2 and output 9x8 do not split into equal phases of "
                                       "the dilation 2x2")
    assert reason((1, 4, 8, 8), 4, padding=1) == ("input 8x8, padding 1x1 and output 6x6 do not split into equal "
                                                  "phases of the dilation 2x2")


def test_dilated_phases_declines_rows_no_output_reads(rng):
    """A transposed conv with output_padding: backward-data's grad_x has a row past the kernel's
    reach, so its phases are not the conv without dilation of grad_out's."""
    g = P.conv_transpose_params(np.zeros((1, 4, 5, 5), np.float32), np.zeros((4, 4, 3, 3), np.float32), None, 1, 0,
                                1, 1, 2, op="test")[5]  # stride 1, padding 0, output_padding 1, dilation 2
    algo = next(a for a in cpp.ALGORITHMS["conv_backward_data"] if a.name == NAME)
    assert "do not split into equal phases" in algo.accepts(g)
