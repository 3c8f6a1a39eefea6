"""The Numba inner kernel: C[:m, :n] += A[rows, cols] @ B[:kd, :n], blocked 4 rows x 4 terms.

Numba has no BLAS without SciPy, so this is the one register-blocked loop every conv kernel
in numba_conv.py reduces to (STYLE: one micro-kernel, loops around it). Each step loads a
4 x 4 block of A as 16 scalars and streams 4 rows of B: every C element read and written in
the vectorised t loop takes 4 multiply-adds, which moves the loop from store-bound (a plain
axpy, ~40 GFLOP/s float32 on one Zen 4 core) to FMA-bound (~85 GFLOP/s; OpenBLAS: ~95).

Rules that keep LLVM vectorising the t loop (measured, 4-8x each):
- C and B are scratch tiles that start at column 0 and t is a bare range(n) index: a column
  offset inside the loop makes Numba emit its negative-index wraparound select per element,
  and a sliced ('A' layout) view hides the unit stride.
- Row remainders (m mod 4 = 3, 2, 1) get their own blocks, not a row at a time: with the
  1-3 output channels of an image-producing layer they are the whole problem, and each
  block streams B once for all its rows.
- fastmath is only 'contract' (fused multiply-add): no reassociation, so NaN and inf follow
  IEEE and the summation order is fixed by (m, kd) alone, never by the thread count.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows4(A, ra, a_col0, kd, B, C, i0):
    """C[i0 : i0 + 4, :] += A[ra : ra + 4, a_col0 : a_col0 + kd] @ B[:kd, :]."""
    n = C.shape[1]
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0 + 0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0 + 0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        a20 = A[ra + 2, c0 + 0]
        a21 = A[ra + 2, c0 + 1]
        a22 = A[ra + 2, c0 + 2]
        a23 = A[ra + 2, c0 + 3]
        a30 = A[ra + 3, c0 + 0]
        a31 = A[ra + 3, c0 + 1]
        a32 = A[ra + 3, c0 + 2]
        a33 = A[ra + 3, c0 + 3]
        for t in range(n):
            b0 = B[p, t]
            b1 = B[p + 1, t]
            b2 = B[p + 2, t]
            b3 = B[p + 3, t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
            C[i0 + 2, t] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
            C[i0 + 3, t] += a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        a2 = A[ra + 2, a_col0 + p]
        a3 = A[ra + 3, a_col0 + p]
        for t in range(n):
            b = B[p, t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b
            C[i0 + 2, t] += a2 * b
            C[i0 + 3, t] += a3 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows3(A, ra, a_col0, kd, B, C, i0):
    """C[i0 : i0 + 3, :] += A[ra : ra + 3, a_col0 : a_col0 + kd] @ B[:kd, :]."""
    n = C.shape[1]
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0 + 0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0 + 0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        a20 = A[ra + 2, c0 + 0]
        a21 = A[ra + 2, c0 + 1]
        a22 = A[ra + 2, c0 + 2]
        a23 = A[ra + 2, c0 + 3]
        for t in range(n):
            b0 = B[p, t]
            b1 = B[p + 1, t]
            b2 = B[p + 2, t]
            b3 = B[p + 3, t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
            C[i0 + 2, t] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        a2 = A[ra + 2, a_col0 + p]
        for t in range(n):
            b = B[p, t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b
            C[i0 + 2, t] += a2 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows2(A, ra, a_col0, kd, B, C, i0):
    """C[i0 : i0 + 2, :] += A[ra : ra + 2, a_col0 : a_col0 + kd] @ B[:kd, :]."""
    n = C.shape[1]
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0 + 0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        a10 = A[ra + 1, c0 + 0]
        a11 = A[ra + 1, c0 + 1]
        a12 = A[ra + 1, c0 + 2]
        a13 = A[ra + 1, c0 + 3]
        for t in range(n):
            b0 = B[p, t]
            b1 = B[p + 1, t]
            b2 = B[p + 2, t]
            b3 = B[p + 3, t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
            C[i0 + 1, t] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        a1 = A[ra + 1, a_col0 + p]
        for t in range(n):
            b = B[p, t]
            C[i0, t] += a0 * b
            C[i0 + 1, t] += a1 * b


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _rows1(A, ra, a_col0, kd, B, C, i0):
    """C[i0 : i0 + 1, :] += A[ra : ra + 1, a_col0 : a_col0 + kd] @ B[:kd, :]."""
    n = C.shape[1]
    kd4 = kd - kd % 4
    for p in range(0, kd4, 4):
        c0 = a_col0 + p
        a00 = A[ra, c0 + 0]
        a01 = A[ra, c0 + 1]
        a02 = A[ra, c0 + 2]
        a03 = A[ra, c0 + 3]
        for t in range(n):
            b0 = B[p, t]
            b1 = B[p + 1, t]
            b2 = B[p + 2, t]
            b3 = B[p + 3, t]
            C[i0, t] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
    for p in range(kd4, kd):
        a0 = A[ra, a_col0 + p]
        for t in range(n):
            b = B[p, t]
            C[i0, t] += a0 * b


@njit(cache=True, nogil=True)
def gemm_acc(A, a_row0, a_col0, m, kd, B, C):
    """C[i, t] += sum_p A[a_row0 + i, a_col0 + p] * B[p, t] for i < m, p < kd, t < C.shape[1].

    A, B, C are 2-D C-contiguous; B has kd rows of at least C.shape[1] columns. The order of
    the terms of each sum depends on (m, kd) only.
    """
    m4 = m - m % 4
    for i0 in range(0, m4, 4):
        _rows4(A, a_row0 + i0, a_col0, kd, B, C, i0)
    rest = m - m4
    if rest == 3:
        _rows3(A, a_row0 + m4, a_col0, kd, B, C, m4)
    elif rest == 2:
        _rows2(A, a_row0 + m4, a_col0, kd, B, C, m4)
    elif rest == 1:
        _rows1(A, a_row0 + m4, a_col0, kd, B, C, m4)
