// The register-blocked inner kernel: C[MR x NR] (+)= A[MR x kd] * B[kd x NR], and the
// cache-blocked loop around it (BLIS's macro-kernel).
//
// Written with GCC vector extensions, so this one source is the AVX2+FMA kernel when its
// translation unit is compiled with -mavx2 -mfma (two 256-bit accumulators per row, the
// multiply-add contracted to vfmadd231) and a correct SSE2 kernel otherwise. MR = 6 rows x
// two vectors = 12 accumulators + 2 B vectors + 1 broadcast A = 15 of the 16 ymm registers
// (the BLIS haswell sgemm shape: 6x16 for float, 6x8 for double).
//
// Both operands are packed by the caller so the kernel reads them sequentially and has no
// remainder branches: A in MR-row panels ([kd][MR] per panel, rows past m zero-filled) and B
// as rows of a matrix whose width ldb is a multiple of NR (columns past n zero-filled). Only
// the valid m_valid x n_valid corner of C is written; C is never read unless accumulating
// (so it may hold garbage, even NaN, before the first write).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace fastconv {
namespace FC_ISA {

template <class T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int kLanes = 32 / sizeof(T);
};

template <class T>
using VecOf = typename Vec<T>::type;

// The integer vector of Vec<T>'s shape: shuffle indices and lane masks.
template <class T>
struct IntVec;
template <>
struct IntVec<float> {
  typedef int32_t type __attribute__((vector_size(32)));
};
template <>
struct IntVec<double> {
  typedef int64_t type __attribute__((vector_size(32)));
};

// The lanes of a and b interleaved: lo = a0 b0 a1 b1 ..., hi = the upper halves'.
inline void interleave(VecOf<float> a, VecOf<float> b, VecOf<float>& lo, VecOf<float>& hi) {
  lo = __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
  hi = __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
}
inline void interleave(VecOf<double> a, VecOf<double> b, VecOf<double>& lo, VecOf<double>& hi) {
  lo = __builtin_shufflevector(a, b, 0, 4, 1, 5);
  hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
}

// The even / odd lanes of the 2L lanes a, b.
inline VecOf<float> deinterleave_even(VecOf<float> a, VecOf<float> b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
inline VecOf<float> deinterleave_odd(VecOf<float> a, VecOf<float> b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}
inline VecOf<double> deinterleave_even(VecOf<double> a, VecOf<double> b) { return __builtin_shufflevector(a, b, 0, 2, 4, 6); }
inline VecOf<double> deinterleave_odd(VecOf<double> a, VecOf<double> b) { return __builtin_shufflevector(a, b, 1, 3, 5, 7); }

// r[i][j] <-> r[j][i].
inline void transpose(VecOf<float> (&r)[8]) {
  typedef VecOf<float> V;
  V t[8], u[8];
  for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)  // then pairs of pairs: u[i + j] holds columns j and j + 4
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = __builtin_shufflevector(t[i + h], t[i + 2 + h], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * h + 1] = __builtin_shufflevector(t[i + h], t[i + 2 + h], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int i = 0; i < 4; ++i) {  // then the 128-bit halves
    r[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
inline void transpose(VecOf<double> (&r)[4]) {
  typedef VecOf<double> V;
  V t[4];
  for (int i = 0; i < 4; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 4, 2, 6);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 1, 5, 3, 7);
  }
  for (int h = 0; h < 2; ++h) {
    r[h] = __builtin_shufflevector(t[h], t[h + 2], 0, 1, 4, 5);
    r[h + 2] = __builtin_shufflevector(t[h], t[h + 2], 2, 3, 6, 7);
  }
}

// Unaligned vector load and store (memcpy: no alignment or aliasing assumption).
template <class T>
static inline VecOf<T> load(const T* p) {
  VecOf<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <class T>
static inline void store(T* p, VecOf<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// The first n lanes of v (all of them when n >= L; none when n <= 0). A masked store: a
// variable-length memcpy here was a libc call per tile row.
inline void store_lanes(float* p, VecOf<float> v, int64_t n) {
  if (n >= 8) return store(p, v);
#ifdef __AVX2__
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_ps(p, mask, reinterpret_cast<__m256>(v));
#else
  for (int64_t e = 0; e < n; ++e) p[e] = v[e];
#endif
}
inline void store_lanes(double* p, VecOf<double> v, int64_t n) {
  if (n >= 4) return store(p, v);
#ifdef __AVX2__
  const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  _mm256_maskstore_pd(p, mask, reinterpret_cast<__m256d>(v));
#else
  for (int64_t e = 0; e < n; ++e) p[e] = v[e];
#endif
}

// v[l] = row[base + l] where 0 <= base + l < W, else 0.
inline void masked_row_load(const float* row, int64_t base, int64_t W, VecOf<float>& v) {
#ifdef __AVX2__
  const __m256i lane = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i inside = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), lane),
                                             _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(W)), lane));
  // The address of lane 0 may lie before the row; masked-off lanes are never touched.
  v = reinterpret_cast<VecOf<float>>(_mm256_maskload_ps(reinterpret_cast<const float*>(
      reinterpret_cast<std::uintptr_t>(row) + base * int64_t(sizeof(float))), inside));
