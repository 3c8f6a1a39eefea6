// Forward convolution as a GEMM over "wide" output rows (wide.h; no per-pixel gather).
//
// Tap (c, r, s) of a block of output rows is one contiguous run of the block's slabs, so no
// patch matrix is built: the GEMM packs each KC x NR panel of B straight from the slabs (16
// contiguous elements per tap), where implicit_gemm copies OW-long segments with bookkeeping
// per segment into a patch tile that outgrows L1. That is its win on planes whose rows are
// short (MNIST's 11- and 26-wide rows); its loss, the dropped columns, is small when OW is
// large next to S / stride. Small images are stacked, several per task.
//
// Tasks: (group, images, block of output rows); each output element comes from one task with a
// fixed summation order, so results do not depend on the thread count. Scratch per task is
// bounded by the block (about kMaxColumns wide columns) and one group's channels.
#include <cstring>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {
constexpr int64_t kMaxColumns = 512;
}

template <class T>
void conv_forward_wide(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S;
  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, halo = lay.halo, phases = lay.phases;
  const int64_t srows_image = g.OH + halo;  // slab rows of a whole image (per phase)

  // A task covers images [n0, n0 + ni) and output rows [oh0, oh0 + nrows) of each. Small
  // images are stacked, ni per task, one slab of ni * srows_image rows (the rows between two
  // images' outputs are more dropped columns); larger ones are cut into blocks of rows. About
  // kMaxColumns columns per task, and 8 tasks or more where the problem allows.
  int64_t per_task = 1, block = g.OH;
  if (srows_image * Wp <= kMaxColumns) {  // (columns per image, at any number of phases)
    per_task = max64(1, min64(g.N, kMaxColumns / (srows_image * Wp)));
    while (g.groups * ceil_div(g.N, per_task) < 8 && per_task > 1) per_task = ceil_div(per_task, 2);
  } else {
    block = max64(1, min64(g.OH, (kMaxColumns - g.OW) / Wp + 1));
    while (g.groups * g.N * ceil_div(g.OH, block) < 8 && block > 1) block = ceil_div(block, 2);
  }
  const int64_t image_tasks = ceil_div(g.N, per_task), nblocks = ceil_div(g.OH, block);
  // One image without padding: the slab is x itself (its rows are already Wp wide).
  const bool alias = per_task == 1 && phases == 1 && g.ph == 0 && g.pw == 0 && Wp == g.W && g.OH + halo <= g.H;

  const int64_t per_group = packed_a_size<T>(Kg, rows);
  T* packed_w = static_cast<T*>(thread_workspace(sizeof(T) * per_group * g.groups, kSlotShared));
  for (int64_t gi = 0; gi < g.groups; ++gi) pack_a<T>(Kg, rows, w + gi * Kg * rows, rows, 1, packed_w + gi * per_group);

  parallel_tasks(g.groups * image_tasks * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / (image_tasks * nblocks), it = (task / nblocks) % image_tasks;
    const int64_t n0 = it * per_task, ni = min64(per_task, g.N - n0), oh0 = (task % nblocks) * block;
    const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo;
    const int64_t Q = ((ni - 1) * srows + nrows - 1) * Wp + g.OW, ldb = round_up(Q, NR);

    const T* slab;
    int64_t channel_stride, phase_stride;
    if (alias) {
      slab = x + (n0 * g.C + gi * Cg) * g.H * g.W + oh0 * g.W;
      channel_stride = phase_stride = g.H * g.W;
    } else {
      // [c][phase][image][row][Wp]: each (channel, phase) slab holds the images one below
      // another, so the wide columns run on from one image into the next.
      phase_stride = ni * srows * Wp;
      channel_stride = phases * phase_stride;
      T* s = static_cast<T*>(thread_workspace(sizeof(T) * Cg * channel_stride, kSlotPackA));
      for (int64_t j = 0; j < ni; ++j)
        build_slabs(g, x + ((n0 + j) * g.C + gi * Cg) * g.H * g.W, Cg, oh0, srows, Wp, s + j * srows * Wp,
                    channel_stride, phase_stride);
      slab = s;
    }

    // Patch row (c, r, s) = Q elements from tap_offset in channel c's slabs (the last one read
    // is the last element of its phase slab); the GEMM packs them panel by panel.
    const T** patch_rows = static_cast<const T**>(thread_workspace(sizeof(T*) * rows, kSlotTile));
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s)
          patch_rows[(c * g.R + r) * g.S + s] = slab + c * channel_stride + tap_offset(g, Wp, phase_stride, r, s);
    T* result = static_cast<T*>(thread_workspace(sizeof(T) * (Kg * ldb + kMaxKC * NR), kSlotTile2));
    gemm_packed_rows<T>(Kg, Q, rows, packed_w + gi * per_group, patch_rows, result, ldb, result + Kg * ldb);

    for (int64_t k = 0; k < Kg; ++k) {
      const T b = bias ? bias[gi * Kg + k] : T(0);
      for (int64_t j = 0; j < ni; ++j) {
        T* out = y + (((n0 + j) * g.K + gi * Kg + k) * g.OH + oh0) * g.OW;
        for (int64_t i = 0; i < nrows; ++i) {
          const T* src = result + k * ldb + (j * srows + i) * Wp;
          for (int64_t ow = 0; ow < g.OW; ++ow) out[i * g.OW + ow] = src[ow] + b;
        }
      }
    }
  });
}

template void conv_forward_wide<float>(const ConvGeom&, const float*, const float*, const float*, float*, int);
template void conv_forward_wide<double>(const ConvGeom&, const double*, const double*, const double*, double*, int);

}  // namespace FC_ISA
}  // namespace fastconv
