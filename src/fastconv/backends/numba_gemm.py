"""The Numba inner kernels: gemm_acc (C += A @ B, B's rows along the output pixels) and
gemm_nt_acc (C += A @ B^T, both operands along the reduced pixels; backward-weight).

Numba has no BLAS without SciPy, so every conv kernel reduces to these two register-blocked
loops (STYLE: one micro-kernel, loops around it). gemm_acc is blocked 4 rows x 4 terms: each step loads a
4 x 4 block of A as 16 scalars and streams 4 rows of B: every C element read and written in
the vectorised t loop takes 4 multiply-adds, which moves the loop from store-bound (a plain
axpy, ~40 GFLOP/s float32 on one Zen 4 core) to FMA-bound (~85 GFLOP/s; OpenBLAS: ~95).

Rules that keep LLVM vectorising the t loop (measured, 4-8x each):
- C is a scratch tile that starts at column 0 and B is read through uint64 indices: a signed
  column offset inside the loop makes Numba emit its negative-index wraparound select per
  element, and a sliced ('A' layout) view hides the unit stride.
- Row remainders (m mod 4 = 3, 2, 1) get their own blocks, not a row at a time: with the
  1-3 output channels of an image-producing layer they are the whole problem, and each
  block streams B once for all its rows.
- fastmath is only 'contract' (fused multiply-add): no reassociation, so NaN and inf follow
  IEEE and the summation order is fixed by (m, kd) alone, never by the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows4(A, ra, a_col0, kd, B, b_off, C, i0):
    """C[i0 : i0 + 4, :] += A[ra : ra + 4, a_col0 : a_col0 + kd] @ B-rows[:kd]."""
    n = np.uint64(C.shape[1])
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        a20 = A[ra + 2, c0]
        a21 = A[ra + 2, c0 + 1]
        a22 = A[ra + 2, c0 + 2]
        a23 = A[ra + 2, c0 + 3]
        a30 = A[ra + 3, c0]
        a31 = A[ra + 3, c0 + 1]
        a32 = A[ra + 3, c0 + 2]
        a33 = A[ra + 3, c0 + 3]
        o0 = np.uint64(b_off[p + 0])
        o1 = np.uint64(b_off[p + 1])
        o2 = np.uint64(b_off[p + 2])
        o3 = np.uint64(b_off[p + 3])
        for t in range(n):
            b0 = B[o0 + t]
            b1 = B[o1 + t]
            b2 = B[o2 + t]
            b3 = B[o3 + t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
            C[i0 + 2, t] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
            C[i0 + 3, t] += a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        a2 = A[ra + 2, a_col0 + p]
        a3 = A[ra + 3, a_col0 + p]
        o = np.uint64(b_off[p])
        for t in range(n):
            b = B[o + t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b
            C[i0 + 2, t] += a2 * b
            C[i0 + 3, t] += a3 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows3(A, ra, a_col0, kd, B, b_off, C, i0):
    """C[i0 : i0 + 3, :] += A[ra : ra + 3, a_col0 : a_col0 + kd] @ B-rows[:kd]."""
    n = np.uint64(C.shape[1])
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        a20 = A[ra + 2, c0]
        a21 = A[ra + 2, c0 + 1]
        a22 = A[ra + 2, c0 + 2]
        a23 = A[ra + 2, c0 + 3]
        o0 = np.uint64(b_off[p + 0])
        o1 = np.uint64(b_off[p + 1])
        o2 = np.uint64(b_off[p + 2])
        o3 = np.uint64(b_off[p + 3])
        for t in range(n):
            b0 = B[o0 + t]
            b1 = B[o1 + t]
            b2 = B[o2 + t]
            b3 = B[o3 + t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
            C[i0 + 2, t] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        a2 = A[ra + 2, a_col0 + p]
        o = np.uint64(b_off[p])
        for t in range(n):
            b = B[o + t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b
            C[i0 + 2, t] += a2 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows2(A, ra, a_col0, kd, B, b_off, C, i0):
    """C[i0 : i0 + 2, :] += A[ra : ra + 2, a_col0 : a_col0 + kd] @ B-rows[:kd]."""
    n = np.uint64(C.shape[1])
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        o0 = np.uint64(b_off[p + 0])
        o1 = np.uint64(b_off[p + 1])
        o2 = np.uint64(b_off[p + 2])
        o3 = np.uint64(b_off[p + 3])
        for t in range(n):
            b0 = B[o0 + t]
            b1 = B[o1 + t]
            b2 = B[o2 + t]
            b3 = B[o3 + t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        o = np.uint64(b_off[p])
        for t in range(n):
            b = B[o + t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows1(A, ra, a_col0, kd, B, b_off, C, i0):
    """C[i0 : i0 + 1, :] += A[ra : ra + 1, a_col0 : a_col0 + kd] @ B-rows[:kd]."""
    n = np.uint64(C.shape[1])
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        o0 = np.uint64(b_off[p + 0])
        o1 = np.uint64(b_off[p + 1])
        o2 = np.uint64(b_off[p + 2])
        o3 = np.uint64(b_off[p + 3])
        for t in range(n):
            b0 = B[o0 + t]
            b1 = B[o1 + t]
            b2 = B[o2 + t]
            b3 = B[o3 + t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        o = np.uint64(b_off[p])
        for t in range(n):
            b = B[o + t]
            C[i0, t] += a0 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows3x8(A, ra, a_col0, kd, B, b_off, C, i0):
    """C[i0 : i0 + 3, :] += A[ra : ra + 3, a_col0 : a_col0 + kd] @ B-rows[:kd], 8 terms a step."""
    n = np.uint64(C.shape[1])
    kd8 = kd - kd % 8
    for p in range(0, kd8, 8):
        c0 = a_col0 + p
        a00 = A[ra, c0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a04 = A[ra, c0 + 4]
        a05 = A[ra, c0 + 5]
        a06 = A[ra, c0 + 6]
        a07 = A[ra, c0 + 7]
        a10 = A[ra + 1, c0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        a14 = A[ra + 1, c0 + 4]
        a15 = A[ra + 1, c0 + 5]
        a16 = A[ra + 1, c0 + 6]
        a17 = A[ra + 1, c0 + 7]
        a20 = A[ra + 2, c0]
        a21 = A[ra + 2, c0 + 1]
        a22 = A[ra + 2, c0 + 2]
        a23 = A[ra + 2, c0 + 3]
        a24 = A[ra + 2, c0 + 4]
        a25 = A[ra + 2, c0 + 5]
        a26 = A[ra + 2, c0 + 6]
        a27 = A[ra + 2, c0 + 7]
        o0 = np.uint64(b_off[p + 0])
        o1 = np.uint64(b_off[p + 1])
        o2 = np.uint64(b_off[p + 2])
        o3 = np.uint64(b_off[p + 3])
        o4 = np.uint64(b_off[p + 4])
        o5 = np.uint64(b_off[p + 5])
        o6 = np.uint64(b_off[p + 6])
        o7 = np.uint64(b_off[p + 7])
        for t in range(n):
            b0 = B[o0 + t]
            b1 = B[o1 + t]
            b2 = B[o2 + t]
            b3 = B[o3 + t]
            b4 = B[o4 + t]
            b5 = B[o5 + t]
            b6 = B[o6 + t]
            b7 = B[o7 + t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3 + a04 * b4 + a05 * b5 + a06 * b6 + a07 * b7
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3 + a14 * b4 + a15 * b5 + a16 * b6 + a17 * b7
            C[i0 + 2, t] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3 + a24 * b4 + a25 * b5 + a26 * b6 + a27 * b7
    for p in range(kd8, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        a2 = A[ra + 2, a_col0 + p]
        o = np.uint64(b_off[p])
        for t in range(n):
            b = B[o + t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b
            C[i0 + 2, t] += a2 * b


@njit(cache=True, nogil=True)
def gemm_acc(A, a_row0, a_col0, m, kd, B, b_off, C):
    """C[i, t] += sum_p A[a_row0 + i, a_col0 + p] * B[b_off[p] + t] for i < m, p < kd, t < C.shape[1].

    float32 runs in blocks of 3 rows x 8 terms, float64 in 4 x 4 (see _rows3x8's caller).
    A and C are 2-D C-contiguous; B is 1-D and row p of the right-hand operand is the window
    B[b_off[p] : b_off[p] + C.shape[1]]: a packed tile (b_off[p] = p * ldb), or windows
    straight into padded planes (numba_conv_shifted.py), at the same speed. The caller
    guarantees every window lies inside B: the loads are unchecked. The order of the terms of
    each sum depends on (m, kd) only.
    """
    if A.itemsize == 4:
        # float32: 3 rows x 8 terms (+13-17 % over 4 x 4: 8 multiply-adds per C load and
        # store); float64 gains nothing from it (measured), so it keeps 4 x 4.
        m3 = m - m % 3
        for i0 in range(0, m3, 3):
            _rows3x8(A, a_row0 + i0, a_col0, kd, B, b_off, C, i0)
        if m - m3 == 2:
            _rows2(A, a_row0 + m3, a_col0, kd, B, b_off, C, m3)
        elif m - m3 == 1:
            _rows1(A, a_row0 + m3, a_col0, kd, B, b_off, C, m3)
        return
    m4 = m - m % 4
    for i0 in range(0, m4, 4):
        _rows4(A, a_row0 + i0, a_col0, kd, B, b_off, C, i0)
    rest = m - m4
    if rest == 3:
        _rows3(A, a_row0 + m4, a_col0, kd, B, b_off, C, m4)
    elif rest == 2:
        _rows2(A, a_row0 + m4, a_col0, kd, B, b_off, C, m4)
    elif rest == 1:
        _rows1(A, a_row0 + m4, a_col0, kd, B, b_off, C, m4)


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def gemm_nt_acc(A, a_off, B, C, kd):
    """C[i, j] += sum_{p < kd} A[a_off[i] + p] * B[j, p]: both operands run along p (the "NT" form).

    The backward-weight kernel: row i of A is a window of grad_out (in place, or packed) and
    B a tile of patch rows, both contiguous along the reduced pixels, so neither needs
    transposing. C's sides are multiples of 4 (the caller pads: B with zero rows, a_off with
    any valid window), so there is no remainder code. Each 4 x 4 block of C is 16 running
    sums over p; 'reassoc' lets LLVM split each sum over the vector lanes (added up at the
    end), so the p loop runs 8 loads per 16 multiply-adds: ~100 GFLOP/s float32, ~50 float64
    on one Zen 4 core. The order of the terms depends on kd and the compiled vector width
    only, the same on every call whatever the thread count or the block. No 'nnan'/'ninf':
    NaN and inf propagate. A's windows are read unchecked (uint64 indices).
    """
    m, n = C.shape
    zero = np.zeros(1, dtype=C.dtype)[0]
    for i0 in range(0, m, 4):
        r0 = np.uint64(a_off[i0])
        r1 = np.uint64(a_off[i0 + 1])
        r2 = np.uint64(a_off[i0 + 2])
        r3 = np.uint64(a_off[i0 + 3])
        for j0 in range(0, n, 4):
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for p in range(kd):
                up = np.uint64(p)
                a0 = A[r0 + up]
                a1 = A[r1 + up]
                a2 = A[r2 + up]
                a3 = A[r3 + up]
                b0 = B[j0, p]
                b1 = B[j0 + 1, p]
                b2 = B[j0 + 2, p]
                b3 = B[j0 + 3, p]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
                s20 += a2 * b0
                s21 += a2 * b1
                s22 += a2 * b2
                s23 += a2 * b3
                s30 += a3 * b0
                s31 += a3 * b1
                s32 += a3 * b2
                s33 += a3 * b3
            C[i0, j0] += s00
            C[i0, j0 + 1] += s01
            C[i0, j0 + 2] += s02
            C[i0, j0 + 3] += s03
            C[i0 + 1, j0] += s10
            C[i0 + 1, j0 + 1] += s11
            C[i0 + 1, j0 + 2] += s12
            C[i0 + 1, j0 + 3] += s13
            C[i0 + 2, j0] += s20
            C[i0 + 2, j0 + 1] += s21
            C[i0 + 2, j0 + 2] += s22
            C[i0 + 2, j0 + 3] += s23
            C[i0 + 3, j0] += s30
            C[i0 + 3, j0 + 1] += s31
            C[i0 + 3, j0 + 2] += s32
            C[i0 + 3, j0 + 3] += s33
