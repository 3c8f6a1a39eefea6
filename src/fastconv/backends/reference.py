"""Plain NumPy reference: every sum in float64, results cast to the input dtype once.

Slow and simple on purpose: it is the oracle the tests compare every backend against. Each
function loops over the kernel taps (r, s) in Python and does the rest with whole-array
NumPy operations, so there is no per-pixel Python loop.
"""
from __future__ import annotations

import numpy as np


def unavailable_reason():
    return None


# --------------------------------------------------------------------------- convolution

def _taps(g, r, s):
    """Rows / columns of the (top/left-padded) input that tap (r, s) reads for every output pixel."""
    rows = np.arange(g.out_h) * g.stride_h - g.pad_h + r * g.dil_h
    cols = np.arange(g.out_w) * g.stride_w - g.pad_w + s * g.dil_w
    row_ok = (rows >= 0) & (rows < g.H)
    col_ok = (cols >= 0) & (cols < g.W)
    return rows, cols, row_ok, col_ok


def _gather(x, rows, cols, row_ok, col_ok):
    """x[..., rows, cols] with zeros where the tap falls in the padding."""
    v = x[..., np.clip(rows, 0, x.shape[-2] - 1), :][..., np.clip(cols, 0, x.shape[-1] - 1)]
    # np.where, not a multiply: 0 * inf would turn padding into NaN.
    return np.where(row_ok[:, None] & col_ok[None, :], v, 0.0)


def _groups(g):
    cg, kg = g.C // g.groups, g.K // g.groups
    return [(slice(i * cg, (i + 1) * cg), slice(i * kg, (i + 1) * kg)) for i in range(g.groups)]


def conv_forward(x, w, bias, g):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = np.zeros(g.y_shape)
    for r in range(g.R):
        for s in range(g.S):
            rows, cols, row_ok, col_ok = _taps(g, r, s)
            patch = _gather(x64, rows, cols, row_ok, col_ok)  # (N, C, out_h, out_w)
            for cs, ks in _groups(g):
                y[:, ks] += np.einsum("nchw,kc->nkhw", patch[:, cs], w64[ks, :, r, s])
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y.astype(x.dtype)


def conv_backward_data(gy, w, bias, g):
    gy64, w64 = gy.astype(np.float64), w.astype(np.float64)
    gx = np.zeros(g.x_shape)
    n_idx = np.arange(g.N)[:, None, None, None]
    c_idx = np.arange(g.C)[None, :, None, None]
    for r in range(g.R):
        for s in range(g.S):
            rows, cols, row_ok, col_ok = _taps(g, r, s)
            contrib = np.zeros((g.N, g.C, g.out_h, g.out_w))
            for cs, ks in _groups(g):
                contrib[:, cs] = np.einsum("nkhw,kc->nchw", gy64[:, ks], w64[ks, :, r, s])
            rr, cc = rows[row_ok], cols[col_ok]
            # Within one tap each input pixel is hit at most once, so fancy-index += is exact.
            gx[n_idx, c_idx, rr[None, None, :, None], cc[None, None, None, :]] += contrib[:, :, row_ok][..., col_ok]
    if bias is not None:
        gx += bias.astype(np.float64)[None, :, None, None]
    return gx.astype(gy.dtype)


def conv_backward_weight(gy, x, g):
    gy64, x64 = gy.astype(np.float64), x.astype(np.float64)
    gw = np.zeros(g.w_shape)
    for r in range(g.R):
        for s in range(g.S):
            patch = _gather(x64, *_taps(g, r, s))
            for cs, ks in _groups(g):
                gw[ks, :, r, s] = np.einsum("nkhw,nchw->kc", gy64[:, ks], patch[:, cs])
    return gw.astype(gy.dtype)


# --------------------------------------------------------------------------- pooling

