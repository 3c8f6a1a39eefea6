// Winograd F(2x2, 3x3) for 3x3 kernels at stride 1, dilation 1 (Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016): forward (which the Python side also runs
// as backward-data with the flipped kernel), its adjoint (backward-data over the forward's
// tiles) and backward-weight.
//
// Forward: each 2x2 output tile needs 16 multiplies per (k, c) instead of 36. With U = G w G^T
// (the 4x4 transformed kernel) and V = B^T d B (the transformed 4x4 input tile d), the tile is
// A^T [sum_c U[k,c] (.) V[c]] A. The sums over c are 16 GEMMs, one per position xi of the 4x4
// transform, run with the packed micro-kernel; tiles are the GEMMs' columns.
// Backward-weight: differentiating that bilinear form, grad_w = G^T [sum_t Z_t (.) V_t] G with
// Z_t = A gy_t A^T, the transformed 2x2 grad_out tile: 16 GEMMs whose reduction runs over the
// tiles.
//
// The transforms run on vectors of tiles along a tile row. A channel's input rows are split
// into even and odd columns first, so each of a tile's 16 inputs, for L tiles side by side, is
// one contiguous load: d[i][0], d[i][2] from the even half (tw, tw + 1), d[i][1], d[i][3] from
// the odd half. A tile row's last vector may run past the row; its extra lanes land on the next
// row's tiles (overwritten when that row is done, in order) or on slack past the block; every
// task transforms into its own buffer.
// Coefficients are 0, +-1, +-1/2 only: the error stays within a few roundoffs of the direct sum.
//
// The transforms subtract inputs, so an infinite input would give inf - inf = NaN where the
// direct sum gives +-inf (PyTorch's answer): such inputs go to the implicit GEMM instead (kernel_table.cpp's
// finite_inputs_or_direct; for backward-weight, a result that is not all finite: finite_or_direct).
// Every output element is produced by one task in an order fixed by the shape, and the
// backward-weight's per-chunk partial sums are added in chunk order: thread-count independent.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "winograd.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {

struct Tiling {
  int64_t tiles_h, tiles_w;  // 2x2 output tiles per image
  int64_t tiles_w_l;         // tiles_w rounded up to whole vectors
  int64_t U;                 // width of a split row half: the vectors of a tile row read up to U
};

inline Tiling tiling(const ConvGeom& g, int64_t lanes) {
  const int64_t tw = ceil_div(g.OW, 2);
  return {ceil_div(g.OH, 2), tw, round_up(tw, lanes), round_up(tw, lanes) + lanes};
}

// Rows ih0 .. ih0 + nrows - 1 of a plane split by column parity: out[2r*U + u] = x[ih][2u - pw],
// out[(2r + 1)*U + u] = x[ih][2u + 1 - pw], zero outside the plane. U is a multiple of L.
template <class T>
void split_rows(const T* plane, int64_t H, int64_t W, int64_t pw, int64_t ih0, int64_t nrows, int64_t U, T* out) {
  for (int64_t r = 0; r < nrows; ++r) {
    T* even = out + 2 * r * U;
    const int64_t ih = ih0 + r;
    if (ih < 0 || ih >= H) {
      std::memset(even, 0, sizeof(T) * 2 * U);
      continue;
    }
    split_row_parities(plane + ih * W, W, pw, U, U, even);
  }
}

// V = B^T d B for the tiles of one tile row, L at a time; `split` holds its 4 input rows
// (split_rows), V[xi] lands at v + xi * xi_stride + tw. B^T rows: (1,0,-1,0), (0,1,1,0),
// (0,-1,1,0), (0,1,0,-1). The last vector's lanes past the row are stored too (see the top).
template <class T>
void input_transform_row(const T* split, int64_t U, int64_t tiles_w, T* v, int64_t xi_stride) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  for (int64_t tw = 0; tw < tiles_w; tw += L) {
    V d[4][4];
    for (int i = 0; i < 4; ++i) {
      const T* even = split + 2 * i * U + tw;
      const T* odd = even + U;
      d[i][0] = load(even);
      d[i][1] = load(odd);
      d[i][2] = load(even + 1);
      d[i][3] = load(odd + 1);
    }
    V r[4][4];  // B^T d
    for (int j = 0; j < 4; ++j) {
      r[0][j] = d[0][j] - d[2][j];
      r[1][j] = d[1][j] + d[2][j];
      r[2][j] = d[2][j] - d[1][j];
      r[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B
      T* out = v + 4 * i * xi_stride + tw;
      store(out, r[i][0] - r[i][2]);
      store(out + xi_stride, r[i][1] + r[i][2]);
      store(out + 2 * xi_stride, r[i][2] - r[i][1]);
      store(out + 3 * xi_stride, r[i][1] - r[i][3]);
    }
  }
}

