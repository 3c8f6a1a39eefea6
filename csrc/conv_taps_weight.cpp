// Backward-weight of convs without padding, a GEMM per kernel tap:
// gw[g][k][c][tap] = sum over images n and output pixels p of gy[n, g][k][p] * x[n, g][c][p's input at tap].
//
// Both operands hold the reduction (the pixels) along rows. gy's channel rows are read in place as
// the micro-kernel's A rows (RowPointers: MR rows, one broadcast each per pixel). x's pixels at the
// tap are gathered, NR channels and a KC block of pixels at a time, into channel rows (a 1x1 kernel
// at stride 1 reads x's rows as they are), then transposed in registers into an [pixel][NR] panel
// in L1, which every A panel of the task meets. Nothing else is copied: gemm_nhwc made x
// channel-last, copied each B panel again and packed gy transposed, a quarter of MobileNet's 1x1
// backward-weight; on U-Net's 2x2 s2 transposed conv its backward-weight is this GEMM too.
//
// Without padding every tap's pixel lies inside x, so the gather checks no bounds; convs with
// padding (3x3 "same") have gemm_nhwc and the Winograd kernels.
//
// Tasks: (group, tap, channel panel of x, block of gy's channel panels); a task sums its outputs
// over the images and their pixel blocks in order, so results do not depend on the thread count.
// The sums go to gw^T[k][tap][c] (a tile's columns contiguous) and are then transposed into gw,
// unless the kernel is 1x1 (the same layout).
#include <cstring>

#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

template <class T>
void conv_backward_weight_taps(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW, HW = g.H * g.W, RS = g.R * g.S;
  const int64_t wrow = Cg * RS;  // one output channel's weights
  if (g.K * wrow == 0) return;
  if (g.N * P == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * wrow);
    return;
  }
  const bool rows_in_place = RS == 1 && P == HW;  // 1x1 at stride 1: the tap's pixels are x's rows
  const int64_t cpanels = ceil_div(Cg, NR), kpanels = ceil_div(Kg, MR), KC = kc_block(P);
  T* sums = RS == 1 ? gw : static_cast<T*>(thread_workspace(sizeof(T) * g.K * wrow, kSlotShared));
  // Fewer than 4 tasks a thread: gy's channels split into blocks (each gathers x's panel again).
  // A task with several of x's channel panels, gy's rows read once for them all, was slower.
  int64_t kblock = kpanels;
  auto tasks = [&] { return g.groups * RS * cpanels * ceil_div(kpanels, kblock); };
  while (tasks() < 4 * threads && kblock > 1) kblock = ceil_div(kblock, 2);
  const int64_t kblocks = ceil_div(kpanels, kblock);

  parallel_tasks(tasks(), threads, [&](int64_t task) {
    const int64_t kb = task % kblocks, cp = task / kblocks % cpanels, tap = task / (kblocks * cpanels) % RS;
    const int64_t gi = task / (kblocks * cpanels * RS);
    const int64_t c0 = cp * NR, nc = min64(NR, Cg - c0), kp0 = kb * kblock, kp1 = min64(kpanels, kp0 + kblock);
    T* panel = static_cast<T*>(thread_workspace(sizeof(T) * KC * NR, kSlotTile));
    T* rows = rows_in_place ? nullptr : static_cast<T*>(thread_workspace(sizeof(T) * NR * KC, kSlotTile2));
    if (rows) std::memset(rows + nc * KC, 0, sizeof(T) * (NR - nc) * KC);  // channels past Cg: zero
    T* out = sums + gi * Kg * wrow + tap * Cg + c0;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* xs = x + (n * g.C + gi * Cg + c0) * HW;  // channel c0's plane
      for (int64_t p0 = 0; p0 < P; p0 += KC) {
        const int64_t kc = min64(KC, P - p0);
        const T* src = rows_in_place ? xs + p0 : rows;  // the block's channel rows, ld apart
        const int64_t ld = rows_in_place ? HW : KC;
        if (rows)
          for (int64_t c = 0; c < nc; ++c) gather_tap(g, xs + c * HW, tap / g.S, tap % g.S, p0, kc, rows + c * KC);
        // panel[q][j] = channel c0 + j at pixel p0 + q, zero past Cg
        const int64_t done = nc == NR || rows ? pack_rows_transposed<T, NR>(kc, src, ld, panel) : 0;
        for (int64_t q = done; q < kc; ++q)
          for (int64_t j = 0; j < NR; ++j) panel[q * NR + j] = j < nc ? src[j * ld + q] : T(0);
        const T* gys = gy + (n * g.K + gi * Kg) * P + p0;  // the group's gy channel 0 at pixel p0
        for (int64_t kp = kp0; kp < kp1; ++kp) {
          const int mv = static_cast<int>(min64(MR, Kg - kp * MR));
          RowPointers<T, MR> a;
          for (int i = 0; i < MR; ++i) a.rows[i] = gys + (kp * MR + (i < mv ? i : 0)) * P;  // rows past Kg: not stored
          microkernel_ab<T, MR, 2>(kc, a, StridedRows<T>{panel, NR}, out + kp * MR * wrow, wrow, mv,
                                   static_cast<int>(nc), n > 0 || p0 > 0);
        }
      }
    }
  });
  if (RS == 1) return;
  parallel_tasks(g.K, threads, [&](int64_t k) {  // gw^T[k][tap][c] -> gw[k][c][tap]
    const T* src = sums + k * wrow;
    T* dst = gw + k * wrow;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t tap = 0; tap < RS; ++tap) dst[c * RS + tap] = src[tap * Cg + c];
  });
}

template void conv_backward_weight_taps<float>(const ConvGeom&, const float*, const float*, float*, int);
template void conv_backward_weight_taps<double>(const ConvGeom&, const double*, const double*, double*, int);

}  // namespace FC_ISA
}  // namespace fastconv
