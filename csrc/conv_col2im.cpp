// Backward-data (also the transposed convolution's forward) as GEMM + col2im: for a tile of
// grad_out columns (image, output pixel), cols = W^T (C*R*S x K) * grad_out (K x columns) is one
// dense GEMM with exactly the products the gradient needs, whatever the stride, dilation or
// padding; each of its rows (c, r, s) is then added into grad_x at the pixels tap (r, s) of each
// column reaches. The implicit-GEMM formulations multiply zeros instead wherever a tap falls
// in the padding, which on small planes (MNIST's 3x3 grad_out padded to 7x7) is most of them.
//
// Tasks: (group, block of images, block of whole channels), so every grad_x element is owned by
// one task, which adds its taps row by row in a fixed order: results do not depend on the
// thread count. Scratch per task: one column tile of grad_out and of cols.
#include <cstring>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "tasks.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {
constexpr int64_t kTileColumns = 256;
constexpr int64_t kBlockRows = 512;
constexpr int64_t kMaxPairs = 1 << 16;
}  // namespace

template <class T>
void conv_backward_data_col2im(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, RS = g.R * g.S, P = g.OH * g.OW, HW = g.H * g.W;

  int64_t per_task = P >= kTileColumns ? 1 : max64(1, min64(g.N, kTileColumns / max64(P, 1)));
  int64_t cb = ceil_div(Cg, ceil_div(Cg, max64(1, kBlockRows / RS)));  // equal blocks
  auto tasks = [&] { return g.groups * ceil_div(g.N, per_task) * ceil_div(Cg, cb); };
  while (tasks() < 8 && (per_task > 1 || cb > 1)) {
    if (per_task > 1) per_task = ceil_div(per_task, 2);
    else cb = ceil_div(cb, 2);
  }
  const int64_t image_tasks = ceil_div(g.N, per_task), cblocks = ceil_div(Cg, cb);

  // W^T per (group, channel block): rows (c, r, s) of the block, Kg columns, in MR-row panels.
  // Shared, read by every task: the packed weights, the tap tables, the pair lists.
  const int64_t per_block = packed_a_size<T>(cb * RS, Kg);
  const bool by_pairs = P <= kTileColumns && RS * P <= kMaxPairs;
  const int64_t packed_bytes = round_up(sizeof(T) * g.groups * cblocks * per_block, 64);
  const int64_t table_bytes = round_up(sizeof(int64_t) * 3 * (g.R + g.S), 64);
  const int64_t pair_bytes = by_pairs ? sizeof(int32_t) * (RS + 1 + 2 * RS * P) : 0;
  char* shared = static_cast<char*>(thread_workspace(packed_bytes + table_bytes + pair_bytes, kSlotShared));
  T* packed = reinterpret_cast<T*>(shared);
  pack_a_parallel<T>(
      g.groups * cblocks, Kg, 1, Cg * RS,
      [&](int64_t m) {
        const int64_t gi = m / cblocks, c0 = m % cblocks * cb;
        return std::make_pair(w + gi * Kg * Cg * RS + c0 * RS, min64(cb, Cg - c0) * RS);
      },
      packed, per_block, threads);

  // Per tap row r: the output rows oh whose input row oh*sh + r*dh - ph is inside grad_x, as
  // [lo_h, hi_h), and that offset; the same per tap column.
  int64_t* tables = reinterpret_cast<int64_t*>(shared + packed_bytes);
  int64_t *Oh = tables, *Ow = Oh + g.R, *Lh = Ow + g.S, *Hh = Lh + g.R, *Lw = Hh + g.R, *Hw = Lw + g.S;
  for (int64_t r = 0; r < g.R; ++r) Oh[r] = r * g.dh - g.ph;
  for (int64_t s = 0; s < g.S; ++s) Ow[s] = s * g.dw - g.pw;
  column_ranges(g.R, Oh, g.sh, g.H, g.OH, Lh, Hh);
  column_ranges(g.S, Ow, g.sw, g.W, g.OW, Lw, Hw);

  // Small planes (a tile holds whole images): per tap, the (output pixel, input pixel) pairs
  // it connects, so col2im is a run of indexed adds instead of rows of two or three elements.
  int32_t* pair_start = nullptr;
  int32_t* pair_src = nullptr;
  int32_t* pair_dst = nullptr;
  if (by_pairs) {
    pair_start = reinterpret_cast<int32_t*>(shared + packed_bytes + table_bytes);
    pair_src = pair_start + RS + 1;
    pair_dst = pair_src + RS * P;
    int32_t e = 0;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        pair_start[r * g.S + s] = e;
        for (int64_t oh = Lh[r]; oh < Hh[r]; ++oh)
          for (int64_t ow = Lw[s]; ow < Hw[s]; ++ow) {
            pair_src[e] = static_cast<int32_t>(oh * g.OW + ow);
            pair_dst[e] = static_cast<int32_t>((oh * g.sh + Oh[r]) * g.W + ow * g.sw + Ow[s]);
            ++e;
          }
      }
    pair_start[RS] = e;
  }

  parallel_tasks(g.groups * image_tasks * cblocks, threads, [&](int64_t task) {
    const int64_t gi = task / (image_tasks * cblocks), it = (task / cblocks) % image_tasks, b = task % cblocks;
    const int64_t n0 = it * per_task, ni = min64(per_task, g.N - n0), c0 = b * cb, nc = min64(cb, Cg - c0);
    const int64_t m = nc * RS, columns = ni * P;
    const T* a = packed + (gi * cblocks + b) * per_block;

    for (int64_t j = 0; j < ni; ++j)
      for (int64_t c = 0; c < nc; ++c) {
        T* plane = gx + ((n0 + j) * g.C + gi * Cg + c0 + c) * HW;
        const T v = bias ? bias[gi * Cg + c0 + c] : T(0);
        for (int64_t e = 0; e < HW; ++e) plane[e] = v;
      }

    const int64_t tile = min64(columns, kTileColumns), ldb = b_row_stride<T>(tile);
    T* bmat = static_cast<T*>(thread_workspace(sizeof(T) * Kg * ldb, kSlotTile));
    T* cols = static_cast<T*>(thread_workspace(sizeof(T) * m * ldb, kSlotTile2));
    for (int64_t q0 = 0; q0 < columns; q0 += tile) {
      const int64_t nq = min64(tile, columns - q0);
      // grad_out's rows k over columns q0 .. q0 + nq of the task's (image, pixel) range.
      for (int64_t k = 0; k < Kg; ++k) {
        T* dst = bmat + k * ldb;
        int64_t q = q0;
        while (q < q0 + nq) {
          const int64_t j = q / P, p = q % P, seg = min64(P - p, q0 + nq - q);
          const T* src = gy + ((n0 + j) * g.K + gi * Kg + k) * P + p;
          for (int64_t e = 0; e < seg; ++e) dst[q - q0 + e] = src[e];
          q += seg;
        }
        for (int64_t e = nq; e < ldb; ++e) dst[e] = T(0);
      }
      gemm_packed<T>(m, nq, Kg, a, bmat, ldb, cols, ldb, false);

      // col2im: row (c, r, s) of cols into grad_x[image][c] at (oh*sh + off_h[r], ow*sw + off_w[s]).
      if (by_pairs) {  // the tile is whole images, q0 / P .. (q0 + nq) / P
        for (int64_t row = 0; row < m; ++row) {
          const int64_t c = row / RS, t = row % RS;
          for (int64_t j = q0 / P; j < (q0 + nq) / P; ++j) {
            const T* src = cols + row * ldb + (j * P - q0);
            T* dst = gx + ((n0 + j) * g.C + gi * Cg + c0 + c) * HW;
            for (int32_t e = pair_start[t]; e < pair_start[t + 1]; ++e) dst[pair_dst[e]] += src[pair_src[e]];
          }
        }
        continue;
      }
      for (int64_t row = 0; row < m; ++row) {
        const int64_t c = row / RS, r = (row % RS) / g.S, s = row % g.S;
        const T* src = cols + row * ldb;
        int64_t q = q0;
        while (q < q0 + nq) {
          const int64_t j = q / P, p = q % P, oh = p / g.OW, ow0 = p % g.OW;
          const int64_t seg = min64(g.OW - ow0, q0 + nq - q);  // the rest of output row oh in the tile
          if (oh >= Lh[r] && oh < Hh[r]) {
            const int64_t lo = max64(Lw[s], ow0), hi = min64(Hw[s], ow0 + seg);
            T* dst = gx + ((n0 + j) * g.C + gi * Cg + c0 + c) * HW + (oh * g.sh + Oh[r]) * g.W + Ow[s];
            const T* from = src + (q - q0) - ow0;
            if (g.sw == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += from[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow * g.sw] += from[ow];
            }
          }
          q += seg;
        }
      }
    }
  });
}

template void conv_backward_data_col2im<float>(const ConvGeom&, const float*, const float*, const float*, float*, int);
template void conv_backward_data_col2im<double>(const ConvGeom&, const double*, const double*, const double*, double*,
                                                 int);

}  // namespace FC_ISA
}  // namespace fastconv