// Z = A gy A^T for one 2x2 grad_out tile given as vectors (lane-wise: tiles or channels),
// gt[i][j] = gy row i, column j; Z[xi] stored at out + xi * xi_stride. A's rows (1,0), (1,1),
// (1,-1), (0,-1).
template <class T>
inline void grad_out_transform(const VecOf<T> (&gt)[2][2], T* out, int64_t xi_stride) {
  typedef VecOf<T> V;
  V zr[2][4];  // gy A^T, per grad_out row
  for (int a = 0; a < 2; ++a) {
    zr[a][0] = gt[a][0];
    zr[a][1] = gt[a][0] + gt[a][1];
    zr[a][2] = gt[a][0] - gt[a][1];
    zr[a][3] = -gt[a][1];
  }
  for (int b = 0; b < 4; ++b) {
    store(out + (0 * 4 + b) * xi_stride, zr[0][b]);
    store(out + (1 * 4 + b) * xi_stride, zr[0][b] + zr[1][b]);
    store(out + (2 * 4 + b) * xi_stride, zr[0][b] - zr[1][b]);
    store(out + (3 * 4 + b) * xi_stride, -zr[1][b]);
  }
}

// U = G w G^T, all 16 positions xi, for the (k, c) of one MR-row panel of one group, straight
// into pack_a's panels (xi's packed matrix at packed + xi * per_xi): rows k and columns c, or
// (transposed) rows c and columns k. Rows of G: (1,0,0), (1/2,1/2,1/2), (1/2,-1/2,1/2), (0,0,1).
template <class T>
void weight_transform_panel(const T* w, int64_t Kg, int64_t Cg, int64_t r0, bool transposed, T* packed,
                            int64_t per_xi) {
  constexpr int64_t MR = MicroTile<T>::MR;
  const int64_t rows = transposed ? Cg : Kg, cols = transposed ? Kg : Cg;
  for (int64_t col = 0; col < cols; ++col)
    for (int64_t i = 0; i < MR; ++i) {
      T u[4][4] = {};
      if (r0 + i < rows) {
        const int64_t k = transposed ? col : r0 + i, c = transposed ? r0 + i : col;
        const T* f = w + (k * Cg + c) * 9;
        T gf[4][3];  // G f
        for (int s = 0; s < 3; ++s) {
          gf[0][s] = f[s];
          gf[1][s] = T(0.5) * (f[s] + f[3 + s] + f[6 + s]);
          gf[2][s] = T(0.5) * (f[s] - f[3 + s] + f[6 + s]);
          gf[3][s] = f[6 + s];
        }
        for (int a = 0; a < 4; ++a) {  // (G f) G^T
          u[a][0] = gf[a][0];
          u[a][1] = T(0.5) * (gf[a][0] + gf[a][1] + gf[a][2]);
          u[a][2] = T(0.5) * (gf[a][0] - gf[a][1] + gf[a][2]);
          u[a][3] = gf[a][2];
        }
      }
      for (int xi = 0; xi < 16; ++xi) packed[xi * per_xi + r0 * cols + col * MR + i] = u[xi / 4][xi % 4];
    }
}

}  // namespace

