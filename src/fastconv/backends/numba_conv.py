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
Backward-weight reduces along pixels, with numba_gemm.gemm_nt_acc.

Scratch tiles are allocated per task inside the prange body (one malloc per tile of work,
negligible next to the tile's multiply-adds), so concurrent calls share nothing.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_gemm import gemm_acc, gemm_nt_acc


# Below this grid width a tile row is made of many short segments, and the per-segment
# bookkeeping costs more than a per-column index map (a 3x3 output: 3-pixel segments).
_SHORT_SEGMENT = 16


@njit(cache=True, nogil=True)
def _gather_rows(src, plane0, img_planes, grid_h, grid_w, nh, nw, offs_h, offs_w, step_h, step_w,
                 row0, nrows, q0, nq, out):
    """Rows [row0, row0 + nrows) and columns [q0, q0 + nq) of a patch matrix, into out[:nrows, :nq].

    Columns run over the pixels of a grid_h x grid_w output grid, image after image: column q
    is pixel (qh, qw) = divmod(q mod (grid_h * grid_w), grid_w) of image q // (grid_h * grid_w),
    so a tile may span several small images. Patch row (c, i, j) holds, for column q,
    src[plane0 + image * img_planes + c, qh * step_h + offs_h[i], qw * step_w + offs_w[j]], and 0
    outside the plane.
    """
    if grid_w < _SHORT_SEGMENT:
        _gather_rows_indexed(src, plane0, img_planes, grid_h, grid_w, nh, nw, offs_h, offs_w, step_h, step_w,
                             row0, nrows, q0, nq, out)
    else:
        _gather_rows_segments(src, plane0, img_planes, grid_h, grid_w, nh, nw, offs_h, offs_w, step_h, step_w,
                              row0, nrows, q0, nq, out)


@njit(cache=True, nogil=True)
def _gather_rows_segments(src, plane0, img_planes, grid_h, grid_w, nh, nw, offs_h, offs_w, step_h, step_w,
                          row0, nrows, q0, nq, out):
    """_gather_rows for wide grids: the tile's columns fall into segments, one per grid row;
    where each tap's segment starts and which part of it lies inside the plane are worked out
    once per tile, so the row loop is bare copies (4.4 G elements/s at stride 1 against 0.7
    with the arithmetic inline). The copies index with uint64 so that Numba emits no
    negative-index check and LLVM vectorises them."""
    Hs, Ws = src.shape[1], src.shape[2]
    plane_size = Hs * Ws
    flat_src = src.reshape(src.size)
    flat_out = out.reshape(out.size)
    taps = nh * nw
    max_segments = nq // grid_w + 2
    seg_start = np.empty(max_segments + 1, dtype=np.int64)  # first tile column of each segment
    # Per (tap, segment): flat source offset of u = 0 (plane plane0 of the image, channel 0
    # added per row) and [lo, hi), the u of the segment that fall inside the plane.
    seg_src = np.zeros((taps, max_segments), dtype=np.int64)
    seg_lo = np.zeros((taps, max_segments), dtype=np.int64)
    seg_hi = np.zeros((taps, max_segments), dtype=np.int64)
    nseg = 0
    grid_row = q0 // grid_w  # counts grid rows over all images
    qw = q0 % grid_w
    t = 0
    while t < nq:
        seg = min(nq - t, grid_w - qw)
        image_src = (plane0 + (grid_row // grid_h) * img_planes) * plane_size
        qh = grid_row % grid_h
        for tap in range(taps):
            ih = qh * step_h + offs_h[tap // nw]
            a = qw * step_w + offs_w[tap % nw]
            if 0 <= ih < Hs:
                lo = 0 if a >= 0 else (-a + step_w - 1) // step_w
                hi = min((Ws - a + step_w - 1) // step_w, seg) if a < Ws else 0
                seg_lo[tap, nseg] = min(lo, hi)
                seg_hi[tap, nseg] = hi
                seg_src[tap, nseg] = image_src + ih * Ws + a
        seg_start[nseg] = t
        nseg += 1
        t += seg
        grid_row += 1
        qw = 0
    seg_start[nseg] = nq

    step = np.uint64(step_w)
    for r in range(nrows):
        row = row0 + r
        tap = row % taps
        channel_src = (row // taps) * plane_size
        row_dst = np.uint64(r) * np.uint64(out.shape[1])
        for si in range(nseg):
            t0 = seg_start[si]
            t1 = seg_start[si + 1]
            lo = seg_lo[tap, si]
            hi = seg_hi[tap, si]
            for t in range(t0, t0 + lo):
                out[r, t] = 0.0
            src0 = np.uint64(seg_src[tap, si] + channel_src)
            dst0 = row_dst + np.uint64(t0)
            for u in range(np.uint64(lo), np.uint64(hi)):
                flat_out[dst0 + u] = flat_src[src0 + u * step]
            for t in range(t0 + hi, t1):
                out[r, t] = 0.0


@njit(cache=True, nogil=True)
def _gather_rows_indexed(src, plane0, img_planes, grid_h, grid_w, nh, nw, offs_h, offs_w, step_h, step_w,
                         row0, nrows, q0, nq, out):
    """_gather_rows for narrow grids: per (tap, column) the flat source offset, or -1 in the
    padding, worked out once per tile; each row is then one pass over its columns."""
    Hs, Ws = src.shape[1], src.shape[2]
    plane_size = Hs * Ws
    flat_src = src.reshape(src.size)
    taps = nh * nw
    index = np.empty((taps, nq), dtype=np.int64)
    grid_size = grid_h * grid_w
    for t in range(nq):
        q = q0 + t
        image_src = (plane0 + (q // grid_size) * img_planes) * plane_size
        qh = (q % grid_size) // grid_w
        qw = q % grid_w
        for tap in range(taps):
            ih = qh * step_h + offs_h[tap // nw]
            iw = qw * step_w + offs_w[tap % nw]
            index[tap, t] = image_src + ih * Ws + iw if (0 <= ih < Hs and 0 <= iw < Ws) else -1
    for r in range(nrows):
        row = row0 + r
        tap = row % taps
        channel_src = (row // taps) * plane_size
        for t in range(nq):
            at = index[tap, t]
            out[r, t] = flat_src[at + channel_src] if at >= 0 else 0.0


@njit(cache=True, nogil=True)
def _row_offsets(rows, row_length):
    """gemm_acc's b_off for a packed (rows, row_length) tile."""
    offsets = np.empty(rows, dtype=np.int64)
    for p in range(rows):
        offsets[p] = p * row_length
    return offsets


@njit(cache=True, nogil=True)
def _copy_row(src, src0, dst, dst0, n):
    """dst[dst0 : dst0 + n] = src[src0 : src0 + n] for 1-D arrays, vectorised (uint64 indices)."""
    s0 = np.uint64(src0)
    d0 = np.uint64(dst0)
    for u in range(np.uint64(n)):
        dst[d0 + u] = src[s0 + u]


@njit(cache=True, nogil=True)
def _copy_row_strided(src, src0, dst, dst0, dst_step, n):
    """dst[dst0 + u * dst_step] = src[src0 + u] for u < n, 1-D arrays, uint64 indices."""
    s0 = np.uint64(src0)
    d0 = np.uint64(dst0)
    step = np.uint64(dst_step)
    for u in range(np.uint64(n)):
        dst[d0 + u * step] = src[s0 + u]


@njit(parallel=True, cache=True, nogil=True)
def conv_forward(x, w, bias, y, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, tile, chunk):
    """y = conv(x, w) (+ bias when bias.size > 0).

    Tasks: group x tiles of the (image, output pixel) axis: a tile spans several images when
    they are small, which keeps the gemm's vector loop long (a 3x3 output is 9 pixels). The
    patch rows are gathered and multiplied `chunk` rows at a time, so that a long reduction
    (C * R * S of 1000 and more) does not force narrow tiles to keep the patch tile in L2.
    """
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    out_h, out_w = y.shape[2], y.shape[3]
    Kg = K // groups
    rows = Cg * R * S
    pixels = out_h * out_w
    has_bias = bias.size > 0
    offs_h = np.empty(R, dtype=np.int64)
    offs_w = np.empty(S, dtype=np.int64)
    for r in range(R):
        offs_h[r] = r * dil_h - pad_h
    for s in range(S):
        offs_w[s] = s * dil_w - pad_w
    x_planes = x.reshape(N * C, H, W)
    w_rows = w.reshape(K, rows)
    y_flat = y.reshape(y.size)
    ntiles = (N * pixels + tile - 1) // tile
    for task in prange(groups * ntiles):
        gi = task // ntiles
        q0 = (task % ntiles) * tile
        nq = min(tile, N * pixels - q0)
        patches = np.empty((min(chunk, rows), nq), dtype=x.dtype)
        patch_rows = _row_offsets(patches.shape[0], nq)
        acc = np.zeros((Kg, nq), dtype=y.dtype)
        for r0 in range(0, rows, chunk):
            nr = min(chunk, rows - r0)
            _gather_rows(x_planes, gi * Cg, C, out_h, out_w, R, S, offs_h, offs_w, stride_h, stride_w,
                         r0, nr, q0, nq, patches)
            gemm_acc(w_rows, gi * Kg, r0, Kg, nr, patches.reshape(patches.size), patch_rows, acc)
        if has_bias:
            for k in range(Kg):
                for t in range(nq):
                    acc[k, t] += bias[gi * Kg + k]
        t = 0
        while t < nq:  # one segment per image
            image = (q0 + t) // pixels
            p = (q0 + t) % pixels
            seg = min(nq - t, pixels - p)
            for k in range(Kg):
                _copy_row(acc[k], t, y_flat, ((image * K + gi * Kg + k) * pixels + p), seg)
            t += seg


@njit(cache=True, nogil=True)
def _pack_phase_weights(w, groups, stride_w, ntap_h, tap_h, ntap_w, tap_w):
    """Backward-data's left operand per phase of gx: packed[phase, c, (k * Th + i) * Tw + j] =
    w[group(c) * Kg + k, c mod Cg, tap_h[ah, i], tap_w[aw, j]], zero past the phase's taps.
    One pass over the weights, serial: it is the size of the weights, not of the data."""
    K, Cg = w.shape[0], w.shape[1]
    C = Cg * groups
    Kg = K // groups
    phases = ntap_h.size * stride_w
    packed = np.zeros((phases, C, Kg * ntap_h.max() * ntap_w.max()), dtype=w.dtype)
    for phase in range(phases):
        ah = phase // stride_w
        aw = phase % stride_w
        th = ntap_h[ah]
        tw = ntap_w[aw]
        for cc in range(C):
            gi = cc // Cg
            c = cc % Cg
            for k in range(Kg):
                for i in range(th):
                    for j in range(tw):
                        packed[phase, cc, (k * th + i) * tw + j] = w[gi * Kg + k, c, tap_h[ah, i], tap_w[aw, j]]
    return packed


@njit(parallel=True, cache=True, nogil=True)
def conv_backward_data(gy, w, bias, gx, stride_h, stride_w, groups, ntap_h, off_h, tap_h, ntap_w, off_w, tap_w,
                       tile, chunk):
    """gx = conv^T(gy, w) (+ bias per channel of gx), without zero insertion.

    gx's pixels split into stride_h x stride_w phases by (ih mod sh, iw mod sw). Within phase
    (ah, aw) only the ntap_h[ah] x ntap_w[aw] taps (tap_h[ah, i], tap_w[aw, j]) reach a pixel,
    reading grad_out at (u + off_h[ah, i], v + off_w[aw, j]) for phase pixel (u, v): a dense
    stride-1 correlation with a sub-kernel (the sub-pixel decomposition of csrc/conv.cpp).
    Tasks: group x phase x tiles of the (image, phase pixel) axis; rows `chunk` at a time.
    """
    N, K, out_h, out_w = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    phases = stride_h * stride_w
    has_bias = bias.size > 0
    packed = _pack_phase_weights(w, groups, stride_w, ntap_h, tap_h, ntap_w, tap_w)

    gy_planes = gy.reshape(N * K, out_h, out_w)
    gx_flat = gx.reshape(gx.size)
    max_pixels = N * ((H + stride_h - 1) // stride_h) * ((W + stride_w - 1) // stride_w)
    ntiles = (max_pixels + tile - 1) // tile
    for task in prange(groups * phases * ntiles):
        gi = task // (phases * ntiles)
        phase = (task // ntiles) % phases
        ah = phase // stride_w
        aw = phase % stride_w
        rows_here = (H - ah + stride_h - 1) // stride_h if ah < H else 0
        cols_here = (W - aw + stride_w - 1) // stride_w if aw < W else 0
        pixels = rows_here * cols_here  # per image
        q0 = (task % ntiles) * tile
        if q0 < N * pixels:
            nq = min(tile, N * pixels - q0)
            th = ntap_h[ah]
            tw = ntap_w[aw]
            kd = Kg * th * tw
            patches = np.empty((min(chunk, kd), nq), dtype=gy.dtype)
            patch_rows = _row_offsets(patches.shape[0], nq)
            acc = np.zeros((Cg, nq), dtype=gx.dtype)
            for r0 in range(0, kd, chunk):
                nr = min(chunk, kd - r0)
                _gather_rows(gy_planes, gi * Kg, K, rows_here, cols_here, th, tw, off_h[ah], off_w[aw], 1, 1,
                             r0, nr, q0, nq, patches)
                gemm_acc(packed[phase], gi * Cg, r0, Cg, nr, patches.reshape(patches.size), patch_rows, acc)
            if has_bias:
                for c in range(Cg):
                    for t in range(nq):
                        acc[c, t] += bias[gi * Cg + c]
            t = 0
            while t < nq:  # one segment per row of the phase grid
                image = (q0 + t) // pixels
                u = ((q0 + t) % pixels) // cols_here
                v = (q0 + t) % cols_here
                seg = min(nq - t, cols_here - v)
                for c in range(Cg):
                    dst0 = (((image * C + gi * Cg + c) * H + ah + u * stride_h) * W + aw + v * stride_w)
                    _copy_row_strided(acc[c], t, gx_flat, dst0, stride_w, seg)
                t += seg


@njit(parallel=True, cache=True, nogil=True)
def conv_backward_weight(gy, x, gw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, row_block, k_block,
                         tile):
    """gw[k, (c, r, s)] = sum over images n and output pixels p of gy[n, k, p] * patch[(c, r, s), p].

    Tasks own disjoint blocks of gw (group x block of patch rows x block of k) and each
    reduces over the whole batch in a fixed order: no partial sums to merge, no atomics.
    Per tile of pixels a task gathers its patch rows, and gemm_nt_acc reduces over the tile
    with grad_out's rows read in place. Tiles of images smaller than a tile span several
    images, and then grad_out's rows are packed first. The blocks do not change any sum
    (each runs over all tiles in order), so the caller may size them by the thread count;
    the tile fixes the summation order and depends on the shape alone.
    """
    N, C, H, W = x.shape
    K, Cg, R, S = gw.shape
    out_h, out_w = gy.shape[2], gy.shape[3]
    Kg = K // groups
    rows = Cg * R * S
    pixels = out_h * out_w
    offs_h = np.empty(R, dtype=np.int64)
    offs_w = np.empty(S, dtype=np.int64)
    for r in range(R):
        offs_h[r] = r * dil_h - pad_h
    for s in range(S):
        offs_w[s] = s * dil_w - pad_w
    x_planes = x.reshape(N * C, H, W)
    gy_flat = gy.reshape(gy.size)
    gw_rows = gw.reshape(K, rows)
    nrb = (rows + row_block - 1) // row_block
    nkb = (Kg + k_block - 1) // k_block
    in_place = pixels >= tile
    tiles_per_image = (pixels + tile - 1) // tile
    ntiles = N * tiles_per_image if in_place else (N * pixels + tile - 1) // tile
    for task in prange(groups * nrb * nkb):
        gi = task // (nrb * nkb)
        rb = (task // nkb) % nrb
        kb = task % nkb
        row0 = rb * row_block
        nrows = min(row_block, rows - row0)
        k0 = kb * k_block
        nk = min(k_block, Kg - k0)
        # Sides padded to multiples of 4: B with zero rows (never written), A's extra rows
        # repeat its last one; the padding's sums are dropped.
        acc = np.zeros(((nk + 3) // 4 * 4, (nrows + 3) // 4 * 4), dtype=gw.dtype)
        patches = np.zeros((acc.shape[1], tile), dtype=x.dtype)
        a_off = np.empty(acc.shape[0], dtype=np.int64)
        gy_tile = np.empty((0 if in_place else acc.shape[0]) * tile, dtype=gy.dtype)
        if not in_place:
            for k in range(acc.shape[0]):
                a_off[k] = min(k, nk - 1) * tile
        for qt in range(ntiles):
            if in_place:
                image = qt // tiles_per_image
                p0 = (qt % tiles_per_image) * tile
                q0 = image * pixels + p0
                nq = min(tile, pixels - p0)
            else:
                q0 = qt * tile
                nq = min(tile, N * pixels - q0)
            _gather_rows(x_planes, gi * Cg, C, out_h, out_w, R, S, offs_h, offs_w, stride_h, stride_w,
                         row0, nrows, q0, nq, patches)
            if in_place:
                for k in range(acc.shape[0]):
                    a_off[k] = (image * K + gi * Kg + k0 + min(k, nk - 1)) * pixels + p0
                gemm_nt_acc(gy_flat, a_off, patches, acc, nq)
            else:
                t = 0
                while t < nq:  # one segment per image
                    image = (q0 + t) // pixels
                    p = (q0 + t) % pixels
                    seg = min(nq - t, pixels - p)
                    for k in range(nk):
                        _copy_row(gy_flat, (image * K + gi * Kg + k0 + k) * pixels + p, gy_tile, k * tile + t, seg)
                    t += seg
                gemm_nt_acc(gy_tile, a_off, patches, acc, nq)
        for k in range(nk):
            for r in range(nrows):
                gw_rows[gi * Kg + k0 + k, row0 + r] = acc[k, r]
