"""Numba convolution by shifted windows: forward and backward-data with no patch gather.

Computed on an output grid as wide as a padded input row, tap (r, s) of a stride-1
correlation reads the padded plane shifted by a constant, r * plane_w + s: the flat window
of the plane starting there. So every right-hand row of gemm_acc is a window straight into a
padded copy of the input (made once per call, about the input's size) instead of a row of a
gathered patch tile (R * S times the input, made per tile): the gather, 20-40 % of the time
of numba_conv.py's kernels, is gone. The price is plane_w - out_w columns per grid row that
are computed and dropped, so numba.py takes this path only where the grid rows are wide
(small waste); numba_conv.py's gather serves narrow images and backward-weight.

Strides: the forward's padded copy is split into stride_h x stride_w phase planes, element
[i, j] of phase (a, b) being x[i * sh + a - pad_h, j * sw + b - pad_w], so that tap (r, s) is
still a constant shift, in phase ((r * dh) mod sh, (s * dw) mod sw). Backward-data splits
gx instead (the sub-pixel decomposition of csrc/conv.cpp and numba_conv.py), each phase a
stride-1 correlation of a padded copy of grad_out.

Parallel axis and determinism as in numba_conv.py: fixed tasks (image x group x [phase x]
tile of the grid), each output element computed once by gemm_acc in a fixed order.
Padded planes carry one slack row, so the garbage columns of the last grid row read inside
the plane: gemm_acc's loads are unchecked.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_conv import _copy_row, _copy_row_strided, _pack_phase_weights
from .numba_gemm import gemm_acc


@njit(parallel=True, cache=True, nogil=True)
def conv_forward(x, w, bias, y, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, tile):
    """y = conv(x, w) (+ bias when bias.size > 0). Tasks: image x group x tiles of the grid."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    out_h, out_w = y.shape[2], y.shape[3]
    Kg = K // groups
    rows = Cg * R * S
    has_bias = bias.size > 0
    phases = stride_h * stride_w
    plane_h = out_h + ((R - 1) * dil_h) // stride_h + 1
    plane_w = out_w + ((S - 1) * dil_w) // stride_w
    plane = plane_h * plane_w
    x_planes = x.reshape(N * C, H, W)

    src = np.empty(N * C * phases * plane, dtype=x.dtype)
    for pc in prange(N * C):
        for a in range(stride_h):
            for b in range(stride_w):
                base = (pc * phases + a * stride_w + b) * plane
                for i in range(plane_h):
                    ih = i * stride_h + a - pad_h
                    row = base + i * plane_w
                    if 0 <= ih < H:
                        for j in range(plane_w):
                            iw = j * stride_w + b - pad_w
                            src[row + j] = x_planes[pc, ih, iw] if 0 <= iw < W else 0.0
                    else:
                        for j in range(plane_w):
                            src[row + j] = 0.0

    # Where tap (r, s) starts within a (image, channel)'s block of phase planes.
    tap_start = np.empty(R * S, dtype=np.int64)
    for r in range(R):
        for s in range(S):
            phase = ((r * dil_h) % stride_h) * stride_w + (s * dil_w) % stride_w
            tap_start[r * S + s] = phase * plane + ((r * dil_h) // stride_h) * plane_w + (s * dil_w) // stride_w

    w_rows = w.reshape(K, rows)
    y_flat = y.reshape(y.size)
    grid = out_h * plane_w
    ntiles = (grid + tile - 1) // tile
    for task in prange(N * groups * ntiles):
        n = task // (groups * ntiles)
        gi = (task // ntiles) % groups
        j0 = (task % ntiles) * tile
        nj = min(tile, grid - j0)
        b_off = np.empty(rows, dtype=np.int64)
        for c in range(Cg):
            channel_start = (n * C + gi * Cg + c) * phases * plane + j0
            for tap in range(R * S):
                b_off[c * R * S + tap] = channel_start + tap_start[tap]
        acc = np.zeros((Kg, nj), dtype=y.dtype)
        gemm_acc(w_rows, gi * Kg, 0, Kg, rows, src, b_off, acc)
        if has_bias:
            for k in range(Kg):
                for t in range(nj):
                    acc[k, t] += bias[gi * Kg + k]
        t = 0
        while t < nj:  # one segment per grid row; its columns past out_w are dropped
            oh = (j0 + t) // plane_w
            ow = (j0 + t) % plane_w
            seg = min(nj - t, plane_w - ow)
            if ow < out_w:
                valid = min(seg, out_w - ow)
                for k in range(Kg):
                    _copy_row(acc[k], t, y_flat, ((n * K + gi * Kg + k) * out_h + oh) * out_w + ow, valid)
            t += seg


@njit(parallel=True, cache=True, nogil=True)
def conv_backward_data(gy, w, bias, gx, stride_h, stride_w, groups, ntap_h, off_h, tap_h, ntap_w, off_w, tap_w,
                       pad_top, pad_left, plane_h, plane_w, tile):
    """gx = conv^T(gy, w) (+ bias per channel of gx), phase by phase of gx.

    Phase (ah, aw) pixel (u, v) takes tap (i, j) from grad_out at (u + off_h[ah, i],
    v + off_w[aw, j]); grad_out is copied into plane_h x plane_w planes at (pad_top, pad_left)
    so that every such read is a constant shift on a grid plane_w wide. Tasks: image x group x
    phase x tiles of the phase's grid.
    """
    N, K, out_h, out_w = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg = w.shape[1]
    Kg = K // groups
    phases = stride_h * stride_w
    has_bias = bias.size > 0
    packed = _pack_phase_weights(w, groups, stride_w, ntap_h, tap_h, ntap_w, tap_w)

    plane = plane_h * plane_w
    gy_planes = gy.reshape(N * K, out_h, out_w)
    src = np.empty(N * K * plane, dtype=gy.dtype)
    for pk in prange(N * K):
        for i in range(plane_h):
            oh = i - pad_top
            row = pk * plane + i * plane_w
            if 0 <= oh < out_h:
                for j in range(plane_w):
                    ow = j - pad_left
                    src[row + j] = gy_planes[pk, oh, ow] if 0 <= ow < out_w else 0.0
            else:
                for j in range(plane_w):
                    src[row + j] = 0.0

    gx_flat = gx.reshape(gx.size)
    max_grid = ((H + stride_h - 1) // stride_h) * plane_w
    ntiles = (max_grid + tile - 1) // tile
    for task in prange(N * groups * phases * ntiles):
        n = task // (groups * phases * ntiles)
        gi = (task // (phases * ntiles)) % groups
        phase = (task // ntiles) % phases
        ah = phase // stride_w
        aw = phase % stride_w
        rows_here = (H - ah + stride_h - 1) // stride_h if ah < H else 0
        cols_here = (W - aw + stride_w - 1) // stride_w if aw < W else 0
        j0 = (task % ntiles) * tile
        if j0 < rows_here * plane_w and cols_here > 0:
            nj = min(tile, rows_here * plane_w - j0)
            th = ntap_h[ah]
            tw = ntap_w[aw]
            kd = Kg * th * tw
            b_off = np.empty(kd, dtype=np.int64)
            for k in range(Kg):
                channel_start = (n * K + gi * Kg + k) * plane + pad_top * plane_w + pad_left + j0
                for i in range(th):
                    for j in range(tw):
                        b_off[(k * th + i) * tw + j] = channel_start + off_h[ah, i] * plane_w + off_w[aw, j]
            acc = np.zeros((Cg, nj), dtype=gx.dtype)
            gemm_acc(packed[phase], gi * Cg, 0, Cg, kd, src, b_off, acc)
            if has_bias:
                for c in range(Cg):
                    for t in range(nj):
                        acc[c, t] += bias[gi * Cg + c]
            t = 0
            while t < nj:  # one segment per grid row; its columns past cols_here are dropped
                u = (j0 + t) // plane_w
                v = (j0 + t) % plane_w
                seg = min(nj - t, plane_w - v)
                if v < cols_here:
                    valid = min(seg, cols_here - v)
                    for c in range(Cg):
                        dst0 = ((n * C + gi * Cg + c) * H + ah + u * stride_h) * W + aw + v * stride_w
                        _copy_row_strided(acc[c], t, gx_flat, dst0, stride_w, valid)
                t += seg