template <class T>
void conv_forward_winograd_f23(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW;
  const Tiling tl = tiling(g, L);
  const int64_t tile_rows = g.N * tl.tiles_h;
  if (tile_rows == 0 || tl.tiles_w == 0) return;

  const int64_t per_xi = packed_a_size<T>(Kg, Cg);
  T* packed_u = static_cast<T*>(thread_workspace(sizeof(T) * 16 * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, false, packed_u, per_xi, 16, threads, weight_transform_panel<T>);

  // A task: a block of tile rows (crossing images) of one group.
  const int64_t block = winograd_task_block(16 * (Cg + Kg) * tl.tiles_w * int64_t(sizeof(T)), tile_rows, g.groups);
  const int64_t nblocks = ceil_div(tile_rows, block);

  parallel_tasks(g.groups * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / nblocks, r0 = (task % nblocks) * block, r1 = min64(r0 + block, tile_rows);
    const int64_t nt = (r1 - r0) * tl.tiles_w;
    const int64_t ld = round_up(nt + L, NR);  // slack for the last row's extra lanes
    // The 16 planes of V and M one cache line off a multiple of 4 KiB apart: at 4 KiB multiples
    // the output transform's 16 loads all fell in one L1 set.
    const int64_t vs = Cg * ld + kSkew<T>, ms = Kg * ld + kSkew<T>;
    T* v = static_cast<T*>(thread_workspace(sizeof(T) * 16 * vs, kSlotTile));
    T* m = static_cast<T*>(thread_workspace(sizeof(T) * 16 * ms, kSlotTile2));
    T* split = static_cast<T*>(thread_workspace(sizeof(T) * (2 * block + 2) * 2 * tl.U, kSlotPackA));

    // V[xi][c][t]: per channel, per run of tile rows within one image, its input rows split once.
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = r0; r < r1;) {
        const int64_t n = r / tl.tiles_h, th0 = r % tl.tiles_h, rows = min64(r1 - r, tl.tiles_h - th0);
        split_rows(x + (n * g.C + gi * Cg + c) * g.H * g.W, g.H, g.W, g.pw, 2 * th0 - g.ph, 2 * rows + 2, tl.U,
                   split);
        for (int64_t i = 0; i < rows; ++i)
          input_transform_row(split + 4 * i * tl.U, tl.U, tl.tiles_w, v + c * ld + (r - r0 + i) * tl.tiles_w,
                              vs);
        r += rows;
      }
    for (int xi = 0; xi < 16; ++xi)
      gemm_packed<T>(Kg, nt, Cg, packed_u + (gi * 16 + xi) * per_xi, v + xi * vs, ld, m + xi * ms, ld,
                     false);

    // Y = A^T M A, A^T rows (1,1,1,0), (0,1,-1,-1), two output rows per tile row, clipped at
    // the bottom and right edges.
    for (int64_t k = 0; k < Kg; ++k) {
      const V b = V{} + (bias ? bias[gi * Kg + k] : T(0));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / tl.tiles_h, th = r % tl.tiles_h;
        T* out = y + (n * g.K + gi * Kg + k) * P + 2 * th * g.OW;
        const T* mrow = m + k * ld + (r - r0) * tl.tiles_w;
        for (int64_t tw = 0; tw < tl.tiles_w; tw += L) {
          V mm[4][4];
          for (int xi = 0; xi < 16; ++xi) mm[xi / 4][xi % 4] = load(mrow + xi * ms + tw);
          V q[2][4];
          for (int j = 0; j < 4; ++j) {
            q[0][j] = mm[0][j] + mm[1][j] + mm[2][j];
            q[1][j] = mm[1][j] - mm[2][j] - mm[3][j];
          }
          const int64_t cols = min64(2 * L, g.OW - 2 * tw);
          for (int i = 0; i < 2 && 2 * th + i < g.OH; ++i) {
            V lo, hi;
            interleave(q[i][0] + q[i][1] + q[i][2] + b, q[i][1] - q[i][2] - q[i][3] + b, lo, hi);
            T* o = out + i * g.OW + 2 * tw;
            store_lanes(o, lo, cols);
            store_lanes(o + L, hi, cols - L);
          }
        }
      }
    }
  });
}

