// Forward convolution with a 1x1 kernel without padding, as a GEMM per image and group:
// y[n, g] (Kg x P) = W[g] (Kg x Cg) * x[n, g] (Cg x P), P = OH*OW pixels. Backward-data of such a
// conv at stride 1 is the same GEMM with W transposed (the caller passes it as the forward).
//
// x's channel rows are B's rows and y's channel rows C's, both NCHW as they are: B is read in
// place and C written straight into y (gemm_direct.h), so the GEMM has no patch matrix, no
// packed copy of B and no result tile to copy out. Only an image's last NR-column panel, when
// P is not a multiple of NR, is copied (zero-padded) first: its rows would read past the row's end,
// the last of them past x's. At a stride (ResNet's 1x1 s2 downsampling), a task first gathers its
// block's pixels of every channel into rows of its own (Cg x the block, in L2), which B then is.
//
// Tasks: (image, group, block of pixels, block of output channels); each output is summed by one
// task in a fixed order, so results do not depend on the thread count.
#include <cstdint>
#include <cstring>

#include "gemm_direct.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {
constexpr int64_t kMaxPixels = 256;  // columns per task: 16 panels, A's KC block re-read from L2 per panel
}

template <class T>
void conv_forward_1x1(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW, HW = g.H * g.W;
  if (g.N * g.K * P == 0) return;
  const bool strided = g.sh != 1 || g.sw != 1 || P != HW;

  const int64_t per_group = packed_a_size<T>(Kg, Cg);
  T* packed_w = static_cast<T*>(thread_workspace(sizeof(T) * per_group * g.groups, kSlotShared));
  pack_a_parallel<T>(
      g.groups, Cg, Cg, 1, [&](int64_t gi) { return std::make_pair(w + gi * Kg * Cg, Kg); }, packed_w, per_group,
      threads);

  // Fewer than 8 tasks: halve the pixel blocks (down to one panel), then the channel blocks
  // (down to 8 register panels).
  int64_t block = min64(kMaxPixels, round_up(P, NR)), kblock = round_up(Kg, MR);
  auto tasks = [&] { return g.N * g.groups * ceil_div(P, block) * ceil_div(Kg, kblock); };
  while (tasks() < 8 && block > NR) block = round_up(block / 2, NR);
  while (tasks() < 8 && kblock > 8 * MR) kblock = round_up(kblock / 2, MR);
  const int64_t pblocks = ceil_div(P, block), kblocks = ceil_div(Kg, kblock);

  parallel_tasks(g.N * g.groups * pblocks * kblocks, threads, [&](int64_t task) {
    const int64_t kb = task % kblocks, pb = task / kblocks % pblocks, ng = task / (kblocks * pblocks);
    const int64_t n = ng / g.groups, gi = ng % g.groups;
    const int64_t p0 = pb * block, np = min64(block, P - p0), k0 = kb * kblock, nk = min64(kblock, Kg - k0);
    const T* xs = x + (n * g.C + gi * Cg) * HW + p0;  // the block's first column of channel 0 (stride 1)
    T* tail = static_cast<T*>(thread_workspace(sizeof(T) * kMaxKC * NR, kSlotTile));
    const int64_t ld = round_up(np, NR);
    T* gathered = strided ? static_cast<T*>(thread_workspace(sizeof(T) * Cg * ld, kSlotTile2)) : nullptr;
    if (strided)
      for (int64_t c = 0; c < Cg; ++c) {
        T* row = gathered + c * ld;
        gather_tap(g, x + (n * g.C + gi * Cg + c) * HW, 0, 0, p0, np, row);
        for (int64_t e = np; e < ld; ++e) row[e] = T(0);
      }
    // A panel's rows are read in place only where each starts a cache line. NumPy puts a large
    // array 16 bytes past one: each 64-byte row then spans two lines, the panel's 256 rows
    // fill all 8 ways of L1's sets and evict each other and A. Copied first, once for all of
    // A's panels: MobileNet's pointwise backward-data 1.42 -> 1.07 ms (aligned rows 1.01-1.19 either way).
    const bool lines_aligned = reinterpret_cast<uintptr_t>(xs) % 64 == 0 && HW * sizeof(T) % 64 == 0;
    const auto b_panel = [&](int64_t j, int64_t c0, int64_t kc) {
      if (strided) return StridedRows<T>{gathered + c0 * ld + j, ld};
      if (np - j >= NR && lines_aligned) return StridedRows<T>{xs + c0 * HW + j, HW};
      // a panel off the lines, or the image's last, partial panel (zero-padded)
      for (int64_t c = 0; c < kc; ++c) {
        const T* src = xs + (c0 + c) * HW + j;
        T* dst = tail + c * NR;
        if (np - j >= NR) {  // inline: a memcpy call a row cost more than the split loads
          store(dst, load(src));
          store(dst + Vec<T>::kLanes, load(src + Vec<T>::kLanes));
        } else {
          std::memcpy(dst, src, sizeof(T) * (np - j));
          std::memset(dst + (np - j), 0, sizeof(T) * (NR - (np - j)));
        }
      }
      return StridedRows<T>{tail, NR};
    };
    gemm_direct<T>(nk, np, Cg, packed_w + gi * per_group + k0 * Cg, b_panel, bias ? bias + gi * Kg + k0 : nullptr,
                   y + (n * g.K + gi * Kg + k0) * P + p0, P, streams_output<T>(g));
  });
}

template void conv_forward_1x1<float>(const ConvGeom&, const float*, const float*, const float*, float*, int);
template void conv_forward_1x1<double>(const ConvGeom&, const double*, const double*, const double*, double*, int);

}  // namespace FC_ISA
}  // namespace fastconv