#else
  for (int l = 0; l < 8; ++l) v[l] = base + l >= 0 && base + l < W ? row[base + l] : 0.0f;
#endif
}
inline void masked_row_load(const double* row, int64_t base, int64_t W, VecOf<double>& v) {
#ifdef __AVX2__
  const __m256i lane = _mm256_add_epi64(_mm256_set1_epi64x(base), _mm256_setr_epi64x(0, 1, 2, 3));
  const __m256i inside = _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), lane),
                                             _mm256_cmpgt_epi64(_mm256_set1_epi64x(W), lane));
  v = reinterpret_cast<VecOf<double>>(_mm256_maskload_pd(reinterpret_cast<const double*>(
      reinterpret_cast<std::uintptr_t>(row) + base * int64_t(sizeof(double))), inside));
#else
  for (int l = 0; l < 4; ++l) v[l] = base + l >= 0 && base + l < W ? row[base + l] : 0.0;
#endif
}

template <class T>
struct MicroTile {
  static constexpr int MR = 6;
  static constexpr int NR = 2 * Vec<T>::kLanes;  // 16 floats, 8 doubles
};

// MR rows x NV vectors; MR * NV <= 12 accumulators. The default 6 x 2 suits every m >= 6;
// problems with m < 6 rows (a conv producing 1-3 channels) use 1 x 12, 2 x 6 or 3 x 4 so
// the 12 accumulators are not mostly padding.
//
// The A operand is read through an accessor: a packed panel (PackedPanel, the usual case) or MR
// row pointers (RowPointers: rows that are already contiguous, as channel-last pixels are).
template <class T, int MR>
struct PackedPanel {
  const T* __restrict a;  // [kd][MR]
  T at(int64_t p, int i) const { return a[p * MR + i]; }
};

template <class T, int MR>
struct RowPointers {
  const T* rows[MR];  // row i's element p at rows[i][p]
  T at(int64_t p, int i) const { return rows[i][p]; }
};

// B's rows are read through an accessor as well: a row-major matrix (StridedRows, the usual case)
// or a table of row offsets (RowTable: channel-last pixels as the reduction, one row each).
template <class T>
struct StridedRows {
  const T* __restrict b;
  int64_t ldb;
  const T* row(int64_t p) const { return b + p * ldb; }
};

template <class T>
struct RowTable {
  const T* base;
  const int64_t* offsets;  // row p at base + offsets[p]
  const T* row(int64_t p) const { return base + offsets[p]; }
};

// The micro-kernel in two steps, so a caller can sum several runs of the reduction (segments
// that are not one strided matrix) in the same registers: acc += A[:, 0:kd] * B[0:kd, :], then
// C (+)= acc for the valid corner.
template <class T, int MR, int NV, class A, class B>
__attribute__((always_inline)) static inline void tile_accumulate(VecOf<T> (&acc)[MR][NV], int64_t kd, const A a,
                                                                  const B b_rows) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  for (int64_t p = 0; p < kd; ++p) {
    V b[NV];
    const T* b_row = b_rows.row(p);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], b_row + v * L, sizeof(V));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T ai = a.at(p, i);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[i][v] += b[v] * ai;  // vector * scalar: a broadcast
    }
  }
}

template <class T, int MR, int NV>
__attribute__((always_inline)) static inline void tile_zero(VecOf<T> (&acc)[MR][NV]) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[i][v] = VecOf<T>{};
}

template <class T, int MR, int NV>
__attribute__((always_inline)) static inline void tile_store(VecOf<T> (&acc)[MR][NV], T* __restrict C, int64_t ldc,
                                                             int m_valid, int n_valid, bool accumulate) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  if (m_valid == MR && n_valid == NV * L) {  // a whole tile: straight-line vector stores
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        T* c = C + i * ldc + v * L;
        if (accumulate) {
          V old;
          std::memcpy(&old, c, sizeof(V));
          acc[i][v] += old;
        }
        std::memcpy(c, &acc[i][v], sizeof(V));
      }
    return;
  }
  // An edge tile: whole vectors where its columns fill them (the rows past m_valid skipped),
  // the lanes of a last partial vector one by one (a copy through memory, scalar, cost a tenth
  // of decoder.tconv2's grad_x: 64 channels are 10 tiles of 6 and one of 4).
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      if (i >= m_valid) continue;
      T* c = C + i * ldc + v * L;
      if ((v + 1) * L <= n_valid) {
        if (accumulate) {
          V old;
          std::memcpy(&old, c, sizeof(V));
          acc[i][v] += old;
        }
        std::memcpy(c, &acc[i][v], sizeof(V));
      } else {
        for (int l = 0; l < n_valid - v * L; ++l) c[l] = accumulate ? c[l] + acc[i][v][l] : acc[i][v][l];
      }
    }
}

