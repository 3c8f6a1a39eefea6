// Forward convolution as implicit GEMM over stride-phase slabs (wide.h): no patch matrix.
//
// A task copies its images' input rows once into zero-bordered slabs (one per stride phase),
// so tap (c, r, s) of output pixel (oh, ow) is slab element tap_offset(r, s) + row*Wp + ow.
// B's columns are the task's output pixels: within a KC x NR micro-panel, each tap row is
// one to three runs of the slab (they break only where an output row ends), packed right
// before use with whole-vector copies (gemm_packed_segments), in L1. Where a task is one image
// and OW is a multiple of NR, every panel is a single run: B is then read in place and C
// written straight into y (gemm_direct.h), with no copy either side; one image with a single
// reduction block also writes C into y, its panels packed. implicit_gemm instead
// gathers a patch tile that outgrows L1 with bookkeeping per OW-long segment; an earlier
// version of this kernel computed the "wide" columns between output rows and dropped them,
// 15-25 % of the work on MNIST-sized planes.
//
// Tasks: (group, images, block of output rows, block of output channels), about kMaxColumns
// output pixels each; each output element comes from one task with a fixed summation order, so
// results do not depend on the thread count. Scratch per task: the block and one group's channels.
#include <cstring>
#include <numeric>

#include "gather.h"
#include "gemm_direct.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {
constexpr int64_t kMaxColumns = 512;

// B read where it lies: row p of a panel is tap p's slab row plus the panel's offset.
template <class T>
struct SlabRows {
  const T* const* taps;
  int64_t offset;
  const T* row(int64_t p) const { return taps[p] + offset; }
};

// `block` output rows rounded down to a multiple that starts every block of a channel plane on
// a 64-byte line (NR floats or doubles), when the plane itself starts on one. A streamed output
// then fills whole lines: a block starting mid-line left every line its panels wrote shared with
// the neighbouring panel, half-written (tconv2's 3->64 grad_x, 28-wide rows in blocks of 18).
template <class T>
int64_t line_rows(const ConvGeom& g, int64_t block) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t step = NR / std::gcd(g.OW, NR);  // rows whose pixels fill whole lines
  return block >= g.OH || block < step ? block : block / step * step;
}

}  // namespace

