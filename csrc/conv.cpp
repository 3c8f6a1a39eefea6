// Convolution forward, backward-data and backward-weight as tiled implicit GEMM.
//
// Every driver splits its work into a fixed list of independent tasks that depends on the
// shape only, never on the thread count, and each output element is produced by exactly one
// task with a fixed summation order: results are identical for any number of threads.
// Tasks split over groups, output-channel blocks and tiles of the flattened (image, pixel)
// columns, so both cores work at batch 1 and tiny planes still make long GEMMs.
//
// Scratch per task is one tile (bounded by the tile-size rules below, never by the batch)
// from the per-thread workspace arena.
#include <omp.h>

#include <new>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "subpixel.h"
#include "tasks.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {
namespace {

// A patch tile of rows x tile columns is kept under ~2 MiB (it is read once, panel by panel,
// so it need not fit in L2); wider tiles let each KC slice of the packed weights, which does
// sit in L2, serve more columns. Tiles shrink (to one NR panel at least) until there are
// 8 tasks or more so two cores stay busy on small problems.
constexpr int64_t kPatchBytes = 2 << 20;
constexpr int64_t kMaxTile = 512;

template <class T>
int64_t choose_tile(int64_t rows, int64_t columns, int64_t outer_tasks) {
  constexpr int64_t NR = MicroTile<T>::NR;
  int64_t tile = kPatchBytes / (max64(rows, 1) * int64_t(sizeof(T)));
  tile = min64(max64(tile / NR * NR, NR), kMaxTile);
  tile = min64(tile, round_up(max64(columns, 1), NR));
  while (outer_tasks * ceil_div(columns, tile) < 8 && tile > NR) tile = max64(NR, round_up(tile / 2, NR));
  return tile;
}

// Tap offsets and column ranges of a conv's patch matrix over its input x.
struct Taps {
  int64_t* offs_h;
  int64_t* offs_w;
  int64_t* col_lo;
  int64_t* col_hi;
  static int64_t ints(const ConvGeom& g) { return g.R + 3 * g.S; }
};

Taps input_taps(const ConvGeom& g, int64_t* mem) {
  Taps t{mem, mem + g.R, mem + g.R + g.S, mem + g.R + 2 * g.S};
  for (int64_t r = 0; r < g.R; ++r) t.offs_h[r] = r * g.dh - g.ph;
  for (int64_t s = 0; s < g.S; ++s) t.offs_w[s] = s * g.dw - g.pw;
  column_ranges(g.S, t.offs_w, g.sw, g.W, g.OW, t.col_lo, t.col_hi);
  return t;
}

PatchSpec input_patch_spec(const ConvGeom& g, const Taps& t) {
  return {g.H, g.W, g.C * g.H * g.W, g.R, g.S, g.sh, g.sw, g.OH, g.OW, t.offs_h, t.offs_w, t.col_lo, t.col_hi};
}

// Copy a Kg x nq result tile (row stride ldr) to y[n][k][p] for the columns q0.. of the
// flattened (n, p) space, adding bias[k] when given.
template <class T>
void scatter_columns(const T* result, int64_t ldr, int64_t rows, int64_t q0, int64_t nq, T* y, int64_t image_stride,
                     int64_t plane, const T* bias) {
  int64_t n = q0 / plane, p = q0 % plane, t = 0;
  while (t < nq) {
    const int64_t seg = min64(nq - t, plane - p);
    for (int64_t k = 0; k < rows; ++k) {
      const T* src = result + k * ldr + t;
      T* dst = y + n * image_stride + k * plane + p;
      const T b = bias ? bias[k] : T(0);
      for (int64_t u = 0; u < seg; ++u) dst[u] = src[u] + b;
    }
    t += seg;
    p = 0;
    ++n;
  }
}

}  // namespace

