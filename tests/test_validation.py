"""Every validation rule of _params.py: the exception type and a message that names the
argument, the value and what was expected. Checked once through the public API (validation
runs before backend selection, so it is the same for every backend)."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv

X = np.zeros((2, 4, 8, 8))
W = np.zeros((6, 4, 3, 3))
WT = np.zeros((4, 3, 3, 3))  # transposed: (C_in, C_out/groups, R, S)


CONV_ERRORS = [
    (dict(x=X.astype(np.float16)), TypeError, "x has dtype float16; only float32 and float64"),
    (dict(x=X.astype(np.int32)), TypeError, "x has dtype int32"),
    (dict(weight=W.astype(np.float32)), TypeError, r"mixed dtypes \(x=float64, weight=float32, bias=float64\): all arrays must have the same dtype"),
    (dict(bias=np.zeros(6, np.float32)), TypeError, "mixed dtypes"),
    (dict(x=[[1.0]]), TypeError, "x must be a numpy.ndarray or cupy.ndarray, got list"),
    (dict(weight="w"), TypeError, "weight must be a numpy.ndarray or cupy.ndarray, got str"),
    (dict(x=np.zeros((8, 8))), ValueError, r"x must be 3-D \(C, H, W\) or 4-D \(N, C, H, W\), got shape \(8, 8\)"),
    (dict(x=np.zeros((1, 4, 0, 8))), ValueError, "non-zero channels, height and width"),
    (dict(weight=np.zeros((6, 4, 3))), ValueError, r"weight must be 4-D, got shape \(6, 4, 3\)"),
    (dict(weight=np.zeros((6, 3, 3, 3))), ValueError, "expected x to have 3 channels, got 4 channels"),
    (dict(groups=4, weight=np.zeros((6, 1, 3, 3))), ValueError, "K=6 .* must be divisible by groups=4"),
    (dict(groups=0), ValueError, "groups must be positive, got groups=0"),
    (dict(groups=1.5), TypeError, "groups must be an int, got 1.5"),
    (dict(bias=np.zeros(5)), ValueError, r"bias must have shape \(6,\), got \(5,\)"),
    (dict(stride=0), ValueError, r"stride must be positive, got stride=\(0, 0\)"),
    (dict(stride=(1, -1)), ValueError, "stride must be positive"),
    (dict(stride=(1, 2, 3)), ValueError, "expected stride to be a single integer value or a list of 2 values"),
    (dict(stride=1.0), TypeError, "stride must be an int or a tuple of 2 ints, got 1.0"),
    (dict(stride=True), TypeError, "stride must be an int"),
    (dict(padding=-1), ValueError, r"padding must be non-negative, got padding=\(-1, -1\)"),
    (dict(padding="full"), ValueError, "invalid padding string 'full', expected 'same' or 'valid'"),
    (dict(padding="same", stride=2), ValueError, "padding='same' is not supported for strided convolutions"),
    (dict(dilation=0), ValueError, "dilation must be positive"),
    (dict(weight=np.zeros((6, 4, 9, 3))), ValueError, "smaller than the effective kernel size"),
    (dict(dilation=5), ValueError, r"padded input size \(8, 8\) is smaller than the effective kernel size \(11, 11\)"),
]


@pytest.mark.parametrize("override,exc,message", CONV_ERRORS, ids=[m for _, _, m in CONV_ERRORS])
def test_conv2d_rejects(override, exc, message):
    args = dict(x=X, weight=W, bias=np.zeros(6))
    args.update(override)
    with pytest.raises(exc, match=message):
        fastconv.conv2d(**args)


def test_conv2d_backward_checks_grad_out_and_needs():
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 6, 6, 6\), got \(2, 6, 5, 5\)"):
        fastconv.conv2d_backward(np.zeros((2, 6, 5, 5)), X, W)
    with pytest.raises(TypeError, match="mixed dtypes"):
        fastconv.conv2d_backward(np.zeros((2, 6, 6, 6), np.float32), X, W)
    with pytest.raises(ValueError, match=r"grad_out must be 3-D like the unbatched x"):
        fastconv.conv2d_backward(np.zeros((1, 6, 6, 6)), X[0], W)
    with pytest.raises(TypeError, match="needs must be a tuple of 3 bools"):
        fastconv.conv2d_backward(np.zeros((2, 6, 6, 6)), X, W, needs=(True, True))


TRANSPOSED_ERRORS = [
    (dict(padding="same"), ValueError, "padding must be an int or a tuple of 2 ints, got 'same'"),
    (dict(output_padding=2, stride=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    (dict(output_padding=1), ValueError, "output_padding must be smaller than either stride or dilation"),
    (dict(output_padding=-1, stride=2), ValueError, "output_padding must be non-negative"),
    (dict(weight=np.zeros((3, 3, 3, 3))), ValueError, r"expects x with 3 channels \(weight.shape\[0\]\), got 4"),
    (dict(groups=3), ValueError, "in channels 4 must be divisible by groups=3"),
    (dict(bias=np.zeros(4)), ValueError, r"bias must have shape \(3,\), got \(4,\)"),
    (dict(padding=5), ValueError, r"the output size \(.*\) is too small"),
]


@pytest.mark.parametrize("override,exc,message", TRANSPOSED_ERRORS, ids=[m for _, _, m in TRANSPOSED_ERRORS])
def test_conv_transpose2d_rejects(override, exc, message):
    args = dict(x=X, weight=WT)
    args.update(override)
    with pytest.raises(exc, match=message):
        fastconv.conv_transpose2d(**args)


def test_output_padding_allowed_below_dilation():
    # PyTorch allows output_padding < max(stride, dilation).
    y = fastconv.conv_transpose2d(X, WT, stride=1, dilation=2, output_padding=1)
    assert y.shape == (2, 3, 13, 13)


POOL_ERRORS = [
    (dict(kernel_size=0), ValueError, r"kernel_size must be positive, got kernel_size=\(0, 0\)"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be positive"),
    (dict(kernel_size=3, padding=2), ValueError,
     r"padding should be at most half of kernel size, got padding=\(2, 2\), kernel_size=\(3, 3\)"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding must be non-negative"),
    (dict(kernel_size=2, dilation=0), ValueError, "dilation must be positive"),
    (dict(kernel_size=9), ValueError, r"calculated output size \(4, 0, 0\) is too small"),
    (dict(kernel_size=2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "expected kernel_size to be a single integer value or a list of 2"),
]


@pytest.mark.parametrize("override,exc,message", POOL_ERRORS, ids=[m for _, _, m in POOL_ERRORS])
def test_max_pool2d_rejects(override, exc, message):
    with pytest.raises(exc, match=message):
        fastconv.max_pool2d(X, **override)


def test_avg_pool2d_rejects():
    with pytest.raises(ValueError, match="divisor_override must be non-zero, got 0"):
        fastconv.avg_pool2d(X, 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override must be an int or None"):
        fastconv.avg_pool2d(X, 2, divisor_override=2.5)
    with pytest.raises(ValueError, match="padding should be at most half of kernel size"):
        fastconv.avg_pool2d(X, 2, padding=2)
    with pytest.raises(TypeError, match="x has dtype int64"):
        fastconv.avg_pool2d(X.astype(np.int64), 2)


def test_max_pool2d_backward_checks_indices():
    y, idx = fastconv.max_pool2d(X, 2, return_indices=True)
    gy = np.ones_like(y)
    with pytest.raises(TypeError, match="indices must be an integer numpy array, got dtype float64"):
        fastconv.max_pool2d_backward(gy, X, idx.astype(np.float64), 2)
    with pytest.raises(ValueError, match=r"indices must have shape \(2, 4, 4, 4\), got \(2, 4, 4, 3\)"):
        fastconv.max_pool2d_backward(gy, X, idx[..., :3], 2)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 4, 4, 4\)"):
        fastconv.max_pool2d_backward(gy[:, :, :3], X, idx, 2)


def test_backward_accepts_forward_arguments_positionally_and_by_keyword():
    y, idx = fastconv.max_pool2d(X, 3, 2, 1, 1, True, return_indices=True)
    a = fastconv.max_pool2d_backward(np.ones_like(y), X, idx, 3, 2, 1, 1, True)
    b = fastconv.max_pool2d_backward(np.ones_like(y), X, idx, kernel_size=3, stride=2, padding=1, dilation=1,
                                     ceil_mode=True)
    np.testing.assert_array_equal(a, b)
    ya = fastconv.avg_pool2d(X, 3, 2, 1, True, False, 2)
    ga = fastconv.avg_pool2d_backward(np.ones_like(ya), X, 3, 2, 1, True, False, 2)
    gb = fastconv.avg_pool2d_backward(np.ones_like(ya), X, kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                      count_include_pad=False, divisor_override=2)
    np.testing.assert_array_equal(ga, gb)


def test_huge_output_is_a_clear_error_not_a_crash():
    x = np.zeros((1, 1, 1, 1), np.float32)
    w = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError, match=r"conv2d: the output of shape \(1, 1, 2097153, 2097153\) .* cannot be allocated"):
        fastconv.conv2d(x, w, padding=2**20)
    with pytest.raises(MemoryError, match="conv_transpose2d: the output of shape"):
        fastconv.conv_transpose2d(np.zeros((1, 1, 2**11, 2**11), np.float32), w, stride=2**10)
