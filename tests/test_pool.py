"""max_pool2d and avg_pool2d, forward and backward, on every backend against the reference
and PyTorch. Max pooling is exact: values, indices and gradients compared for equality
(backward accumulates in PyTorch's order)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from conftest import call
from oracle import assert_within, ref

# (N, C, H, W, kwargs) -- kwargs of max_pool2d
MAX_CASES = [
    (2, 3, 8, 8, dict(kernel_size=2)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (1, 2, 10, 11, dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(2, 3))),
    (1, 2, 10, 11, dict(kernel_size=2, stride=3, ceil_mode=True)),
    (1, 2, 5, 5, dict(kernel_size=3, stride=1, padding=1)),  # overlapping windows
    (2, 2, 6, 6, dict(kernel_size=4, stride=3, padding=2, dilation=2, ceil_mode=True)),
    (1, 1, 1, 1, dict(kernel_size=1)),
    (2, 4, 26, 26, dict(kernel_size=2, stride=2)),  # MNIST
]

# (N, C, H, W, kwargs) -- kwargs of avg_pool2d
AVG_CASES = [
    (2, 3, 8, 8, dict(kernel_size=2)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, 3, 9, 7, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    (2, 3, 10, 10, dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 1), ceil_mode=True)),
    (1, 2, 5, 6, dict(kernel_size=3, stride=1, padding=1, divisor_override=5)),
    (1, 2, 5, 6, dict(kernel_size=2, stride=2, ceil_mode=True, divisor_override=-3)),
    (1, 1, 4, 4, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # a window starting in right padding
    (3, 5, 9, 9, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # 15 planes: a group of 8 and the rest
    (2, 9, 7, 7, dict(kernel_size=7)),  # global pooling
]


def _ids(case):
    return f"{case[0]}x{case[1]}x{case[2]}x{case[3]}-" + ",".join(f"{a}={b}" for a, b in case[4].items())


def _torch_max(x, gy, kw):
    xt = torch.tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(xt, return_indices=True, **kw)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), idx.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("case", MAX_CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool2d(backend, rng, case, dtype):
    n, c, h, w, kw = case
    x = (np.round(rng.standard_normal((n, c, h, w)) * 2) / 2).astype(dtype)  # many ties: first max wins
    y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
    y_plain = call(backend, fastconv.max_pool2d, x, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = call(backend, fastconv.max_pool2d_backward, gy, x, idx, **kw)
    ty, tidx, tgx = _torch_max(x, gy, kw)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(y_plain, ty)
    np.testing.assert_array_equal(idx, tidx)
    np.testing.assert_array_equal(gx, tgx)
    ry, ridx = ref(fastconv.max_pool2d, x, return_indices=True, **kw)
    np.testing.assert_array_equal(ridx, tidx)


def test_max_pool2d_nan_and_infinities_follow_torch(backend, rng):
    x = rng.standard_normal((2, 2, 6, 6))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan  # two NaNs in one window: the last one in scan order wins
    x[0, 1, :2, :2] = -np.inf  # an all -inf window: index of its first tap
    x[1, 0, 2:4, 2:4] = np.inf
    x[1, 1, 4, 4] = np.nan
    x[1, 1, 5, 5] = np.inf
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
               dict(kernel_size=2, stride=1, dilation=2)):
        y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
        gy = rng.standard_normal(y.shape)
        ty, tidx, tgx = _torch_max(x, gy, kw)
        np.testing.assert_array_equal(y, ty)  # assert_array_equal treats NaN == NaN
        np.testing.assert_array_equal(idx, tidx)
        np.testing.assert_array_equal(call(backend, fastconv.max_pool2d_backward, gy, x, idx, **kw), tgx)


@pytest.mark.parametrize("shape", [(2, 3, 6, 37), (1, 2, 4, 16), (3, 1, 2, 3), (1, 1, 7, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_2x2_special_values_follow_torch(backend, rng, shape, dtype):
    """2x2 stride-2 windows (a vectorised path on cpp): whole lane groups, row tails, the tail of
    the array's last row, and NaN / +-inf / ties in every tap position."""
    x = np.round(rng.standard_normal(shape) * 2) / 2
    special = rng.random(shape)
    x[special < 0.05] = np.nan
    x[(special >= 0.05) & (special < 0.10)] = np.inf
    x[(special >= 0.10) & (special < 0.25)] = -np.inf
    x = x.astype(dtype)
    y, idx = call(backend, fastconv.max_pool2d, x, 2, return_indices=True)
    ty, tidx, _ = _torch_max(x, np.zeros(y.shape, dtype), dict(kernel_size=2))
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=(2, 3), stride=(1, 3), padding=(1, 1)),
                                dict(kernel_size=(3, 2), stride=(2, 2), padding=(0, 1), dilation=(1, 3)),
                                dict(kernel_size=5, stride=2, padding=2, dilation=2, ceil_mode=True)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_wide_rows_special_values_follow_torch(backend, rng, kw, dtype):
    """Rows wide enough for lanes of whole windows (a vectorised path on cpp, at strides 1, 2 and
    other), with the clipped windows of both edges, the last row of the array (a stride-2 lane
    load may reach past it), and NaN / +-inf / ties in every tap position."""
    x = np.round(rng.standard_normal((2, 3, 9, 53)) * 2) / 2
    special = rng.random(x.shape)
    x[special < 0.05] = np.nan
    x[(special >= 0.05) & (special < 0.10)] = np.inf
    x[(special >= 0.10) & (special < 0.25)] = -np.inf
    x = x.astype(dtype)
    y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
    ty, tidx, _ = _torch_max(x, np.zeros(y.shape, dtype), kw)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)


