// Shared pieces of the Winograd kernels (winograd_f23.cpp, winograd_f43.cpp): masked vector
// loads and stores for the ragged ends of tile rows, the weight transforms' task split, and the forward's task size. Compiled per ISA with the kernels.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "gather.h"
#include "gemm_microkernel.h"
#include "geometry.h"
#include "tasks.h"

namespace fastconv {
namespace FC_ISA {

constexpr int64_t kWinogradBlockBytes = 1 << 20;  // forward: a task's transformed inputs and products

template <class T>
constexpr int64_t kSkew = 64 / sizeof(T);  // elements in a cache line

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


// Every group's transformed kernels (U, or U^T when transposed), packed per (group, position
// xi) at packed + (gi * positions + xi) * per_xi; a task per MR-row panel, done by
// panel(group's w, Kg, Cg, first row, transposed, group's packed, per_xi).
template <class T, class Panel>
void transform_weights(const ConvGeom& g, const T* w, bool transposed, T* packed, int64_t per_xi, int positions,
                       int threads, Panel panel) {
  constexpr int64_t MR = MicroTile<T>::MR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, panels = ceil_div(transposed ? Cg : Kg, MR);
  parallel_tasks(g.groups * panels, threads, [&](int64_t task) {
    const int64_t gi = task / panels;
    panel(w + gi * Kg * Cg * 9, Kg, Cg, (task % panels) * MR, transposed, packed + gi * positions * per_xi, per_xi);
  });
}

// Items (tile rows or images) per task: a task's transforms under kWinogradBlockBytes, halved until
// there are 8 tasks over the groups.
inline int64_t winograd_task_block(int64_t item_bytes, int64_t items, int64_t groups) {
  int64_t block = min64(max64(1, kWinogradBlockBytes / item_bytes), items);
  while (groups * ceil_div(items, block) < 8 && block > 1) block = ceil_div(block, 2);
  return block;
}


// The lanes of v from n on replaced by zero (n <= 0: all of them).
inline VecOf<float> keep_lanes(VecOf<float> v, int64_t n) {
  typedef int32_t I __attribute__((vector_size(32)));
  const I lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return lane < static_cast<int32_t>(n) ? v : VecOf<float>{};
}
inline VecOf<double> keep_lanes(VecOf<double> v, int64_t n) {
  typedef int64_t I __attribute__((vector_size(32)));
  const I lane = {0, 1, 2, 3};
  return lane < n ? v : VecOf<double>{};
}

// dst[ow * ld + k] = src[k * src_stride + ow] for k < rows (a multiple of L) and ow < W, and
// zero for W <= ow < Wd (a multiple of L): rows of a plane made channel-last, L x L blocks
// transposed in registers.
template <class T>
void to_channel_last(const T* src, int64_t src_stride, int64_t rows, int64_t W, int64_t Wd, T* dst, int64_t ld) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  for (int64_t k0 = 0; k0 < rows; k0 += L)
    for (int64_t w0 = 0; w0 < Wd; w0 += L) {
      V r[L];
      for (int i = 0; i < L; ++i) masked_row_load(src + (k0 + i) * src_stride, w0, W, r[i]);
      transpose(r);
      for (int j = 0; j < L; ++j) store(dst + (w0 + j) * ld + k0, r[j]);
    }
}

// dst[ow * KW + k] = src[k * src_stride + ow] for k < K and ow < W, zero for the other k < KW
// and ow < Wd (a multiple of L): grad_out rows channel-last, whole vectors of k by to_channel_last.
template <class T>
void rows_channel_last(const T* src, int64_t src_stride, int64_t K, int64_t W, int64_t Wd, T* dst, int64_t KW) {
  const int64_t full = K / Vec<T>::kLanes * Vec<T>::kLanes;
  to_channel_last(src, src_stride, full, W, Wd, dst, KW);
  for (int64_t ow = 0; ow < Wd; ++ow)
    for (int64_t k = full; k < KW; ++k) dst[ow * KW + k] = k < K && ow < W ? src[k * src_stride + ow] : T(0);
}

// Backward-weight: tile rows split into chunks (at most 8, and no more partial sums than
// kMaxPartials elements in all), each summed into its own partial M of msize elements.
constexpr int64_t kWindowBytes = 512 << 10;  // a task's transforms per window of tile rows
constexpr int64_t kMaxPartials = 1 << 22;    // elements of per-chunk partial sums

struct Chunks {
  int64_t count, per;  // chunks, tile rows per chunk (the last may have fewer)
};

inline Chunks weight_chunks(int64_t tile_rows, int64_t msize) {
  const int64_t n = max64(1, min64(min64(8, tile_rows), kMaxPartials / msize));
  const int64_t per = ceil_div(tile_rows, n);
  return {ceil_div(tile_rows, per), per};
}

// Each group's partials (groups x chunks x msize) added in chunk order into its first, in
// parallel over stretches of it: the same sums in the same order at any thread count.
template <class T>
void sum_chunk_partials(T* partials, int64_t groups, int64_t chunks, int64_t msize, int threads) {
  if (chunks <= 1) return;
  const int64_t stretch = 4096, stretches = ceil_div(msize, stretch);
  parallel_tasks(groups * stretches, threads, [&](int64_t task) {
    const int64_t gi = task / stretches, e0 = (task % stretches) * stretch;
    T* first = partials + gi * chunks * msize;
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const T* part = first + ch * msize;
      for (int64_t e = e0; e < min64(e0 + stretch, msize); ++e) first[e] += part[e];
    }
  });
}

}  // namespace FC_ISA
}  // namespace fastconv