def _window_starts(out, stride, pad, dil):
    """torch's hstart (may be negative) and the first in-bounds tap: hstart += dil until >= 0."""
    start = np.arange(out) * stride - pad
    first = np.where(start < 0, start + ((-start + dil - 1) // dil) * dil, start)
    return start, first


def max_pool_forward(x, g):
    N, C = g.N, g.C
    planes = x.reshape(N * C, g.H * g.W)
    hstart, hfirst = _window_starts(g.out_h, g.stride_h, g.pad_h, g.dil_h)
    wstart, wfirst = _window_starts(g.out_w, g.stride_w, g.pad_w, g.dil_w)
    best = np.full((N * C, g.out_h, g.out_w), -np.inf, dtype=x.dtype)
    # torch initialises the index to the first in-bounds tap, so an all -inf window still
    # reports a position inside its window.
    index = np.broadcast_to((hfirst[:, None] * g.W + wfirst[None, :]), best.shape).astype(np.int64)
    for i in range(g.kernel_h):
        rows = hstart + i * g.dil_h
        for j in range(g.kernel_w):
            cols = wstart + j * g.dil_w
            ok = ((rows >= 0) & (rows < g.H))[:, None] & ((cols >= 0) & (cols < g.W))[None, :]
            pos = np.clip(rows, 0, g.H - 1)[:, None] * g.W + np.clip(cols, 0, g.W - 1)[None, :]
            vals = planes[:, pos]
            # torch's rule: a NaN always takes over; otherwise strictly greater wins.
            take = ok & ((vals > best) | np.isnan(vals))
            best = np.where(take, vals, best)
            index = np.where(take, pos, index)
    return best.reshape(g.y_shape), index.reshape(g.y_shape)


def max_pool_backward(gy, indices, g):
    planes = g.N * g.C
    gx = np.zeros((planes, g.H * g.W))
    plane_idx = np.broadcast_to(np.arange(planes)[:, None], (planes, g.out_h * g.out_w))
    per_plane = g.out_h * g.out_w
    idx = indices.reshape(planes, per_plane)
    inside = (idx >= 0) & (idx < g.H * g.W)  # an empty window's index takes no gradient (as in torch)
    np.add.at(gx, (plane_idx[inside], idx[inside]), gy.reshape(planes, per_plane)[inside].astype(np.float64))
    return gx.reshape(g.x_shape).astype(gy.dtype)


def _avg_divisors(g):
    """torch's divisor per output pixel (avg_pool2d CPU kernel)."""
    if g.divisor_override:
        return np.full((g.out_h, g.out_w), float(g.divisor_override))

    def extent(out, stride, pad, k, size):
        start = np.arange(out) * stride - pad
        end = np.minimum(start + k, size + pad)
        with_pad = end - start
        clipped = np.minimum(end, size) - np.maximum(start, 0)
        return with_pad, clipped

    h_pad, h_in = extent(g.out_h, g.stride_h, g.pad_h, g.kernel_h, g.H)
    w_pad, w_in = extent(g.out_w, g.stride_w, g.pad_w, g.kernel_w, g.W)
    if g.count_include_pad:
        return (h_pad[:, None] * w_pad[None, :]).astype(np.float64)
    return (h_in[:, None] * w_in[None, :]).astype(np.float64)


def _avg_taps(g):
    for i in range(g.kernel_h):
        rows = np.arange(g.out_h) * g.stride_h - g.pad_h + i
        for j in range(g.kernel_w):
            cols = np.arange(g.out_w) * g.stride_w - g.pad_w + j
            yield rows, cols, (rows >= 0) & (rows < g.H), (cols >= 0) & (cols < g.W)


def avg_pool_forward(x, g):
    x64 = x.astype(np.float64)
    total = np.zeros(g.y_shape)
    for rows, cols, row_ok, col_ok in _avg_taps(g):
        total += _gather(x64, rows, cols, row_ok, col_ok)
    return (total / _avg_divisors(g)).astype(x.dtype)


def avg_pool_backward(gy, g):
    share = gy.astype(np.float64) / _avg_divisors(g)
    gx = np.zeros(g.x_shape)
    for rows, cols, row_ok, col_ok in _avg_taps(g):
        # Two taps of one window never hit the same pixel; windows overlap across outputs,
        # so scatter with add.at.
        rr = np.broadcast_to(rows[:, None], share.shape[-2:])
        cc = np.broadcast_to(cols[None, :], share.shape[-2:])
        ok = row_ok[:, None] & col_ok[None, :]
        np.add.at(gx, (slice(None), slice(None), rr[ok], cc[ok]), share[:, :, ok])
    return gx.astype(gy.dtype)
