"""Numba convolution kernels: forward, backward-data (= transposed-conv forward), backward-weight.

Each kernel is tiled implicit GEMM, the same decomposition as csrc/conv.cpp: gather one tile
of the patch matrix ("im2col" for a tile of output pixels only), multiply it with
numba_gemm.gemm_acc into a scratch tile, write the tile out.

Parallel axis: a fixed task list that depends only on the shape and the tile sizes the
caller (numba.py) derives from the shape, never on the thread count. Each output element is
computed by exactly one task in a fixed summation order, so results are bit-identical for
any number of threads. Tasks are (batch x group x pixel tile) for the forward and
backward-data, so both cores work at batch 1 too, and blocks of the weight gradient for
backward-weight, each reducing over the whole batch itself: no partial sums, no atomics.

Scratch tiles are allocated per task inside the prange body (one malloc per tile of work,
negligible next to the tile's multiply-adds), so concurrent calls share nothing.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_gemm import gemm_acc


@njit(cache=True, nogil=True)
def _gather_rows(src, plane0, nh, nw, offs_h, offs_w, step_h, step_w, grid_w, row0, nrows, q0, nq, out,
                 transposed):
    """Rows [row0, row0 + nrows) of one tile of a patch matrix (columns q0 .. q0 + nq - 1).

    Patch row (c, i, j) holds, for pixel q of a grid grid_w wide (qh, qw = divmod(q, grid_w)),
    src[plane0 + c, qh * step_h + offs_h[i], qw * step_w + offs_w[j]], 0 outside the plane.
    Written to out[row - row0, q - q0], or out[q - q0, row - row0] when transposed.
    """
    Hs, Ws = src.shape[1], src.shape[2]
    taps = nh * nw
    for r in range(nrows):
        row = row0 + r
        c = row // taps
        i = (row % taps) // nw
        j = row % nw
        plane = plane0 + c
        qh = q0 // grid_w
        qw = q0 % grid_w
        t = 0
        while t < nq:
            seg = min(nq - t, grid_w - qw)
            ih = qh * step_h + offs_h[i]
            a = qw * step_w + offs_w[j]
            if ih < 0 or ih >= Hs:
                lo = 0
                hi = 0
            else:
                # [lo, hi): the u with 0 <= a + u * step_w < Ws
                lo = 0 if a >= 0 else (-a + step_w - 1) // step_w
                hi = (Ws - a + step_w - 1) // step_w if a < Ws else 0
                hi = min(hi, seg)
                lo = min(lo, hi)
            if transposed:
                for u in range(lo):
                    out[t + u, r] = 0.0
                for u in range(lo, hi):
                    out[t + u, r] = src[plane, ih, a + u * step_w]
                for u in range(hi, seg):
                    out[t + u, r] = 0.0
            else:
                for u in range(lo):
                    out[r, t + u] = 0.0
                for u in range(lo, hi):
                    out[r, t + u] = src[plane, ih, a + u * step_w]
                for u in range(hi, seg):
                    out[r, t + u] = 0.0
            t += seg
            qh += 1
            qw = 0


@njit(parallel=True, cache=True, nogil=True)
def conv_forward(x, w, bias, y, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, tile):
    """y = conv(x, w) (+ bias when bias.size > 0). Tasks: batch x group x tiles of output pixels."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    out_h, out_w = y.shape[2], y.shape[3]
    Kg = K // groups
    rows = Cg * R * S
    pixels = out_h * out_w
    has_bias = bias.size > 0
    offs_h = np.arange(R) * dil_h - pad_h
    offs_w = np.arange(S) * dil_w - pad_w
    x_planes = x.reshape(N * C, H, W)
    w_rows = w.reshape(K, rows)
    y_rows = y.reshape(N * K, pixels)
    ntiles = (pixels + tile - 1) // tile
    for task in prange(N * groups * ntiles):
        n = task // (groups * ntiles)
        gi = (task // ntiles) % groups
        p0 = (task % ntiles) * tile
        npix = min(tile, pixels - p0)
        patches = np.empty((rows, npix), dtype=x.dtype)
        _gather_rows(x_planes, n * C + gi * Cg, R, S, offs_h, offs_w, stride_h, stride_w, out_w,
                     0, rows, p0, npix, patches, False)
        acc = np.zeros((Kg, npix), dtype=y.dtype)
        gemm_acc(w_rows, gi * Kg, 0, Kg, rows, patches, acc)
        for k in range(Kg):
            out_row = n * K + gi * Kg + k
            if has_bias:
                b = bias[gi * Kg + k]
                for t in range(npix):
                    y_rows[out_row, p0 + t] = acc[k, t] + b
            else:
                for t in range(npix):
                    y_rows[out_row, p0 + t] = acc[k, t]


@njit(parallel=True, cache=True, nogil=True)
def conv_backward_data(gy, w, bias, gx, stride_h, stride_w, groups, ntap_h, off_h, tap_h, ntap_w, off_w, tap_w,
                       tile):
    """gx = conv^T(gy, w) (+ bias per channel of gx), without zero insertion.

    gx's pixels split into stride_h x stride_w phases by (ih mod sh, iw mod sw). Within phase
    (ah, aw) only the ntap_h[ah] x ntap_w[aw] taps (tap_h[ah, i], tap_w[aw, j]) reach a pixel,
    reading grad_out at (u + off_h[ah, i], v + off_w[aw, j]) for phase pixel (u, v): a dense
    stride-1 correlation with a sub-kernel (the sub-pixel decomposition of csrc/conv.cpp).
    Tasks: batch x group x phase x tiles of phase pixels.
    """
    N, K, out_h, out_w = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    phases = stride_h * stride_w
    has_bias = bias.size > 0
    kd_max = Kg * ntap_h.max() * ntap_w.max()

    # packed[phase, c, (k * Th + i) * Tw + j] = w[group(c) * Kg + k, c mod Cg, tap_h[i], tap_w[j]]
    packed = np.zeros((phases, C, kd_max), dtype=w.dtype)
    for pc in prange(phases * C):
        phase = pc // C
        cc = pc % C
        gi = cc // Cg
        c = cc % Cg
        ah = phase // stride_w
        aw = phase % stride_w
        th = ntap_h[ah]
        tw = ntap_w[aw]
        for k in range(Kg):
            for i in range(th):
                for j in range(tw):
                    packed[phase, cc, (k * th + i) * tw + j] = w[gi * Kg + k, c, tap_h[ah, i], tap_w[aw, j]]

    gy_planes = gy.reshape(N * K, out_h, out_w)
    gx_planes = gx.reshape(N * C, H * W)
    max_pixels = ((H + stride_h - 1) // stride_h) * ((W + stride_w - 1) // stride_w)
    ntiles = (max_pixels + tile - 1) // tile
    for task in prange(N * groups * phases * ntiles):
        n = task // (groups * phases * ntiles)
        gi = (task // (phases * ntiles)) % groups
        phase = (task // ntiles) % phases
        ah = phase // stride_w
        aw = phase % stride_w
        rows_here = (H - ah + stride_h - 1) // stride_h if ah < H else 0
        cols_here = (W - aw + stride_w - 1) // stride_w if aw < W else 0
        q0 = (task % ntiles) * tile
        if q0 < rows_here * cols_here:
            nq = min(tile, rows_here * cols_here - q0)
            th = ntap_h[ah]
            tw = ntap_w[aw]
            kd = Kg * th * tw
            patches = np.empty((kd, nq), dtype=gy.dtype)
            _gather_rows(gy_planes, n * K + gi * Kg, th, tw, off_h[ah], off_w[aw], 1, 1, cols_here,
                         0, kd, q0, nq, patches, False)
            acc = np.zeros((Cg, nq), dtype=gx.dtype)
            gemm_acc(packed[phase], gi * Cg, 0, Cg, kd, patches, acc)
            if has_bias:
                for c in range(Cg):
                    for t in range(nq):
                        acc[c, t] += bias[gi * Cg + c]
            for c in range(Cg):
                plane = n * C + gi * Cg + c
                u = q0 // cols_here
                v = q0 % cols_here
                for t in range(nq):
                    gx_planes[plane, (ah + u * stride_h) * W + aw + v * stride_w] = acc[c, t]
                    v += 1
                    if v == cols_here:
                        v = 0
                        u += 1


@njit(parallel=True, cache=True, nogil=True)
def conv_backward_weight(gy, x, gw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, row_block, k_block,
                         tile):
    """gw[k, (c, r, s)] = sum over n and output pixels p of gy[n, k, p] * patch[(c, r, s), p].

    Tasks own disjoint blocks of gw (group x block of patch rows x block of k) and each
    reduces over the whole batch in a fixed order: no partial sums to merge, no atomics.
    The patch tile is gathered transposed (pixels x rows) so that the reduction runs along
    gemm_acc's kd loop.
    """
    N, C, H, W = x.shape
    K, Cg, R, S = gw.shape
    out_h, out_w = gy.shape[2], gy.shape[3]
    Kg = K // groups
    rows = Cg * R * S
    pixels = out_h * out_w
    offs_h = np.arange(R) * dil_h - pad_h
    offs_w = np.arange(S) * dil_w - pad_w
    x_planes = x.reshape(N * C, H, W)
    gy_rows = gy.reshape(N * K, pixels)
    gw_rows = gw.reshape(K, rows)
    nrb = (rows + row_block - 1) // row_block
    nkb = (Kg + k_block - 1) // k_block
    ntiles = (pixels + tile - 1) // tile
    for task in prange(groups * nrb * nkb):
        gi = task // (nrb * nkb)
        rb = (task // nkb) % nrb
        kb = task % nkb
        row0 = rb * row_block
        nrows = min(row_block, rows - row0)
        k0 = kb * k_block
        nk = min(k_block, Kg - k0)
        acc = np.zeros((nk, nrows), dtype=gw.dtype)
        patches = np.empty((tile, nrows), dtype=x.dtype)
        for n in range(N):
            for pt in range(ntiles):
                p0 = pt * tile
                npix = min(tile, pixels - p0)
                _gather_rows(x_planes, n * C + gi * Cg, R, S, offs_h, offs_w, stride_h, stride_w, out_w,
                             row0, nrows, p0, npix, patches, True)
                gemm_acc(gy_rows, n * K + gi * Kg + k0, p0, nk, npix, patches, acc)
        for k in range(nk):
            for r in range(nrows):
                gw_rows[gi * Kg + k0 + k, row0 + r] = acc[k, r]
