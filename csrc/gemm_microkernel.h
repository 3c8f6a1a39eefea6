// The register-blocked inner kernel: C[MR x NR] (+)= A[MR x kd] * B[kd x NR].
//
// Written with GCC vector extensions, so this one source is the AVX2+FMA kernel when its
// translation unit is compiled with -mavx2 -mfma (two 256-bit accumulators per row, the
// multiply-add contracted to vfmadd) and a correct SSE2 kernel otherwise. MR = 6 rows x two
// vectors = 12 accumulators + 2 B vectors + 1 broadcast A = 15 of the 16 ymm registers
// (the BLIS haswell sgemm shape, 6x16 for float, 6x8 for double).
//
// A is read in place (row i at A + i*lda, so weights and grad_out rows need no packing);
// B is a packed panel of exactly NR columns (row p at B + p*ldb), zero-padded by the
// caller, so the kernel has no column remainder; C's valid columns are n_valid <= NR.
#pragma once
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
struct MicroTile {
  static constexpr int MR = 6;
  static constexpr int NR = 2 * Vec<T>::kLanes;  // 16 floats, 8 doubles
};

// accumulate == false: C is overwritten (never read, so it may hold garbage or NaN).
template <class T, int M>
static inline void microkernel(int64_t kd, const T* __restrict A, int64_t lda, const T* __restrict B,
                               int64_t ldb, T* __restrict C, int64_t ldc, int n_valid, bool accumulate) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  V acc[M][2];
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = V{};
  for (int64_t p = 0; p < kd; ++p) {
    V b0, b1;
    std::memcpy(&b0, B + p * ldb, sizeof(V));
    std::memcpy(&b1, B + p * ldb + L, sizeof(V));
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      const V a = V{} + A[i * lda + p];
      acc[i][0] += a * b0;
      acc[i][1] += a * b1;
    }
  }
  if (n_valid == 2 * L) {
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      T* c = C + i * ldc;
      if (accumulate) {
        V c0, c1;
        std::memcpy(&c0, c, sizeof(V));
        std::memcpy(&c1, c + L, sizeof(V));
        acc[i][0] += c0;
        acc[i][1] += c1;
      }
      std::memcpy(c, &acc[i][0], sizeof(V));
      std::memcpy(c + L, &acc[i][1], sizeof(V));
    }
  } else {
    for (int i = 0; i < M; ++i) {
      T lanes[2 * L];
      std::memcpy(lanes, &acc[i][0], sizeof(V));
      std::memcpy(lanes + L, &acc[i][1], sizeof(V));
      T* c = C + i * ldc;
      for (int j = 0; j < n_valid; ++j) c[j] = accumulate ? c[j] + lanes[j] : lanes[j];
    }
  }
}

// C[m x n] (+)= A[m x kd] * B[kd x n] where B is stored as ceil(n/NR) panels side by side
// (row p of the whole B at B + p*ldb, ldb a multiple of NR, zero-padded past n).
// Blocked over kd so that a B panel (kc x NR) stays in L1 while all of A's rows pass by.
template <class T>
static void gemm_panels(int64_t m, int64_t n, int64_t kd, const T* A, int64_t lda, const T* B, int64_t ldb,
                        T* C, int64_t ldc, bool accumulate) {
  constexpr int MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  constexpr int64_t KC = 256;
  if (kd == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::memset(C + i * ldc, 0, sizeof(T) * n);
    return;
  }
  for (int64_t k0 = 0; k0 < kd; k0 += KC) {
    const int64_t kc = kd - k0 < KC ? kd - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (int64_t j = 0; j < n; j += NR) {
      const int nv = static_cast<int>(n - j < NR ? n - j : NR);
      const T* b = B + k0 * ldb + j;
      int64_t i = 0;
      for (; i + MR <= m; i += MR)
        microkernel<T, MR>(kc, A + i * lda + k0, lda, b, ldb, C + i * ldc + j, ldc, nv, acc);
      const T* a = A + i * lda + k0;
      T* c = C + i * ldc + j;
      switch (m - i) {
        case 5: microkernel<T, 5>(kc, a, lda, b, ldb, c, ldc, nv, acc); break;
        case 4: microkernel<T, 4>(kc, a, lda, b, ldb, c, ldc, nv, acc); break;
        case 3: microkernel<T, 3>(kc, a, lda, b, ldb, c, ldc, nv, acc); break;
        case 2: microkernel<T, 2>(kc, a, lda, b, ldb, c, ldc, nv, acc); break;
        case 1: microkernel<T, 1>(kc, a, lda, b, ldb, c, ldc, nv, acc); break;
        default: break;
      }
    }
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
