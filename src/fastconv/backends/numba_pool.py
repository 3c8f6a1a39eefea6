"""Numba max and average pooling, forward and backward: csrc/pool.cpp's loops, compiled by Numba.

The window arithmetic is PyTorch's CPU kernels' (aten/src/ATen/native/cpu/MaxPoolKernel.cpp,
AvgPoolKernel.cpp), including the index of an all -inf window (the first in-bounds tap), the
NaN rule, the avg-pool divisor and the empty ceil-mode window (output 0, no gradient); the
backward passes scatter in PyTorch's order so float sums round alike.

Parallel axis: planes (n, c). Pooling never mixes planes, so N * C is the natural independent
axis; it gives both cores work at batch 1 as soon as there are two channels, and each output
element is written by exactly one iteration, whatever the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def max_pool_forward(x, y, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, neg_inf):
    """neg_inf is -inf in x's dtype, so the running maximum never changes type."""
    N, C, H, W = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    x_planes = x.reshape(N * C, H * W)
    y_planes = y.reshape(N * C, out_h * out_w)
    idx_planes = indices.reshape(N * C, out_h * out_w)
    for plane in prange(N * C):
        for oh in range(out_h):
            h0 = oh * stride_h - pad_h
            h1 = min(h0 + (kernel_h - 1) * dil_h + 1, H)
            while h0 < 0:
                h0 += dil_h
            taps_h = (h1 - h0 + dil_h - 1) // dil_h
            for ow in range(out_w):
                w0 = ow * stride_w - pad_w
                w1 = min(w0 + (kernel_w - 1) * dil_w + 1, W)
                while w0 < 0:
                    w0 += dil_w
                taps_w = (w1 - w0 + dil_w - 1) // dil_w
                best = neg_inf
                # torch starts from the first in-bounds tap, so an all -inf window reports a
                # position inside itself.
                best_at = h0 * W + w0
                for i in range(taps_h):
                    row = (h0 + i * dil_h) * W + w0
                    for j in range(taps_w):
                        at = row + j * dil_w
                        v = x_planes[plane, at]
                        # torch: `val > max || isnan(val)`. Written as selects, not a branch:
                        # on real data the comparison is a coin toss the predictor loses.
                        take = (v > best) | (v != v)
                        best = v if take else best
                        best_at = at if take else best_at
                y_planes[plane, oh * out_w + ow] = best
                idx_planes[plane, oh * out_w + ow] = best_at


@njit(parallel=True, cache=True, nogil=True)
def max_pool_backward(gy, indices, gx):
    N, C, H, W = gx.shape
    outs = gy.shape[2] * gy.shape[3]
    gy_planes = gy.reshape(N * C, outs)
    idx_planes = indices.reshape(N * C, outs)
    gx_planes = gx.reshape(N * C, H * W)
    for plane in prange(N * C):
        for i in range(H * W):
            gx_planes[plane, i] = 0.0
        # Scatter in output order like torch. An index outside the plane (torch's forward emits
        # one for a window lying entirely in the padding; a caller may pass anything) takes no
        # gradient, as in torch.
        for o in range(outs):
            i = idx_planes[plane, o]
            if 0 <= i < H * W:
                gx_planes[plane, i] += gy_planes[plane, o]


@njit(cache=True, nogil=True)
def _avg_window(oh, ow, H, W, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
                divisor_override):
    """torch's avg-pool window (h0, h1, w0, w1, divisor): padding counts up to H + pad, not beyond."""
    h0 = oh * stride_h - pad_h
    w0 = ow * stride_w - pad_w
    h1 = min(h0 + kernel_h, H + pad_h)
    w1 = min(w0 + kernel_w, W + pad_w)
    with_pad = (h1 - h0) * (w1 - w0)
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    h1 = min(h1, H)
    w1 = min(w1, W)
    if divisor_override != 0:
        divisor = divisor_override
    elif count_include_pad:
        divisor = with_pad
    else:
        divisor = (h1 - h0) * (w1 - w0)
    return h0, h1, w0, w1, divisor


@njit(parallel=True, cache=True, nogil=True)
def avg_pool_forward(x, y, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
                     divisor_override):
    N, C, H, W = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    x_planes = x.reshape(N * C, H, W)
    y_planes = y.reshape(N * C, out_h, out_w)
    for plane in prange(N * C):
        # Sum and divide in the array's dtype, as torch does: a one-element array gives the
        # dtype's zero and the divisor converted to it.
        scalar = np.zeros(2, dtype=x.dtype)
        for oh in range(out_h):
            for ow in range(out_w):
                h0, h1, w0, w1, divisor = _avg_window(oh, ow, H, W, kernel_h, kernel_w, stride_h, stride_w,
                                                      pad_h, pad_w, count_include_pad, divisor_override)
                if h0 >= h1 or w0 >= w1:  # an empty ceil-mode window
                    y_planes[plane, oh, ow] = 0.0
                    continue
                total = scalar[0]
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        total += x_planes[plane, ih, iw]
                scalar[1] = divisor
                y_planes[plane, oh, ow] = total / scalar[1]


@njit(parallel=True, cache=True, nogil=True)
def avg_pool_backward(gy, gx, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
                      divisor_override):
    N, C, H, W = gx.shape
    out_h, out_w = gy.shape[2], gy.shape[3]
    gy_planes = gy.reshape(N * C, out_h, out_w)
    gx_planes = gx.reshape(N * C, H, W)
    for plane in prange(N * C):
        divisor_t = np.zeros(1, dtype=gx.dtype)  # the divisor in the array's dtype, as torch
        for ih in range(H):
            for iw in range(W):
                gx_planes[plane, ih, iw] = 0.0
        for oh in range(out_h):
            for ow in range(out_w):
                h0, h1, w0, w1, divisor = _avg_window(oh, ow, H, W, kernel_h, kernel_w, stride_h, stride_w,
                                                      pad_h, pad_w, count_include_pad, divisor_override)
                if h0 >= h1 or w0 >= w1:
                    continue
                divisor_t[0] = divisor
                share = gy_planes[plane, oh, ow] / divisor_t[0]
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        gx_planes[plane, ih, iw] += share