template <class T>
void conv_forward_wide(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S;
  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, halo = lay.halo, phases = lay.phases;
  const int64_t srows_image = g.OH + halo;  // slab rows of a whole image (per phase)

  // A task covers images [n0, n0 + ni), output rows [oh0, oh0 + nrows) of each and output
  // channels [k0, k0 + kblock): about kMaxColumns output pixels (small images stacked, large
  // ones cut into blocks of rows). While there are fewer than 8 tasks the channels are split
  // first (down to 8 register panels: the GEMM stays long, only the slab is built again),
  // then the pixels (ResNet's 7x7 layer at batch 8: one task per image left 49-column GEMMs).
  constexpr int64_t MR = MicroTile<T>::MR;
  int64_t per_task = 1, block = g.OH, kblock = round_up(Kg, MR);
  if (g.OH * g.OW <= kMaxColumns) per_task = max64(1, min64(g.N, kMaxColumns / max64(1, g.OH * g.OW)));
  else block = line_rows<T>(g, max64(1, min64(g.OH, kMaxColumns / g.OW)));
  auto tasks = [&] { return g.groups * ceil_div(g.N, per_task) * ceil_div(g.OH, block) * ceil_div(Kg, kblock); };
  while (tasks() < 8 && kblock > 8 * MR) kblock = round_up(kblock / 2, MR);
  while (tasks() < 8 && per_task > 1) per_task = ceil_div(per_task, 2);
  while (tasks() < 8 && block > 1) block = ceil_div(block, 2);
  const int64_t image_tasks = ceil_div(g.N, per_task), nblocks = ceil_div(g.OH, block), kblocks = ceil_div(Kg, kblock);

  const int64_t per_group = packed_a_size<T>(Kg, rows);
  T* packed_w = static_cast<T*>(thread_workspace(sizeof(T) * per_group * g.groups, kSlotShared));
  pack_a_parallel<T>(
      g.groups, rows, rows, 1, [&](int64_t gi) { return std::make_pair(w + gi * Kg * rows, Kg); }, packed_w, per_group,
      threads);

  parallel_tasks(g.groups * image_tasks * nblocks * kblocks, threads, [&](int64_t task) {
    const int64_t kb = task % kblocks, rest = task / kblocks;
    const int64_t gi = rest / (image_tasks * nblocks), it = (rest / nblocks) % image_tasks;
    const int64_t n0 = it * per_task, ni = min64(per_task, g.N - n0), oh0 = (rest % nblocks) * block;
    const int64_t k0 = kb * kblock, nk = min64(kblock, Kg - k0);
    const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo;
    const int64_t plane = nrows * g.OW, columns = ni * plane, ldb = round_up(columns, NR);

    // [c][phase][image][row][Wp], plus NR elements of slack read past the last slab.
    const int64_t phase_stride = ni * srows * Wp, channel_stride = phases * phase_stride;
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * (Cg * channel_stride + NR), kSlotPackA));
    for (int64_t j = 0; j < ni; ++j)
      build_slabs(g, x + ((n0 + j) * g.C + gi * Cg) * g.H * g.W, Cg, oh0, srows, Wp, slab + j * srows * Wp,
                  channel_stride, phase_stride);
    for (int64_t e = 0; e < NR; ++e) slab[Cg * channel_stride + e] = T(0);

    // B's columns are the task's output pixels; column (image j, row i, ow) of tap (c, r, s) is
    // slab element tap_offset + (j*srows + i)*Wp + ow, so a panel's columns are runs (segments)
    // that break where an output row or image ends. The dropped columns of the wide layout are
    // never computed.
    const int64_t npanels = ldb / NR, max_segments = npanels * (NR / max64(g.OW, 1) + 2);
    char* tables = static_cast<char*>(thread_workspace(
        sizeof(T*) * rows + sizeof(int64_t) * max_segments + sizeof(int32_t) * (max_segments + npanels + 1),
        kSlotTile));
    const T** patch_rows = reinterpret_cast<const T**>(tables);
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s)
          patch_rows[(c * g.R + r) * g.S + s] = slab + c * channel_stride + tap_offset(g, Wp, phase_stride, r, s);
    const T* packed_a = packed_w + gi * per_group + k0 * rows;  // k0 is a multiple of MR: a panel boundary
    const T* task_bias = bias ? bias + gi * Kg + k0 : nullptr;
    T* y_task = y + ((n0 * g.K + gi * Kg + k0) * g.OH + oh0) * g.OW;  // image n0's first output channel
    if (ni == 1 && g.OW % NR == 0) {
      // Every NR-column panel is one run of the slab: B is read in place, C written into y.
      const auto b_panel = [&](int64_t j, int64_t k, int64_t) {
        return SlabRows<T>{patch_rows + k, (j / g.OW) * Wp + j % g.OW};
      };
      gemm_direct<T>(nk, columns, rows, packed_a, b_panel, task_bias, y_task, g.OH * g.OW, streams_output<T>(g));
      return;
    }
    int64_t* seg_src = reinterpret_cast<int64_t*>(tables + sizeof(T*) * rows);
    int32_t* seg_dst = reinterpret_cast<int32_t*>(seg_src + max_segments);
    int32_t* seg_first = seg_dst + max_segments;
    int32_t nseg = 0;
    // Column q is (image j, row i, ow), counted along rather than divided out (three
    // divisions a column were a sixtieth of decoder.tconv2's grad_x).
    for (int64_t q = 0, j = 0, i = 0, ow = 0; q < columns; ++q) {
      if (q % NR == 0) seg_first[q / NR] = nseg;
      if (q % NR == 0 || ow == 0) {
        seg_dst[nseg] = static_cast<int32_t>(q % NR);
        seg_src[nseg] = (j * srows + i) * Wp + ow;
        ++nseg;
      }
      if (++ow == g.OW) {
        ow = 0;
        if (++i == nrows) i = 0, ++j;
      }
    }
    seg_first[npanels] = nseg;

    if (ni == 1 && kc_block(rows) == rows) {
      // One image and one reduction block: its output block for channel k is one run of y, so C
      // is still written into y, B's panels packed (pack_segment_panel) as the GEMM reaches them.
      // Writing C to a tile and copying it out cost a tenth of a 3-channel conv with a 12 MB
      // output (decoder.tconv2's grad_x); over several reduction blocks, though, C is read back
      // each block, and that was faster from the tile (deeplab's dilated layer: 10.1 vs 10.6 ms).
      T* panel = static_cast<T*>(thread_workspace(sizeof(T) * (kMaxKC + 1) * NR, kSlotTile2));
      const auto b_panel = [&](int64_t j, int64_t k, int64_t kc) {
        pack_segment_panel<T>(kc, patch_rows + k, seg_first[j / NR], seg_first[j / NR + 1], seg_dst, seg_src, panel);
        return StridedRows<T>{panel, NR};
      };
      gemm_direct<T>(nk, columns, rows, packed_a, b_panel, task_bias, y_task, g.OH * g.OW, streams_output<T>(g));
      return;
    }
    T* result = static_cast<T*>(thread_workspace(sizeof(T) * (nk * ldb + (kMaxKC + 1) * NR), kSlotTile2));
    gemm_packed_segments<T>(nk, columns, rows, packed_a, patch_rows, seg_first, seg_dst, seg_src, result, ldb,
                            result + nk * ldb);

    for (int64_t kk = 0; kk < nk; ++kk) {
      const int64_t k = k0 + kk;
      const T b = bias ? bias[gi * Kg + k] : T(0);
      for (int64_t j = 0; j < ni; ++j) {
        T* out = y + (((n0 + j) * g.K + gi * Kg + k) * g.OH + oh0) * g.OW;
        const T* src = result + kk * ldb + j * plane;
        for (int64_t e = 0; e < plane; ++e) out[e] = src[e] + b;
      }
    }
  });
}

template void conv_forward_wide<float>(const ConvGeom&, const float*, const float*, const float*, float*, int);
template void conv_forward_wide<double>(const ConvGeom&, const double*, const double*, const double*, double*, int);

}  // namespace FC_ISA
}  // namespace fastconv