template <class T, int MR, int NV, class A, class B>
static inline void microkernel_ab(int64_t kd, const A a, const B b_rows, T* __restrict C, int64_t ldc, int m_valid,
                                  int n_valid, bool accumulate) {
  VecOf<T> acc[MR][NV];
  tile_zero<T, MR, NV>(acc);
  tile_accumulate<T, MR, NV>(acc, kd, a, b_rows);
  tile_store<T, MR, NV>(acc, C, ldc, m_valid, n_valid, accumulate);
}

template <class T, int MR, int NV, class A>
static inline void microkernel_with(int64_t kd, const A a, const T* __restrict B, int64_t ldb, T* __restrict C,
                                    int64_t ldc, int m_valid, int n_valid, bool accumulate) {
  microkernel_ab<T, MR, NV>(kd, a, StridedRows<T>{B, ldb}, C, ldc, m_valid, n_valid, accumulate);
}

template <class T, int MR, int NV>
static inline void microkernel(int64_t kd, const T* __restrict a_panel, const T* __restrict B, int64_t ldb,
                               T* __restrict C, int64_t ldc, int m_valid, int n_valid, bool accumulate) {
  microkernel_with<T, MR, NV>(kd, PackedPanel<T, MR>{a_panel}, B, ldb, C, ldc, m_valid, n_valid, accumulate);
}

// The reduction block: kd cut into equal blocks of at most 320 (a 3x3 conv over 32 channels,
// 288, is one block; 576 is two of 288, not 256 + 256 + 64, whose last short block pays the C
// tile's load and store for few FMAs). A B micro-panel of 320 x 16 floats is 20 KiB, in L1.
constexpr int64_t kMaxKC = 320;
static inline int64_t kc_block(int64_t kd) {
  if (kd <= kMaxKC) return kd > 0 ? kd : 1;
  const int64_t blocks = (kd + 255) / 256;
  return (kd + blocks - 1) / blocks;
}

// Elements of the packed copy of an m x kd matrix.
template <class T, int MR = MicroTile<T>::MR>
static inline int64_t packed_a_size(int64_t m, int64_t kd) {
  return (m + MR - 1) / MR * MR * kd;
}

// panel[p * MR + i] = A[i * lda + p] for i < MR and p < kd rounded down to whole vectors (the
// value returned): L x L blocks transposed in registers (one scalar move per element was most
// of packing's time, a sixth of winograd_s2's backward-weight).
template <class T, int MR>
static inline int64_t pack_rows_transposed(int64_t kd, const T* A, int64_t lda, T* panel) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t full = kd / L * L;
  for (int64_t p = 0; p < full; p += L)
    for (int i0 = 0; i0 < MR; i0 += L) {
      VecOf<T> v[L];
      for (int i = 0; i < L; ++i) v[i] = i0 + i < MR ? load(A + (i0 + i) * lda + p) : VecOf<T>{};
      transpose(v);
      const int n = MR - i0 < L ? MR - i0 : L;
      for (int e = 0; e < L; ++e) std::memcpy(panel + (p + e) * MR + i0, &v[e], sizeof(T) * n);
    }
  return full;
}

// Pack A (row i at A + i*lda, column p at + p*col_stride) into MR-row panels: panel b holds
// rows b*MR .. b*MR+MR-1 as [kd][MR]; rows past m are zero.
template <class T, int MR = MicroTile<T>::MR>
static void pack_a(int64_t m, int64_t kd, const T* A, int64_t lda, int64_t col_stride, T* packed) {
  for (int64_t i0 = 0; i0 < m; i0 += MR) {
    T* panel = packed + i0 * kd;
    const int64_t rows = m - i0 < MR ? m - i0 : MR;
    if (rows == MR) {  // (unrolled: the common case)
      int64_t p0 = 0;
      if (col_stride == 1) p0 = pack_rows_transposed<T, MR>(kd, A + i0 * lda, lda, panel);
      for (int64_t p = p0; p < kd; ++p)
#pragma GCC unroll 8
        for (int64_t i = 0; i < MR; ++i) panel[p * MR + i] = A[(i0 + i) * lda + p * col_stride];
      continue;
    }
    for (int64_t p = 0; p < kd; ++p) {
      for (int64_t i = 0; i < rows; ++i) panel[p * MR + i] = A[(i0 + i) * lda + p * col_stride];
      for (int64_t i = rows; i < MR; ++i) panel[p * MR + i] = T(0);
    }
  }
}

