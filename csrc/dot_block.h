// The register tile of dot-product reductions: a KI x KJ block of dot products along
// contiguous rows, kept as KI*KJ vector accumulators (conv_wide_weight.cpp's dot_wide; lane_sum
// also for conv_max_pool.cpp). Compiled per ISA with the kernels.
#pragma once
#include <cstdint>
#include <cstring>

#include "gemm_microkernel.h"

namespace fastconv {
namespace FC_ISA {

// grad_out rows x patch rows per block: 12 accumulators + 3 grad_out vectors + 1 patch
// vector = the 16 ymm registers; 7 loads per 12 FMAs. (A 6 x 2 block re-read one operand on
// every FMA and was load-bound at ~45 GFLOP/s per core on MNIST's conv2; this runs at ~70.)
constexpr int KI = 3, KJ = 4;

// acc[i*KJ + j] += a[i][q] * b[j][q] lane-wise over `iters` vectors of q, for `reps` pieces
// (a and b of the next piece are `stride_a` and `stride_b` elements further on): the register
// tile, kept in registers across pieces.
template <class T>
static inline void dot_block(int64_t iters, int64_t reps, int64_t stride_a, int64_t stride_b, const T* const* a,
                             const T* const* b, typename Vec<T>::type* acc_io) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  V acc[KI][KJ];
#pragma GCC unroll 16
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < KJ; ++j) acc[i][j] = acc_io[i * KJ + j];
  const T* ar[KI];
  const T* br[KJ];
#pragma GCC unroll 16
  for (int i = 0; i < KI; ++i) ar[i] = a[i];
#pragma GCC unroll 16
  for (int j = 0; j < KJ; ++j) br[j] = b[j];
  for (int64_t rep = 0; rep < reps; ++rep) {
    for (int64_t it = 0; it < iters; ++it) {
      V av[KI];
#pragma GCC unroll 16
      for (int i = 0; i < KI; ++i) std::memcpy(&av[i], ar[i] + it * L, sizeof(V));
#pragma GCC unroll 16
      for (int j = 0; j < KJ; ++j) {
        V bv;
        std::memcpy(&bv, br[j] + it * L, sizeof(V));
#pragma GCC unroll 16
        for (int i = 0; i < KI; ++i) acc[i][j] += av[i] * bv;
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < KI; ++i) ar[i] += stride_a;
#pragma GCC unroll 16
    for (int j = 0; j < KJ; ++j) br[j] += stride_b;
  }
#pragma GCC unroll 16
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < KJ; ++j) acc_io[i * KJ + j] = acc[i][j];
}

template <class T>
static inline T lane_sum(typename Vec<T>::type v) {
  T s = 0;
  for (int l = 0; l < Vec<T>::kLanes; ++l) s += v[l];
  return s;
}

}  // namespace FC_ISA
}  // namespace fastconv
