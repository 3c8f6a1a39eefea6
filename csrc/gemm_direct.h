// C = A * B + bias with B read where it lies and C written straight to the output: the GEMM
// loop of the kernels whose B rows already sit in memory as runs of NR columns (implicit_gemm_wide's
// slabs where OW is a multiple of NR; x's channel rows for a 1x1 conv). Compiled per ISA with
// the kernels.
//
// Packing B and storing C to a tile that is then copied out cost a fifth of the time of the
// 3-channel first layers (ResNet's 7x7 stem, DCGAN's D1), where each output takes 48-147
// multiply-adds. Here a panel's B rows are read in place (a few KiB, in L1 while A's panels
// pass), the bias starts the first reduction block's accumulators, and a large aligned output
// is streamed to memory (stream_store.h).
#pragma once
#include <cstdint>

#include "gather.h"
#include "gemm_microkernel.h"
#include "stream_store.h"

namespace fastconv {
namespace FC_ISA {

// m x n, reduction kd; A packed by pack_a; b_panel(j, k0, kc) returns the accessor of B's rows
// k0 .. k0 + kc - 1 over columns j .. j + NR - 1 (columns past n may hold anything: they are not
// stored); C's row i at C + i * ldc. bias (m, or null) is added once. stream: the output is large
// enough to stream (the alignment and a single reduction block are checked here).
template <class T, class BPanel>
void gemm_direct(int64_t m, int64_t n, int64_t kd, const T* a_packed, const BPanel& b_panel, const T* bias, T* C,
                 int64_t ldc, bool stream) {
  constexpr int MR = MicroTile<T>::MR;
  constexpr int64_t NR = MicroTile<T>::NR;
  constexpr int L = Vec<T>::kLanes;
  const int64_t KC = kc_block(kd);
  stream = stream && KC == kd && stream_aligned(C) && (ldc * sizeof(T)) % 32 == 0;
  for (int64_t k0 = 0; k0 < kd; k0 += KC) {
    const int64_t kc = min64(KC, kd - k0);
    for (int64_t j = 0; j < n; j += NR) {
      const auto b = b_panel(j, k0, kc);
      const int nv = static_cast<int>(min64(NR, n - j));
      for (int64_t i = 0; i < m; i += MR) {
        const int mv = static_cast<int>(min64(MR, m - i));
        VecOf<T> acc[MR][2];
        for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = VecOf<T>{} + (k0 == 0 && bias && r < mv ? bias[i + r] : T(0));
        tile_accumulate<T, MR, 2>(acc, kc, PackedPanel<T, MR>{a_packed + i * kd + k0 * MR}, b);
        if (stream) {  // whole vectors streamed, a last partial one stored lane by lane
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
            for (int v = 0; v < 2; ++v) {
              if (r >= mv) continue;
              T* c = C + (i + r) * ldc + j + v * L;
              if ((v + 1) * L <= nv)
                stream_vector(c, acc[r][v]);
              else
                for (int l = 0; l < nv - v * L; ++l) c[l] = acc[r][v][l];
            }
        } else {
          tile_store<T, MR, 2>(acc, C + i * ldc + j, ldc, mv, nv, k0 > 0);
        }
      }
    }
  }
  if (stream) stream_fence();
}

}  // namespace FC_ISA
}  // namespace fastconv