// C[m x n] (+)= A[m x kd] * B[kd x n], A packed by pack_a<T, MR>, B a row-major matrix of width
// ldb (a multiple of NR, zero past n; with NV > 2 its storage must extend (NV - 2) vectors
// past the last row, as the last panel may read that far). Blocked over kd so a B panel
// (KC x NV vectors) stays in L1 while all of A's panels pass by.
template <class T, int MR = MicroTile<T>::MR, int NV = 2>
static void gemm_packed(int64_t m, int64_t n, int64_t kd, const T* a_packed, const T* B, int64_t ldb, T* C,
                        int64_t ldc, bool accumulate) {
  constexpr int64_t NW = NV * Vec<T>::kLanes;
  const int64_t KC = kc_block(kd);
  if (kd == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::memset(C + i * ldc, 0, sizeof(T) * n);
    return;
  }
  for (int64_t k0 = 0; k0 < kd; k0 += KC) {
    const int64_t kc = kd - k0 < KC ? kd - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (int64_t j = 0; j < n; j += NW) {
      const int nv = static_cast<int>(n - j < NW ? n - j : NW);
      for (int64_t i = 0; i < m; i += MR) {
        const int mv = static_cast<int>(m - i < MR ? m - i : MR);
        microkernel<T, MR, NV>(kc, a_packed + i * kd + k0 * MR, B + k0 * ldb + j, ldb, C + i * ldc + j, ldc, mv,
                               nv, acc);
      }
    }
  }
}

// One KC x NR micro-panel of a B operand whose row p is made of runs of rows[p]: segment s
// (s0 <= s < s1, in column order) puts the elements from rows[p] + seg_src[s] on at panel
// column seg_dst[s]. Each is copied as a whole NR-wide row, its tail overwritten by the next
// segment (or by the next row): `panel` needs (kc + 1) * NR elements, and NR elements past any
// segment's start must be readable.
template <class T>
static inline void pack_segment_panel(int64_t kc, const T* const* rows, int32_t s0, int32_t s1,
                                      const int32_t* seg_dst, const int64_t* seg_src, T* panel) {
  constexpr int64_t NR = MicroTile<T>::NR;
  for (int64_t p = 0; p < kc; ++p) {
    const T* base = rows[p];
    T* d = panel + p * NR;
    for (int32_t s = s0; s < s1; ++s) std::memcpy(d + seg_dst[s], base + seg_src[s], sizeof(T) * NR);
  }
}

// C[m x n] = A[m x kd] * B[kd x n] with A packed by pack_a and B's row p made of runs of
// rows[p]: B is packed one KC x NR micro-panel at a time into `panel` (pack_segment_panel, with
// panel jp's segments seg_first[jp] .. seg_first[jp + 1] - 1), right before the MR-row panels of
// A pass over it, so the copy lands in L1 where the micro-kernel reads it (BLIS packs B the same
// way). Columns past n are not stored; `panel` needs (kMaxKC + 1) * NR elements.
template <class T>
static void gemm_packed_segments(int64_t m, int64_t n, int64_t kd, const T* a_packed, const T* const* rows,
                                 const int32_t* seg_first, const int32_t* seg_dst, const int64_t* seg_src, T* C,
                                 int64_t ldc, T* panel) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t KC = kc_block(kd);
  for (int64_t k0 = 0; k0 < kd; k0 += KC) {
    const int64_t kc = kd - k0 < KC ? kd - k0 : KC;
    for (int64_t j = 0; j < n; j += NR) {
      const int nv = static_cast<int>(n - j < NR ? n - j : NR);
      pack_segment_panel<T>(kc, rows + k0, seg_first[j / NR], seg_first[j / NR + 1], seg_dst, seg_src, panel);
      for (int64_t i = 0; i < m; i += MR) {
        const int mv = static_cast<int>(m - i < MR ? m - i : MR);
        microkernel<T, MR, 2>(kc, a_packed + i * kd + k0 * MR, panel, NR, C + i * ldc + j, ldc, mv, nv, k0 > 0);
      }
    }
  }
}

// A row stride for a B operand of n columns: whole NR-wide panels (one cache line each), an odd
// number of them. With a power-of-two stride the KC rows of the B panel that every A panel
// passes over would all map to a few L1 sets and be evicted before the next A panel came by.
template <class T>
static inline int64_t b_row_stride(int64_t n) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t panels = (n + NR - 1) / NR;
  return (panels | 1) * NR;
}

// Slack (elements) a B operand needs past its last row for any gemm_packed variant.
template <class T>
constexpr int64_t kBSlack = 12 * Vec<T>::kLanes;

}  // namespace FC_ISA
}  // namespace fastconv
