"""The fused conv + 2x2 max pool (F.conv2d_max_pool2d; the cpp backend's conv_max_pool.cpp)
against torch's max_pool2d(conv2d(...)), forward and every gradient, and Sequential's fusion.

Tolerances: float64 to 1e-12 relative to the largest magnitude (every value is a sum of at most
C*R*S products, and grad_w of at most N*PH*PW windows, in a different order than oneDNN's);
float32 to 2e-5 relative. With random normal inputs no two pixels of a window are within a
rounding of each other at float64, so every window has the same winner as torch's, and the
gradients are routed alike; at float32, near-ties are possible, so float32 is compared on the
forward only, and the winners checked to be torch's wherever torch's maximum is not a near-tie.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastconv
from conftest import CPU_BACKENDS
from fastconv.autograd import Tensor, functional as F
from fastconv.nn import layers

needs_cpp = pytest.mark.skipif("cpp" not in CPU_BACKENDS, reason="the cpp backend is not built")


def torch_conv_pool(x, w, b, padding):
    return torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x, w, b, padding=padding), 2)


def run_both(x, w, b, padding, cot, needs=(True, True, True), backend="cpp"):
    """(fastconv output, grads), (torch output, grads) for max_pool2d(conv2d(x, w, b)) . cot."""
    ours = [Tensor(a.copy(), requires_grad=n) if a is not None else None for a, n in zip((x, w, b), needs)]
    y = F.conv2d_max_pool2d(*ours, padding, backend=backend)
    run_both.made_by = type(y._node)  # backward frees the graph
    y.backward(cot)
    theirs = [torch.tensor(a, requires_grad=n) if a is not None else None for a, n in zip((x, w, b), needs)]
    ty = torch_conv_pool(*theirs, padding)
    ty.backward(torch.from_numpy(cot))
    return ((y, [None if t is None else t.grad for t in ours]),
            (ty.detach().numpy(), [None if t is None or t.grad is None else t.grad.numpy() for t in theirs]))


def close(a, b, rel):
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * max(1.0, float(np.abs(b).max(initial=0.0))))


GRID = [  # N, C, H, W, K, R, S, padding
    (2, 1, 28, 28, 32, 3, 3, 0),  # MNIST conv1
    (3, 2, 9, 7, 5, 3, 2, 1),     # odd conv output (last row and column in no window), odd K
    (1, 4, 6, 5, 3, 1, 1, 0),     # 1x1 kernel, 4 channels
    (2, 3, 8, 8, 17, 5, 5, 2),    # 5x5, K not a multiple of the channel block
    (1, 1, 3, 3, 1, 2, 2, 0),     # the smallest: a 2x2 conv output, one window
    (4, 1, 32, 32, 32, 3, 3, 1),  # the restoration nets' first layer
    (20, 2, 5, 11, 9, 3, 3, 1),   # more images than backward-weight chunks
]


@needs_cpp
@pytest.mark.parametrize("case", GRID)
def test_fused_matches_torch_float64(case):
    N, C, H, W, K, R, S, pad = case
    r = np.random.default_rng(sum(case))
    x, w, b = r.standard_normal((N, C, H, W)), r.standard_normal((K, C, R, S)), r.standard_normal(K)
    cot = r.standard_normal((N, K, (H + 2 * pad - R + 1) // 2, (W + 2 * pad - S + 1) // 2))
    (y, grads), (ty, tgrads) = run_both(x, w, b, pad, cot)
    assert run_both.made_by is F.ConvMaxPool2d  # the fused kernel ran
    close(y.data, ty, 1e-12)
    for name, g, tg in zip("xwb", grads, tgrads):
        close(g, tg, 1e-12 * np.sqrt(max(N, 1)) * 10)


@needs_cpp
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True), (True, True, False)])
def test_fused_partial_gradients_and_no_bias(needs):
    r = np.random.default_rng(1)
    x, w, b = r.standard_normal((2, 2, 10, 9)), r.standard_normal((6, 2, 3, 3)), r.standard_normal(6)
    cot = r.standard_normal((2, 6, 4, 3))
    (y, grads), (ty, tgrads) = run_both(x, w, b, 0, cot, needs)
    for g, tg, n in zip(grads, tgrads, needs):
        assert (g is None) == (not n)
        if n:
            close(g, tg, 1e-12)
    (y, grads), (ty, tgrads) = run_both(x, w, None, 0, cot, (True, True, False))
    close(grads[1], tgrads[1], 1e-12)


@needs_cpp
def test_fused_float32_forward_and_winners():
    r = np.random.default_rng(2)
    x, w, b = (r.standard_normal(s).astype(np.float32) for s in ((8, 1, 28, 28), (32, 1, 3, 3), (32,)))
    y = F.conv2d_max_pool2d(Tensor(x), Tensor(w), Tensor(b), 0)
    conv = torch.nn.functional.conv2d(*(torch.from_numpy(a) for a in (x, w, b)))
    ty, tidx = torch.nn.functional.max_pool2d(conv, 2, return_indices=True)
    close(y.data, ty.numpy(), 2e-5)
    # winners: ours, as dh * 2 + dw, against torch's flat indices, where torch's top two differ by > 1e-4
    from fastconv.backends import cpp
    from fastconv._params import conv_params

    _, where = cpp.conv_max_pool_forward(x, w, b, conv_params(x, w, b, 1, 0, 1, 1)[5])
    tidx = tidx.numpy()
    oh, ow = np.divmod(tidx, conv.shape[3])
    torch_where = (oh % 2) * 2 + ow % 2
    windows = conv.numpy()[:, :, :26, :26].reshape(8, 32, 13, 2, 13, 2).transpose(0, 1, 2, 4, 3, 5).reshape(8, 32, 13, 13, 4)
    top2 = np.sort(windows, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(where[clear], torch_where[clear])


@needs_cpp
def test_ties_go_to_the_first_pixel_as_in_torch():
    """An all-zero image: every window's four pixels equal the bias; torch's scan keeps the first."""
    x, w, b = np.zeros((2, 1, 8, 8)), np.ones((3, 1, 3, 3)), np.array([0.5, -1.0, 0.0])
    cot = np.random.default_rng(3).standard_normal((2, 3, 3, 3))
    (y, grads), (ty, tgrads) = run_both(x, w, b, 0, cot)
    np.testing.assert_array_equal(y.data, ty)
    for g, tg in zip(grads, tgrads):  # routed to another pixel, they would differ by O(1)
        close(g, tg, 1e-12)


@needs_cpp
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_match_torch(bad):
    """NaN wins a window (aten's rule); an inf or NaN in x sends the backward to the dense route,
    whose 0 * inf products are the unfused layer's (and torch's)."""
    r = np.random.default_rng(4)
    x, w, b = r.standard_normal((2, 1, 9, 9)), r.standard_normal((4, 1, 3, 3)), r.standard_normal(4)
    x[0, 0, 3, 4] = bad
    x[1, 0, 8, 8] = bad  # in the conv output's last row and column, which no window covers
    cot = r.standard_normal((2, 4, 3, 3))
    (y, grads), (ty, tgrads) = run_both(x, w, b, 0, cot)
    np.testing.assert_allclose(y.data, ty, rtol=1e-12, equal_nan=True)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-12, equal_nan=True)


@needs_cpp
def test_fused_results_do_not_depend_on_threads():
    r = np.random.default_rng(5)
    x, w, b = (r.standard_normal(s).astype(np.float32) for s in ((37, 2, 20, 19), (11, 2, 3, 3), (11,)))
    cot = r.standard_normal((37, 11, 10, 9)).astype(np.float32)
    results = []
    previous = fastconv.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastconv.set_num_threads(threads)
            X, Wt, B = Tensor(x, True), Tensor(w, True), Tensor(b, True)
            y = F.conv2d_max_pool2d(X, Wt, B, 1)
            y.backward(cot)
            results.append([y.data, X.grad, Wt.grad, B.grad])
    finally:
        fastconv.set_num_threads(previous)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


@needs_cpp
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 11), st.integers(2, 11), st.integers(1, 10),
       st.integers(1, 4), st.integers(1, 4), st.integers(0, 2), st.integers(0, 2**31))
def test_fused_property(N, C, H, W, K, R, S, pad, seed):
    oh, ow = H + 2 * pad - R + 1, W + 2 * pad - S + 1
    if oh < 2 or ow < 2:
        return
    r = np.random.default_rng(seed)
    x, w, b = r.standard_normal((N, C, H, W)), r.standard_normal((K, C, R, S)), r.standard_normal(K)
    (y, grads), (ty, tgrads) = run_both(x, w, b, pad, r.standard_normal((N, K, oh // 2, ow // 2)))
    assert run_both.made_by is F.ConvMaxPool2d
    close(y.data, ty, 1e-12)
    for g, tg in zip(grads, tgrads):
        close(g, tg, 1e-11)


@pytest.mark.parametrize("backend", ["reference"] + CPU_BACKENDS)
def test_every_backend_gives_the_composed_result(backend):
    """Where no fused kernel takes the conv (other backends; more than 4 input channels; an
    unbatched input) F.conv2d_max_pool2d is the two Functions in sequence."""
    r = np.random.default_rng(6)
    for shape in ((2, 5, 8, 8), (2, 8, 8)):
        c = shape[-3]
        x, w, b = r.standard_normal(shape), r.standard_normal((3, c, 3, 3)), r.standard_normal(3)
        X, Wt, B = Tensor(x, True), Tensor(w, True), Tensor(b, True)
        y = F.conv2d_max_pool2d(X, Wt, B, 1, backend=backend)
        assert type(y._node) is F.MaxPool2d  # not fused
        cot = r.standard_normal(y.shape)
        y.backward(cot)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch_conv_pool(tx, tw, tb, 1)
        ty.backward(torch.from_numpy(cot))
        close(y.data, ty.detach().numpy(), 1e-12)
        for g, t in ((X.grad, tx), (Wt.grad, tw), (B.grad, tb)):
            close(g, t.grad.numpy(), 1e-12)


def test_sequential_fuses_conv_then_2x2_max_pool_only():
    conv = layers.Conv2d(1, 4, 3)
    plain, other_pool = layers.MaxPool2d(2), layers.MaxPool2d(2, 1)
    assert plain.pools_2x2() and layers.MaxPool2d(2, 2, 0, 1).pools_2x2() and layers.MaxPool2d((2, 2)).pools_2x2()
    for pool in (other_pool, layers.MaxPool2d(3, 2), layers.MaxPool2d(2, padding=1), layers.MaxPool2d(2, ceil_mode=True),
                 layers.MaxPool2d(2, dilation=2)):
        assert not pool.pools_2x2()
    x = Tensor(np.random.default_rng(7).standard_normal((2, 1, 10, 10)).astype(np.float32))
    assert conv.forward_fused(other_pool, x) is None
    assert layers.Conv2d(1, 4, 3, stride=2).forward_fused(plain, x) is None
    seq = fastconv.nn.Sequential(conv, plain, layers.ReLU())
    fused_out = seq(x)
    unfused = layers.ReLU()(plain(conv(x)))
    np.testing.assert_allclose(fused_out.data, unfused.data, rtol=1e-6, atol=1e-6)


@needs_cpp
def test_kernel_refuses_geometry_it_cannot_walk():
    from fastconv import _C
    from fastconv.backends import cpp
    from fastconv._params import conv_params

    x, w = np.zeros((1, 1, 8, 8)), np.zeros((2, 1, 3, 3))
    g = conv_params(x, w, None, 2, 0, 1, 1)[5]
    assert "stride-1" in cpp.conv_max_pool_accepts(g)
    with pytest.raises(ValueError, match="stride-1, dilation-1, one-group"):
        _C.conv_max_pool_forward(cpp._geom(g), x, w, None, np.empty((1, 2, 1, 1)), np.empty((1, 2, 1, 1), np.uint8), 1)
    assert "input channels" in cpp.conv_max_pool_accepts(conv_params(np.zeros((1, 5, 8, 8)), np.zeros((2, 5, 3, 3)),
                                                                     None, 1, 0, 1, 1)[5])