def test_max_pool2d_all_minus_inf_window_with_padding(backend):
    x = np.full((1, 1, 3, 3), -np.inf, dtype=np.float32)
    kw = dict(kernel_size=3, stride=2, padding=1)
    y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
    ty, tidx, _ = _torch_max(x, np.ones((1, 1, 2, 2), np.float32), kw)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)
    assert ((idx >= 0) & (idx < 9)).all()


# Rows wide enough for lanes of whole windows (cpp sums those in vector lanes): strides 1, 2 and 3,
# padding counted or not, a divisor override, ceil mode, and 15 planes (a group of 8 and the rest).
WIDE_AVG_CASES = [
    (2, 3, 9, 53, dict(kernel_size=3, stride=1, padding=1)),
    (2, 3, 9, 53, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    (1, 2, 7, 61, dict(kernel_size=(2, 3), stride=(1, 3), padding=(1, 1), divisor_override=7)),
    (3, 5, 6, 40, dict(kernel_size=5, stride=2, padding=2, ceil_mode=True)),
]


@pytest.mark.parametrize("case", AVG_CASES[-2:] + WIDE_AVG_CASES, ids=_ids)
def test_cpp_avg_pool2d_rounds_as_torch(rng, case):
    """The cpp kernels add in torch's order, several planes in lockstep: the same bits."""
    n, c, h, w, kw = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = fastconv.avg_pool2d(x, backend="cpp", **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = fastconv.avg_pool2d_backward(gy, x, backend="cpp", **kw)
    xt = torch.tensor(x, requires_grad=True)
    F.avg_pool2d(xt, **kw).backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, F.avg_pool2d(torch.tensor(x), **kw).numpy())
    np.testing.assert_array_equal(gx, xt.grad.numpy())


@pytest.mark.parametrize("case", AVG_CASES + WIDE_AVG_CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avg_pool2d(backend, rng, case, dtype):
    n, c, h, w, kw = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    y = call(backend, fastconv.avg_pool2d, x, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = call(backend, fastconv.avg_pool2d_backward, gy, x, **kw)
    k = kw["kernel_size"]
    taps = k * k if isinstance(k, int) else k[0] * k[1]
    assert_within(y, ref(fastconv.avg_pool2d, x, **kw), ref(fastconv.avg_pool2d, np.abs(x), **kw), taps, dtype,
                  what="avg_pool2d")
    assert_within(gx, ref(fastconv.avg_pool2d_backward, gy, x, **kw),
                  ref(fastconv.avg_pool2d_backward, np.abs(gy), x, **kw), taps, dtype, what="avg_pool2d grad")
    xt = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(xt, **kw)
    ty.backward(torch.tensor(gy))
    assert_within(y, ty.detach().numpy(), ref(fastconv.avg_pool2d, np.abs(x), **kw), taps, dtype, factor=2,
                  what="avg_pool2d vs torch")
    assert_within(gx, xt.grad.numpy(), ref(fastconv.avg_pool2d_backward, np.abs(gy), x, **kw), taps, dtype,
                  factor=2, what="avg_pool2d grad vs torch")


def test_pool_unbatched_and_empty_batch(backend, rng):
    x = rng.standard_normal((3, 6, 6))
    y, idx = call(backend, fastconv.max_pool2d, x, 2, return_indices=True)
    assert y.shape == (3, 3, 3) and idx.shape == (3, 3, 3)
    gx = call(backend, fastconv.max_pool2d_backward, np.ones_like(y), x, idx, 2)
    assert gx.shape == x.shape and gx.sum() == 27
    assert call(backend, fastconv.avg_pool2d, x, 2).shape == (3, 3, 3)
    assert call(backend, fastconv.avg_pool2d_backward, np.ones((3, 3, 3)), x, 2).shape == x.shape
    empty = np.zeros((0, 3, 6, 6))
    assert call(backend, fastconv.max_pool2d, empty, 2).shape == (0, 3, 3, 3)
    assert call(backend, fastconv.avg_pool2d, empty, 2).shape == (0, 3, 3, 3)


def test_stride_defaults_to_kernel(backend, rng):
    x = rng.standard_normal((1, 2, 9, 9))
    np.testing.assert_array_equal(call(backend, fastconv.max_pool2d, x, 3),
                                  call(backend, fastconv.max_pool2d, x, 3, stride=3))
    np.testing.assert_array_equal(call(backend, fastconv.avg_pool2d, x, 3, stride=[]),
                                  call(backend, fastconv.avg_pool2d, x, 3, 3))


def test_max_pool2d_window_entirely_in_padding_matches_torch(backend, rng):
    # Dilation 2 and padding 1 on a 1-row input: the window's taps (rows -1 and 1) both miss,
    # and torch reports -inf with an index outside the plane.
    x = rng.standard_normal((1, 2, 1, 3))
    kw = dict(kernel_size=(2, 1), stride=1, padding=(1, 0), dilation=(2, 1))
    y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
    ty, tidx = F.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    # torch's backward writes through that index outside the plane (undefined behaviour there);
    # fastconv gives it no gradient.
    gx = call(backend, fastconv.max_pool2d_backward, np.ones_like(y), x, idx, **kw)
    np.testing.assert_array_equal(gx, np.zeros_like(x))


def test_max_pool2d_backward_ignores_indices_outside_the_plane(backend, rng):
    x = rng.standard_normal((1, 1, 4, 4))
    y, idx = call(backend, fastconv.max_pool2d, x, 2, return_indices=True)
    idx[0, 0, 0, 0] = 16
    idx[0, 0, 0, 1] = -5
    gx = call(backend, fastconv.max_pool2d_backward, np.ones_like(y), x, idx, 2)
    assert gx.sum() == 2  # the two valid indices only; nothing written outside the plane