template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S, P = g.OH * g.OW;
  const int64_t columns = g.N * P;
  // Shared: the tap tables, then the weights packed once into MR-row panels per group.
  const int64_t table_bytes = round_up(sizeof(int64_t) * Taps::ints(g), 64), per_group = packed_a_size<T>(Kg, rows);
  char* shared = static_cast<char*>(thread_workspace(table_bytes + sizeof(T) * per_group * g.groups, kSlotShared));
  const Taps taps = input_taps(g, reinterpret_cast<int64_t*>(shared));
  T* packed_w = reinterpret_cast<T*>(shared + table_bytes);
  pack_a_parallel<T>(
      g.groups, rows, rows, 1, [&](int64_t gi) { return std::make_pair(w + gi * Kg * rows, Kg); }, packed_w, per_group,
      threads);
  const PatchSpec spec = input_patch_spec(g, taps);
  const int64_t tile = choose_tile<T>(rows, columns, g.groups), ntiles = ceil_div(columns, tile);

  parallel_tasks(g.groups * ntiles, threads, [&](int64_t task) {
    const int64_t gi = task / ntiles, q0 = (task % ntiles) * tile;
    const int64_t nq = min64(tile, columns - q0), ldb = b_row_stride<T>(nq);
    T* patches = static_cast<T*>(thread_workspace(sizeof(T) * rows * ldb, kSlotTile));
    T* result = static_cast<T*>(thread_workspace(sizeof(T) * Kg * ldb, kSlotTile2));
    gather_patch(spec, x + gi * Cg * g.H * g.W, 0, rows, q0, nq, patches, 1, ldb, 0, 1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = nq; t < ldb; ++t) patches[r * ldb + t] = T(0);
    gemm_packed<T>(Kg, nq, rows, packed_w + gi * per_group, patches, ldb, result, ldb, false);
    scatter_columns(result, ldb, Kg, q0, nq, y + gi * Kg * P, g.K * P, P, bias ? bias + gi * Kg : nullptr);
  });
}

