"""Finite-difference checks of every backward on every backend (float64): for random
directions v, (L(x + h v) - L(x - h v)) / 2h must match <grad, v>, where L = <grad_out, op(x)>.
Central differences of a function that is linear in each argument (conv) are exact up to
rounding; for the pools the data avoid ties and kinks so the function is locally linear."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from conftest import call

H = 1e-3


def directional(f, args, i, v):
    plus = list(args)
    minus = list(args)
    plus[i] = args[i] + H * v
    minus[i] = args[i] - H * v
    return (f(*plus) - f(*minus)) / (2 * H)


def check(loss, grads, args, rng, names):
    for i, (g, name) in enumerate(zip(grads, names)):
        if g is None:
            continue
        v = rng.standard_normal(args[i].shape)
        numeric = directional(loss, args, i, v)
        analytic = float(np.sum(g * v))
        assert abs(numeric - analytic) <= 1e-7 * (1 + abs(analytic)), f"{name}: {numeric} vs {analytic}"


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(padding="same", dilation=2, groups=2),
                                dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1))])
def test_conv2d_gradients(backend, rng, kw):
    x = rng.standard_normal((2, 4, 7, 8))
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 2))
    b = rng.standard_normal(6)
    y = call(backend, fastconv.conv2d, x, w, b, **kw)
    gy = rng.standard_normal(y.shape)

    def loss(x_, w_, b_):
        return float(np.sum(gy * call(backend, fastconv.conv2d, x_, w_, b_, **kw)))

    check(loss, call(backend, fastconv.conv2d_backward, gy, x, w, b, **kw), [x, w, b], rng, "xwb")


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=3, output_padding=1, groups=2),
                                dict(stride=(2, 1), dilation=(1, 2), padding=(1, 1), output_padding=(1, 0))])
def test_conv_transpose2d_gradients(backend, rng, kw):
    g = kw.get("groups", 1)
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 6 // g, 4, 3))
    b = rng.standard_normal(6)
    y = call(backend, fastconv.conv_transpose2d, x, w, b, **kw)
    gy = rng.standard_normal(y.shape)

    def loss(x_, w_, b_):
        return float(np.sum(gy * call(backend, fastconv.conv_transpose2d, x_, w_, b_, **kw)))

    check(loss, call(backend, fastconv.conv_transpose2d_backward, gy, x, w, b, **kw), [x, w, b], rng, "xwb")


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=2, stride=1, dilation=2)])
def test_max_pool2d_gradient(backend, rng, kw):
    x = rng.permutation(np.arange(2 * 3 * 7 * 7, dtype=np.float64)).reshape(2, 3, 7, 7) / 10  # distinct values
    y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **kw)
    gy = rng.standard_normal(y.shape)

    def loss(x_):
        return float(np.sum(gy * call(backend, fastconv.max_pool2d, x_, **kw)))

    check(loss, [call(backend, fastconv.max_pool2d_backward, gy, x, idx, **kw)], [x], rng, "x")


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                dict(kernel_size=(3, 2), stride=1, divisor_override=4)])
def test_avg_pool2d_gradient(backend, rng, kw):
    x = rng.standard_normal((2, 3, 7, 7))
    y = call(backend, fastconv.avg_pool2d, x, **kw)
    gy = rng.standard_normal(y.shape)

    def loss(x_):
        return float(np.sum(gy * call(backend, fastconv.avg_pool2d, x_, **kw)))

    check(loss, [call(backend, fastconv.avg_pool2d_backward, gy, x, **kw)], [x], rng, "x")