// Backward-data as the adjoint of the forward algorithm (no flipped-kernel forward): with
// Z_t = A gy_t A^T, dV_t[c] = sum_k U[k,c] (.) Z_t[k] (16 GEMMs, U^T as A), and each tile's
// dd_t = B dV_t B^T is added into grad_x where the forward read d_t. Over the forward's tiles,
// not the flipped-kernel forward's: for a valid conv (MNIST's 11x11 -> 13x13) 36 tiles per
// image instead of 49. Input tiles overlap (4x4 at stride 2), so a task takes whole images and
// adds each image's tiles in order into one accumulator per channel (rows split by column
// parity, as split_rows reads them).
template <class T>
void conv_backward_data_winograd_f23(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, OHW = g.OH * g.OW, HW = g.H * g.W;
  const Tiling tl = tiling(g, L);
  const int64_t per_image = tl.tiles_h * tl.tiles_w;
  if (g.N * g.C * HW == 0) return;
  if (per_image == 0)
    return conv_backward_data<T>(g, gy, w, bias, gx, threads);

  const int64_t per_xi = packed_a_size<T>(Cg, Kg);
  T* packed_ut = static_cast<T*>(thread_workspace(sizeof(T) * 16 * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, true, packed_ut, per_xi, 16, threads, weight_transform_panel<T>);

  // A task: a block of whole images of one group.
  const int64_t block = winograd_task_block(16 * (Cg + Kg) * per_image * int64_t(sizeof(T)), g.N, g.groups);
  const int64_t nblocks = ceil_div(g.N, block);
  const int64_t acc_rows = 2 * tl.tiles_h + 2;

  parallel_tasks(g.groups * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / nblocks, n0 = (task % nblocks) * block, n1 = min64(n0 + block, g.N);
    const int64_t nt = (n1 - n0) * per_image;
    const int64_t ld = round_up(nt + L, NR);  // slack for the last row's extra lanes
    const int64_t zs = Kg * ld + kSkew<T>, ds = Cg * ld + kSkew<T>;
    T* z = static_cast<T*>(thread_workspace(sizeof(T) * 16 * zs, kSlotTile));
    T* dv = static_cast<T*>(thread_workspace(sizeof(T) * 16 * ds, kSlotTile2));
    T* work = static_cast<T*>(thread_workspace(sizeof(T) * (2 * tl.tiles_h * 2 * tl.U + acc_rows * 2 * tl.U + 2 * tl.U),
                                               kSlotPackA));
    T* split = work;                                 // one grad_out plane, rows split by parity
    T* acc = split + 2 * tl.tiles_h * 2 * tl.U;      // one grad_x plane, rows split by parity
    T* row = acc + acc_rows * 2 * tl.U;              // one grad_x row, interleaved

    // Z[xi][k][t], on vectors of tiles.
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t n = n0; n < n1; ++n) {
        split_rows(gy + (n * g.K + gi * Kg + k) * OHW, g.OH, g.OW, 0, 0, 2 * tl.tiles_h, tl.U, split);
        for (int64_t th = 0; th < tl.tiles_h; ++th) {
          const T* sr = split + 4 * th * tl.U;
          T* zt = z + k * ld + (n - n0) * per_image + th * tl.tiles_w;
          for (int64_t tw = 0; tw < tl.tiles_w; tw += L) {
            const V gt[2][2] = {{load(sr + tw), load(sr + tl.U + tw)}, {load(sr + 2 * tl.U + tw), load(sr + 3 * tl.U + tw)}};
            grad_out_transform<T>(gt, zt + tw, zs);
          }
        }
      }
    for (int xi = 0; xi < 16; ++xi)
      gemm_packed<T>(Cg, nt, Kg, packed_ut + (gi * 16 + xi) * per_xi, z + xi * zs, ld, dv + xi * ds, ld, false);

    // dd = B dV B^T (B^T's rows (1,0,-1,0), (0,1,1,0), (0,-1,1,0), (0,1,0,-1), transposed),
    // added into the accumulator: tile (th, tw) covers its rows 2th .. 2th + 3 and, per row,
    // even[tw], odd[tw], even[tw + 1], odd[tw + 1]. Lanes past the tile row are masked off.
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t n = n0; n < n1; ++n) {
        std::memset(acc, 0, sizeof(T) * acc_rows * 2 * tl.U);
        for (int64_t th = 0; th < tl.tiles_h; ++th) {
          const T* src = dv + c * ld + (n - n0) * per_image + th * tl.tiles_w;
          for (int64_t tw = 0; tw < tl.tiles_w; tw += L) {
            V m[4][4];
            for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = keep_lanes(load(src + xi * ds + tw), tl.tiles_w - tw);
            V q[4][4];  // B dV
            for (int j = 0; j < 4; ++j) {
              q[0][j] = m[0][j];
              q[1][j] = m[1][j] - m[2][j] + m[3][j];
              q[2][j] = m[1][j] + m[2][j] - m[0][j];
              q[3][j] = -m[3][j];
            }
            for (int i = 0; i < 4; ++i) {  // (B dV) B^T, into row 2th + i
              T* even = acc + (2 * th + i) * 2 * tl.U + tw;
              T* odd = even + tl.U;
              store(even, load(even) + q[i][0]);
              store(odd, load(odd) + (q[i][1] - q[i][2] + q[i][3]));
              store(even + 1, load(even + 1) + (q[i][1] + q[i][2] - q[i][0]));
              store(odd + 1, load(odd + 1) - q[i][3]);
            }
          }
        }
        // grad_x row ih is accumulator row ih + ph, column iw its column iw + pw.
        const T b = bias ? bias[gi * Cg + c] : T(0);
        T* out = gx + (n * g.C + gi * Cg + c) * HW;
        for (int64_t ih = 0; ih < g.H; ++ih) {
          const T* even = acc + (ih + g.ph) * 2 * tl.U;
          for (int64_t u = 0; u < tl.U; u += L) {
            V lo, hi;
            interleave(load(even + u), load(even + tl.U + u), lo, hi);
            store(row + 2 * u, lo);
            store(row + 2 * u + L, hi);
          }
          for (int64_t iw = 0; iw < g.W; ++iw) out[ih * g.W + iw] = row[iw + g.pw] + b;
        }
      }
  });
}