// Backward-data (also the transposed convolution's forward), without zero insertion.
// Input pixels are split into stride_h x stride_w phases by (ih mod sh, iw mod sw); within a
// phase only the taps r with (ih + ph - r*dh) divisible by sh reach it, at output row
// oh = u + (a + ph - r*dh)/sh for the phase's u-th row, so each phase is a dense stride-1
// correlation of grad_out with a sub-kernel (the sub-pixel decomposition). No multiply by
// an inserted zero is ever done.
template <class T>
void conv_backward_data(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t phases = g.sh * g.sw, cg_padded = round_up(Cg, MR);
  // Shared: per residue a (h: sh of them, w: sw) the tap count, the taps' grad_out offsets,
  // their kernel indices and (w only) column ranges; per phase the packed-weight offset; then
  // the packed weights of all phases.
  const int64_t table_ints = g.sh + g.sw + 2 * g.sh * g.R + 4 * g.sw * g.S + phases;
  const int64_t packed_elems = g.groups * cg_padded * Kg * g.R * g.S;
  const int64_t table_bytes = round_up(sizeof(int64_t) * table_ints, 64);
  char* shared = static_cast<char*>(thread_workspace(table_bytes + sizeof(T) * packed_elems, kSlotShared));
  int64_t* ntap_h = reinterpret_cast<int64_t*>(shared);
  int64_t* ntap_w = ntap_h + g.sh;
  int64_t* off_h = ntap_w + g.sw;       // [a][i]: the grad_out row offset of residue a's i-th tap
  int64_t* tap_h = off_h + g.sh * g.R;  // [a][i]: that tap's kernel row
  int64_t* off_w = tap_h + g.sh * g.R;
  int64_t* tap_w = off_w + g.sw * g.S;
  int64_t* lo_w = tap_w + g.sw * g.S;
  int64_t* hi_w = lo_w + g.sw * g.S;
  int64_t* phase_base = hi_w + g.sw * g.S;
  T* packed = reinterpret_cast<T*>(shared + table_bytes);

  subpixel_taps(g.sh, g.ph, g.dh, g.R, ntap_h, off_h, tap_h);
  subpixel_taps(g.sw, g.pw, g.dw, g.S, ntap_w, off_w, tap_w);
  for (int64_t a = 0; a < g.sw; ++a) {
    const int64_t cols = a < g.W ? ceil_div(g.W - a, g.sw) : 0;
    column_ranges(ntap_w[a], off_w + a * g.S, 1, g.OW, cols, lo_w + a * g.S, hi_w + a * g.S);
  }

  // Per phase and group, the Cg x (Kg*Th*Tw) matrix A[c][(k*Th + i)*Tw + j] =
  // w[group*Kg + k][c][tap_h[i]][tap_w[j]], packed into MR-row panels for gemm_packed; a
  // transposed conv producing 1-3 channels packs for the matching narrow micro-kernel.
  const int64_t mr = Cg <= 3 ? Cg : MR;
  int64_t base = 0;
  for (int64_t ph = 0; ph < phases; ++ph) {
    const int64_t ah = ph / g.sw, aw = ph % g.sw, Th = ntap_h[ah], Tw = ntap_w[aw], kd = Kg * Th * Tw;
    phase_base[ph] = base;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      T* a = packed + base + gi * cg_padded * kd;
      for (int64_t c = 0; c < round_up(Cg, mr); ++c)
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t i = 0; i < Th; ++i)
            for (int64_t j = 0; j < Tw; ++j)
              a[(c / mr) * mr * kd + ((k * Th + i) * Tw + j) * mr + c % mr] =
                  c < Cg ? w[(((gi * Kg + k) * Cg + c) * g.R + tap_h[ah * g.R + i]) * g.S + tap_w[aw * g.S + j]]
                         : T(0);
    }
    base += g.groups * cg_padded * kd;
  }

  // Tiles over each phase's flattened (image, u, v) columns; phases differ in size by at
  // most one row and column, so the tile count is taken from the largest.
  const int64_t max_cols = g.N * ceil_div(g.H, g.sh) * ceil_div(g.W, g.sw);
  const int64_t tile = choose_tile<T>(Kg * g.R * g.S / phases + 1, max_cols, g.groups * phases);
  const int64_t ntiles = ceil_div(max_cols, tile);

  parallel_tasks(g.groups * phases * ntiles, threads, [&](int64_t task) {
    const int64_t gi = task / (phases * ntiles), ph = (task / ntiles) % phases, ah = ph / g.sw, aw = ph % g.sw;
    const int64_t rows_here = ah < g.H ? ceil_div(g.H - ah, g.sh) : 0;
    const int64_t cols_here = aw < g.W ? ceil_div(g.W - aw, g.sw) : 0;
    const int64_t plane = rows_here * cols_here, columns = g.N * plane;
    const int64_t q0 = (task % ntiles) * tile;
    if (q0 >= columns) return;
    const int64_t nq = min64(tile, columns - q0), ldb = b_row_stride<T>(nq);
    const int64_t Th = ntap_h[ah], Tw = ntap_w[aw], kd = Kg * Th * Tw;

    T* patches = static_cast<T*>(thread_workspace(sizeof(T) * (kd * ldb + kBSlack<T>), kSlotTile));
    T* result = static_cast<T*>(thread_workspace(sizeof(T) * Cg * ldb, kSlotTile2));
    const PatchSpec spec{g.OH, g.OW, g.K * P, Th, Tw, 1, 1, rows_here, cols_here,
                         off_h + ah * g.R, off_w + aw * g.S, lo_w + aw * g.S, hi_w + aw * g.S};
    gather_patch(spec, gy + gi * Kg * P, 0, kd, q0, nq, patches, 1, ldb, 0, 1);
    for (int64_t r = 0; r < kd; ++r)
      for (int64_t t = nq; t < ldb; ++t) patches[r * ldb + t] = T(0);
    const T* a = packed + phase_base[ph] + gi * cg_padded * kd;
    switch (mr) {
      case 1: gemm_packed<T, 1, 12>(Cg, nq, kd, a, patches, ldb, result, ldb, false); break;
      case 2: gemm_packed<T, 2, 6>(Cg, nq, kd, a, patches, ldb, result, ldb, false); break;
      case 3: gemm_packed<T, 3, 4>(Cg, nq, kd, a, patches, ldb, result, ldb, false); break;
      default: gemm_packed<T>(Cg, nq, kd, a, patches, ldb, result, ldb, false); break;
    }

    int64_t n = q0 / plane, u = (q0 % plane) / cols_here, v = q0 % cols_here;
    for (int64_t t = 0; t < nq; ++t) {
      T* px = gx + (n * g.C + gi * Cg) * HW + (ah + u * g.sh) * g.W + aw + v * g.sw;
      for (int64_t c = 0; c < Cg; ++c) px[c * HW] = result[c * ldb + t] + (bias ? bias[gi * Cg + c] : T(0));
      if (++v == cols_here) {
        v = 0;
        if (++u == rows_here) u = 0, ++n;
      }
    }
  });
}

