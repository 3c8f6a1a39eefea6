// The one shared-memory GEMM tile that every convolution kernel is built on (STYLE: BLIS's
// micro-kernel with the loops around it): C[BM x BN] = sum over k of A[BM x k] * B[k x BN].
//
// A block is 256 threads seen as a 16 x 16 grid (tm = t / 16, tn = t % 16). Thread (tm, tn)
// owns the TM x TN outputs at rows tm + 16*i and columns tn + 16*j, so BM = 16*TM and
// BN = 16*TN. Strided (not contiguous) ownership makes the 16 threads of a half-warp read 16
// consecutive shared-memory words of B (no bank conflicts) and store 16 consecutive columns
// of C (coalesced).
//
// The k dimension advances BK = 16 at a time through two shared buffers: while the block
// multiplies buffer kt % 2, each thread already holds tile kt + 1 in registers and writes it
// into the other buffer afterwards, so one __syncthreads per k-tile suffices. That other
// buffer was last read in iteration kt - 1, which every thread finished before the barrier
// that ended it.
//
// The operands are gathered on the fly (implicit GEMM: nothing is ever materialised in global
// memory) by loader objects that return zeros outside the problem, so the tile loop has no
// edge cases. Two fixed element-to-thread maps are used, chosen per operand by the loader:
//   k-fastest : thread t loads (k0 + t % 16, mn = t / 16 + 16*j) for j < TM (A) or TN (B);
//   mn-fastest: thread t loads (k0 + (t / BN) * TN + j, mn = t % BN) for j < TN (B only).
// k-fastest suits operands contiguous along k (weights, grad_out pixels); mn-fastest suits
// the im2col operand of the forward and backward-data passes, contiguous along output pixels,
// and gives each thread TN consecutive k rows, so it decomposes k into (c, r, s) once per tile.
#pragma once
#include "common.cuh"

constexpr int kGemmThreads = 256;
constexpr int kTileK = 16;

template <int TM, int TN>
struct TileShape {
  static constexpr int BM = 16 * TM;
  static constexpr int BN = 16 * TN;
};

// acc = A-tile x B-tile over k_tiles tiles of kTileK. load_a(k0, regs[TM]) and
// load_b(k0, regs[TN]) fill the calling thread's elements of the tile starting at k0 (zero
// outside the problem). Must be called by all 256 threads of the block (it synchronises).
template <class T, int TM, int TN, bool B_K_FASTEST, class LoadA, class LoadB>
__device__ __forceinline__ void gemm_tile(const LoadA& load_a, const LoadB& load_b, int k_tiles, T (&acc)[TM][TN]) {
  constexpr int BM = TileShape<TM, TN>::BM, BN = TileShape<TM, TN>::BN;
  // +1 column of padding: the k-fastest stores (16 different k rows per half-warp) then fall
  // into different banks.
  __shared__ T a_tile[2][kTileK][BM + 1];
  __shared__ T b_tile[2][kTileK][BN + 1];

  const int t = threadIdx.x, tm = t / 16, tn = t % 16;
  T a_regs[TM], b_regs[TN];

#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  auto stash = [&](int buf) {
#pragma unroll
    for (int j = 0; j < TM; ++j) a_tile[buf][t % 16][t / 16 + 16 * j] = a_regs[j];
    if (B_K_FASTEST) {
#pragma unroll
      for (int j = 0; j < TN; ++j) b_tile[buf][t % 16][t / 16 + 16 * j] = b_regs[j];
    } else {
#pragma unroll
      for (int j = 0; j < TN; ++j) b_tile[buf][(t / BN) * TN + j][t % BN] = b_regs[j];
    }
  };

  if (k_tiles > 0) {
    load_a(0, a_regs);
    load_b(0, b_regs);
    stash(0);
  }
  __syncthreads();

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < k_tiles;
    if (more) {  // global loads in flight while the FMAs below run
      load_a((kt + 1) * kTileK, a_regs);
      load_b((kt + 1) * kTileK, b_regs);
    }
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = a_tile[buf][k][tm + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = b_tile[buf][k][tn + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    if (more) stash(buf ^ 1);
    __syncthreads();
  }
}