template <class T>
void conv_backward_weight_winograd_f23(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, OHW = g.OH * g.OW;
  const Tiling tl = tiling(g, L);
  const int64_t tile_rows = g.N * tl.tiles_h;
  if (tile_rows == 0 || tl.tiles_w == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * Cg * 9);
    return;
  }

  // Per position xi, M^T[c][k] = sum over tiles t of V[c][t] Z[k][t]: a GEMM with the tiles as
  // its reduction, A = V (packed from the transform's [c][t] rows), B = Z^T [t][k] (the grad_out
  // transform run on vectors of k, from grad_out rows laid out channel-last).
  // Tasks: (group, chunk of tile rows, block of channels); each sums its chunk into its own
  // partial M (the partials are added in chunk order at the end), window by window, a window's
  // transforms (all 16 xi) sized to stay in L2 next to the GEMMs that read them.
  const int64_t KW = round_up(Kg, NR);
  const int64_t msize = 16 * Cg * Kg;  // one group's M, [xi][c][k]
  const Chunks chunks = weight_chunks(tile_rows, msize);
  const int64_t nchunks = chunks.count, per_chunk = chunks.per;
  int64_t cblocks = 1;  // channel blocks (whole MR panels) while there are fewer than 8 tasks
  while (g.groups * nchunks * cblocks < 8 && cblocks * 2 * MR <= Cg) cblocks *= 2;
  const int64_t cper = round_up(ceil_div(Cg, cblocks), MR);
  cblocks = ceil_div(Cg, cper);

  T* partials = static_cast<T*>(thread_workspace(sizeof(T) * g.groups * nchunks * msize, kSlotShared));
  const int64_t per_gi = nchunks * cblocks;
  parallel_tasks(g.groups * per_gi, threads, [&](int64_t task) {
    const int64_t gi = task / per_gi, chunk = (task / cblocks) % nchunks, cb = task % cblocks;
    const int64_t c0 = cb * cper, nc = min64(cper, Cg - c0);
    const int64_t r_begin = chunk * per_chunk, r_end = min64(r_begin + per_chunk, tile_rows);
    // A window of tile rows: V rows [xi][c][t], V packed, Z^T [xi][t][k], grad_out rows
    // channel-last for one tile row, and the split input rows.
    const int64_t row_bytes = 16 * tl.tiles_w * (2 * round_up(nc, MR) + KW) * int64_t(sizeof(T));
    const int64_t wrows = max64(1, min64(kWindowBytes / row_bytes, r_end - r_begin));
    const int64_t ldv = round_up(wrows * tl.tiles_w + L, L), vs = nc * ldv + kSkew<T>;
    const int64_t packed_size = packed_a_size<T>(nc, wrows * tl.tiles_w) + kSkew<T>;
    const int64_t zs = wrows * tl.tiles_w * KW + kSkew<T>;
    const int64_t gyt_row = 2 * tl.tiles_w_l * KW, gyt_size = 2 * gyt_row, split_size = (2 * wrows + 2) * 2 * tl.U;
    T* v = static_cast<T*>(thread_workspace(
        sizeof(T) * (16 * vs + 16 * packed_size + 16 * zs + gyt_size + split_size), kSlotTile));
    T* packed = v + 16 * vs;
    T* zt = packed + 16 * packed_size;
    T* gyt = zt + 16 * zs;
    T* split = gyt + gyt_size;
    T* m = partials + (gi * nchunks + chunk) * msize;

    for (int64_t w0 = r_begin; w0 < r_end; w0 += wrows) {
      const int64_t w1 = min64(w0 + wrows, r_end), nt = (w1 - w0) * tl.tiles_w;
      for (int64_t c = 0; c < nc; ++c)
        for (int64_t r = w0; r < w1;) {
          const int64_t n = r / tl.tiles_h, th0 = r % tl.tiles_h, rows = min64(w1 - r, tl.tiles_h - th0);
          split_rows(x + (n * g.C + gi * Cg + c0 + c) * g.H * g.W, g.H, g.W, g.pw, 2 * th0 - g.ph, 2 * rows + 2,
                     tl.U, split);
          for (int64_t i = 0; i < rows; ++i)
            input_transform_row(split + 4 * i * tl.U, tl.U, tl.tiles_w, v + c * ldv + (r - w0 + i) * tl.tiles_w, vs);
          r += rows;
        }
      for (int xi = 0; xi < 16; ++xi) pack_a<T>(nc, nt, v + xi * vs, ldv, 1, packed + xi * packed_size);

      // Z on vectors of k: gyt[i][ow][k] holds grad_out rows 2th + i, zero past OH, OW and Kg.
      for (int64_t r = w0; r < w1; ++r) {
        const int64_t n = r / tl.tiles_h, th = r % tl.tiles_h;
        for (int i = 0; i < 2; ++i) {
          const int64_t oh = 2 * th + i;
          T* dst = gyt + i * gyt_row;
          if (oh >= g.OH) {
            std::memset(dst, 0, sizeof(T) * gyt_row);
            continue;
          }
          const T* src = gy + (n * g.K + gi * Kg) * OHW + oh * g.OW;
          rows_channel_last(src, OHW, Kg, g.OW, 2 * tl.tiles_w_l, dst, KW);
        }
        T* z = zt + (r - w0) * tl.tiles_w * KW;
        for (int64_t tw = 0; tw < tl.tiles_w; ++tw)
          for (int64_t k = 0; k < KW; k += L) {
            const T* top = gyt + 2 * tw * KW + k;
            const V gt[2][2] = {{load(top), load(top + KW)}, {load(top + gyt_row), load(top + gyt_row + KW)}};
            grad_out_transform<T>(gt, z + tw * KW + k, zs);
          }
      }
      for (int xi = 0; xi < 16; ++xi)
        gemm_packed<T>(nc, Kg, nt, packed + xi * packed_size, zt + xi * zs, KW, m + xi * Cg * Kg + c0 * Kg, Kg,
                       w0 > r_begin);
    }
  });

  sum_chunk_partials(partials, g.groups, nchunks, msize, threads);
  // grad_w = G^T M G, G^T rows (1,1/2,1/2,0), (0,1/2,-1/2,0), (0,1/2,1/2,1).
  auto gtmul = [](int row, T m0, T m1, T m2, T m3) -> T {
    switch (row) {
      case 0: return m0 + T(0.5) * (m1 + m2);
      case 1: return T(0.5) * (m1 - m2);
      default: return T(0.5) * (m1 + m2) + m3;
    }
  };
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const T* msum = partials + gi * nchunks * msize;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < Kg; ++k) {
        T mm[4][4];
        for (int xi = 0; xi < 16; ++xi) mm[xi / 4][xi % 4] = msum[(xi * Cg + c) * Kg + k];
        T* out = gw + ((gi * Kg + k) * Cg + c) * 9;
        for (int r = 0; r < 3; ++r) {
          T row[4];
          for (int b = 0; b < 4; ++b) row[b] = gtmul(r, mm[0][b], mm[1][b], mm[2][b], mm[3][b]);
          for (int s = 0; s < 3; ++s) out[r * 3 + s] = gtmul(s, row[0], row[1], row[2], row[3]);
        }
      }
  }
}

#define FC_INSTANTIATE(T)                                                                                     \
  template void conv_forward_winograd_f23<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);         \
  template void conv_backward_data_winograd_f23<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_winograd_f23<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