// grad_w[k][c,r,s] = sum over images and output pixels of grad_out[n][k][p] * patch[c,r,s][(n,p)],
// computed as grad_w^T (rows x Kg) = patch (rows x columns) * grad_out^T when the patch has
// more rows, so the patch is gathered straight into gemm_packed's A panels and grad_out, the
// smaller operand, is the one transposed; else as grad_out * patch^T.
// Tasks own disjoint blocks of grad_w (group x run of patch-row blocks x block of k) and each
// reduces over all columns in a fixed order: no partial sums to merge, no atomics. A task takes
// a column tile of grad_out once and runs it against each of its row blocks: taking it per row
// block (as GEMM blocks) cost more than the GEMMs on DCGAN's layers, where the patch has 2-4 K
// rows in 96-row blocks.
template <class T>
void conv_backward_weight(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR, MR = MicroTile<T>::MR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S, P = g.OH * g.OW;
  const int64_t columns = g.N * P;
  int64_t* table = static_cast<int64_t*>(thread_workspace(sizeof(int64_t) * Taps::ints(g), kSlotShared));
  const Taps taps = input_taps(g, table);
  const PatchSpec spec = input_patch_spec(g, taps);

  // Row blocks of at most 16 panels (one GEMM's A or B side); k blocks of at most 32 NR-panels,
  // split further (and row blocks shrunk) while there are fewer than 8 of them; then runs of
  // row blocks, ~8 runs per (group, k block).
  int64_t row_block = min64(round_up(rows, MR), 16 * MR), k_block = min64(round_up(Kg, NR), 32 * NR);
  auto blocks = [&] { return g.groups * ceil_div(rows, row_block) * ceil_div(Kg, k_block); };
  while (blocks() < 8 && (row_block > MR || k_block > NR)) {
    if (row_block > MR) row_block = round_up(row_block / 2, MR);
    if (blocks() < 8 && k_block > NR) k_block = round_up(k_block / 2, NR);
  }
  const int64_t nrb = ceil_div(rows, row_block), nkb = ceil_div(Kg, k_block);
  const int64_t run = ceil_div(nrb, max64(1, 8 / (g.groups * nkb))), nruns = ceil_div(nrb, run);
  const int64_t tile = min64(max64(kPatchBytes / 4 / (row_block * int64_t(sizeof(T))), 64), kMaxTile);
  const int64_t ntiles = ceil_div(columns, tile);

  // Which operand is packed into A panels and which is transposed into B is chosen by size:
  // the transposed side costs a strided write per element, so it should be the smaller one
  // (grad_out when the patch has more rows than there are output channels, as in most
  // layers; the patch for first layers with 1-3 input channels).
  const bool patch_is_a = rows >= Kg;

  parallel_tasks(g.groups * nruns * nkb, threads, [&](int64_t task) {
    const int64_t gi = task / (nruns * nkb), ri = (task / nkb) % nruns, kb = task % nkb;
    const int64_t rb0 = ri * run, rb1 = min64(nrb, rb0 + run);
    const int64_t k0 = kb * k_block, nk = min64(k_block, Kg - k0);
    // Per row block, C is (A rows) x (B columns): nrows x nk, or nk x nrows; the run's C blocks
    // lie one after another in acc, c_size apart.
    const int64_t ldb = b_row_stride<T>(patch_is_a ? nk : row_block);
    const int64_t c_size = (patch_is_a ? row_block : nk) * ldb;
    T* acc = static_cast<T*>(thread_workspace(sizeof(T) * (rb1 - rb0) * c_size, kSlotTile2));
    T* a_panels = static_cast<T*>(thread_workspace(sizeof(T) * packed_a_size<T>(max64(row_block, nk), tile), kSlotTile));
    T* b_rows = static_cast<T*>(thread_workspace(sizeof(T) * tile * ldb, kSlotPackA));
    for (int64_t i = 0; i < (rb1 - rb0) * c_size; ++i) acc[i] = T(0);
    const T* xs = x + gi * Cg * g.H * g.W;
    // Zeros in A's padding rows past `valid` and B's padding columns past `valid`.
    auto pad_a = [&](int64_t valid, int64_t nq) {
      for (int64_t rr = valid; rr < round_up(valid, MR); ++rr)
        for (int64_t e = 0; e < nq; ++e) a_panels[(rr / MR) * MR * nq + e * MR + rr % MR] = T(0);
    };
    auto pad_b = [&](int64_t valid, int64_t nq) {
      for (int64_t e = 0; e < nq; ++e)
        for (int64_t c = valid; c < ldb; ++c) b_rows[e * ldb + c] = T(0);
    };
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t q0 = t * tile, nq = min64(tile, columns - q0);
      // grad_out rows k0.. of these columns, once for all the run's row blocks: as B
      // (transposed, padding columns zero) or as A panels (padding rows zero).
      int64_t n = q0 / P, p = q0 % P, u = 0;
      while (u < nq) {
        const int64_t seg = min64(nq - u, P - p);
        for (int64_t k = 0; k < nk; ++k) {
          const T* src = gy + (n * g.K + gi * Kg + k0 + k) * P + p;
          if (patch_is_a) {
            for (int64_t e = 0; e < seg; ++e) b_rows[(u + e) * ldb + k] = src[e];
          } else {
            T* dst = a_panels + (k / MR) * MR * nq + k % MR;
            for (int64_t e = 0; e < seg; ++e) dst[(u + e) * MR] = src[e];
          }
        }
        u += seg;
        p = 0;
        ++n;
      }
      if (patch_is_a)
        pad_b(nk, nq);
      else
        pad_a(nk, nq);
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const int64_t row0 = rb * row_block, nrows = min64(row_block, rows - row0);
        T* c_block = acc + (rb - rb0) * c_size;
        if (patch_is_a) {  // patch rows [row0, row0 + nrows) straight into MR-row panels
          gather_patch(spec, xs, row0, nrows, q0, nq, a_panels, MR, MR * nq, 1, MR);
          pad_a(nrows, nq);
          gemm_packed<T>(nrows, nk, nq, a_panels, b_rows, ldb, c_block, ldb, true);
        } else {  // the patch transposed: row r becomes column r of B
          gather_patch(spec, xs, row0, nrows, q0, nq, b_rows, 1, 1, 0, ldb);
          pad_b(nrows, nq);
          gemm_packed<T>(nk, nrows, nq, a_panels, b_rows, ldb, c_block, ldb, true);
        }
      }
    }
    // grad_w rows are k: write along them (writing along a patch row, 4-16 KB strides, missed the
    // TLB on every element).
    for (int64_t k = 0; k < nk; ++k)
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const T* c_block = acc + (rb - rb0) * c_size;
        T* dst = gw + (gi * Kg + k0 + k) * rows + rb * row_block;
        for (int64_t r = 0; r < min64(row_block, rows - rb * row_block); ++r)
          dst[r] = patch_is_a ? c_block[r * ldb + k] : c_block[k * ldb + r];
      }
  });
}

#define FC_INSTANTIATE(T)                                                                      \
  template void conv_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);       \
  template void conv_backward_data<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
