// Convolution forward, backward-data and backward-weight as tiled implicit GEMM.
//
// Every driver splits its work into a fixed list of independent tasks that depends on the
// shape only, never on the thread count, and each output element is produced by exactly one
// task with a fixed summation order: results are identical for any number of threads.
// Tasks split over batch, groups and tiles of output pixels (or, for backward-weight, over
// blocks of the weight gradient), so both cores work at batch 1 as well.
//
// Scratch per task is one tile (bounded by the tile-size rules below, never by the batch)
// from the per-thread workspace arena.
#include <omp.h>

#include <new>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {
namespace {

// The patch tile (rows x tile) is kept near 256 KiB so that it stays in L2 while every row
// of the weights streams past it; tiles are shrunk (down to one NR panel) until there are
// at least 8 tasks, so two cores stay busy on small problems.
template <class T>
int64_t choose_tile(int64_t rows, int64_t pixels, int64_t outer_tasks) {
  constexpr int64_t NR = MicroTile<T>::NR;
  int64_t tile = (256 * 1024) / (max64(rows, 1) * int64_t(sizeof(T)));
  tile = min64(max64(tile / NR * NR, NR), 1024);
  tile = min64(tile, round_up(max64(pixels, 1), NR));
  while (outer_tasks * ceil_div(pixels, tile) < 8 && tile > NR) tile = max64(NR, round_up(tile / 2, NR));
  return tile;
}

// Runs body(task) for task in [0, n) on `threads` OpenMP threads. An exception inside a
// parallel region would terminate the process, so it is caught there and rethrown here.
template <class Body>
void parallel_tasks(int64_t n, int threads, const Body& body) {
  int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t task = 0; task < n; ++task) {
    try {
      body(task);
    } catch (...) {
#pragma omp atomic write
      failed = 1;
    }
  }
  if (failed) throw std::bad_alloc();
}

}  // namespace

template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, taps = g.R * g.S, rows = Cg * taps, P = g.OH * g.OW;
  // Shared: the tap offsets, then the weights packed once into MR-row panels per group.
  const int64_t offs_bytes = round_up(sizeof(int64_t) * (g.R + g.S), 64), per_group = packed_a_size<T>(Kg, rows);
  char* shared = static_cast<char*>(thread_workspace(offs_bytes + sizeof(T) * per_group * g.groups, kSlotShared));
  int64_t* offs = reinterpret_cast<int64_t*>(shared);
  T* packed_w = reinterpret_cast<T*>(shared + offs_bytes);
  for (int64_t r = 0; r < g.R; ++r) offs[r] = r * g.dh - g.ph;
  for (int64_t s = 0; s < g.S; ++s) offs[g.R + s] = s * g.dw - g.pw;
  for (int64_t gi = 0; gi < g.groups; ++gi) pack_a<T>(Kg, rows, w + gi * Kg * rows, rows, 1, packed_w + gi * per_group);
  const PatchSpec spec{g.H, g.W, g.R, g.S, g.sh, g.sw, g.OW, offs, offs + g.R};
  const int64_t tile = choose_tile<T>(rows, P, g.N * g.groups), ntiles = ceil_div(P, tile);

  parallel_tasks(g.N * g.groups * ntiles, threads, [&](int64_t task) {
    const int64_t n = task / (g.groups * ntiles), gi = (task / ntiles) % g.groups, p0 = (task % ntiles) * tile;
    const int64_t np = min64(tile, P - p0), ldb = round_up(np, NR);
    T* patches = static_cast<T*>(thread_workspace(sizeof(T) * rows * ldb, kSlotTile));
    gather_patch_rows(spec, x + (n * g.C + gi * Cg) * g.H * g.W, 0, rows, p0, np, patches, ldb, 1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = np; t < ldb; ++t) patches[r * ldb + t] = T(0);
    T* out = y + (n * g.K + gi * Kg) * P + p0;
    if (bias)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t t = 0; t < np; ++t) out[k * P + t] = bias[gi * Kg + k];
    gemm_packed<T>(Kg, np, rows, packed_w + gi * per_group, patches, ldb, out, P, bias != nullptr);
  });
}

// Backward-data (also the transposed convolution's forward), without zero insertion.
// Input pixels are split into stride_h x stride_w phases by (ih mod sh, iw mod sw); within a
// phase only the taps r with (ih + ph - r*dh) divisible by sh reach it, at output row
// oh = ih' + (a + ph - r*dh)/sh, so each phase is a dense stride-1 correlation of grad_out
// with a sub-kernel (the sub-pixel decomposition). No multiply-by-zero is ever done.
template <class T>
void conv_backward_data(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t phases = g.sh * g.sw;
  // Shared layout: [taps per residue h (sh) | w (sw)] [offsets h (sh*R) | w (sw*S)] [taps r (sh*R) | s (sw*S)]
  //                [packed weight base per phase (phases)] then the packed weights.
  const int64_t table_ints = 2 * (g.sh + g.sw) + 2 * (g.sh * g.R + g.sw * g.S) + phases;
  const int64_t wsize = g.groups * round_up(Cg, MicroTile<T>::MR) * Kg * g.R * g.S;  // all phases, packed
  char* shared = static_cast<char*>(thread_workspace(sizeof(int64_t) * table_ints + sizeof(T) * wsize + 64, kSlotShared));
  int64_t* ntap_h = reinterpret_cast<int64_t*>(shared);
  int64_t* ntap_w = ntap_h + g.sh;
  int64_t* off_h = ntap_w + g.sw;       // [a][i]: the oh offset of the i-th tap of residue a
  int64_t* off_w = off_h + g.sh * g.R;
  int64_t* tap_h = off_w + g.sw * g.S;  // [a][i]: the kernel row r of that tap
  int64_t* tap_w = tap_h + g.sh * g.R;
  int64_t* phase_base = tap_w + g.sw * g.S;
  T* packed = reinterpret_cast<T*>(shared + round_up(sizeof(int64_t) * table_ints, 64));

  auto build_taps = [](int64_t stride, int64_t pad, int64_t dil, int64_t kernel, int64_t* ntap, int64_t* off,
                       int64_t* tap) {
    for (int64_t a = 0; a < stride; ++a) {
      ntap[a] = 0;
      for (int64_t r = 0; r < kernel; ++r) {
        const int64_t v = a + pad - r * dil;
        if (((v % stride) + stride) % stride == 0) {
          off[a * kernel + ntap[a]] = v / stride;  // exact, so truncation is fine
          tap[a * kernel + ntap[a]++] = r;
        }
      }
    }
  };
  build_taps(g.sh, g.ph, g.dh, g.R, ntap_h, off_h, tap_h);
  build_taps(g.sw, g.pw, g.dw, g.S, ntap_w, off_w, tap_w);

  // Per phase and group, the Cg x (Kg*Th*Tw) matrix A[c][(k*Th + i)*Tw + j] =
  // w[group*Kg + k][c][tap_h[i]][tap_w[j]], packed into MR-row panels for gemm_packed.
  constexpr int64_t MR = MicroTile<T>::MR;
  const int64_t cg_padded = round_up(Cg, MR);
  int64_t base = 0;
  for (int64_t ph = 0; ph < phases; ++ph) {
    const int64_t ah = ph / g.sw, aw = ph % g.sw, Th = ntap_h[ah], Tw = ntap_w[aw], kd = Kg * Th * Tw;
    phase_base[ph] = base;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      T* a = packed + base + gi * cg_padded * kd;
      for (int64_t c = 0; c < cg_padded; ++c)
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t i = 0; i < Th; ++i)
            for (int64_t j = 0; j < Tw; ++j)
              a[(c / MR) * MR * kd + ((k * Th + i) * Tw + j) * MR + c % MR] =
                  c < Cg ? w[(((gi * Kg + k) * Cg + c) * g.R + tap_h[ah * g.R + i]) * g.S + tap_w[aw * g.S + j]]
                         : T(0);
    }
    base += g.groups * cg_padded * kd;
  }

  const int64_t max_rows = ceil_div(g.H, g.sh), max_cols = ceil_div(g.W, g.sw);
  const int64_t tile = choose_tile<T>(Kg * g.R * g.S / phases + 1, max_rows * max_cols, g.N * g.groups * phases);
  const int64_t ntiles = ceil_div(max_rows * max_cols, tile);

  parallel_tasks(g.N * g.groups * phases * ntiles, threads, [&](int64_t task) {
    const int64_t n = task / (g.groups * phases * ntiles), gi = (task / (phases * ntiles)) % g.groups;
    const int64_t ph = (task / ntiles) % phases, ah = ph / g.sw, aw = ph % g.sw;
    const int64_t rows_here = ah < g.H ? ceil_div(g.H - ah, g.sh) : 0;
    const int64_t cols_here = aw < g.W ? ceil_div(g.W - aw, g.sw) : 0;
    const int64_t q0 = (task % ntiles) * tile, pixels = rows_here * cols_here;
    if (q0 >= pixels) return;
    const int64_t nq = min64(tile, pixels - q0), ldb = round_up(nq, NR);
    const int64_t Th = ntap_h[ah], Tw = ntap_w[aw], kd = Kg * Th * Tw;

    T* patches = static_cast<T*>(thread_workspace(sizeof(T) * (kd * ldb + 1), kSlotTile));
    T* result = static_cast<T*>(thread_workspace(sizeof(T) * Cg * ldb, kSlotTile2));
    const PatchSpec spec{g.OH, g.OW, Th, Tw, 1, 1, cols_here, off_h + ah * g.R, off_w + aw * g.S};
    gather_patch_rows(spec, gy + (n * g.K + gi * Kg) * P, 0, kd, q0, nq, patches, ldb, 1);
    for (int64_t r = 0; r < kd; ++r)
      for (int64_t t = nq; t < ldb; ++t) patches[r * ldb + t] = T(0);
    gemm_packed<T>(Cg, nq, kd, packed + phase_base[ph] + gi * cg_padded * kd, patches, ldb, result, ldb, false);

    for (int64_t c = 0; c < Cg; ++c) {
      const T b = bias ? bias[gi * Cg + c] : T(0);
      T* plane = gx + (n * g.C + gi * Cg + c) * HW;
      int64_t u = q0 / cols_here, v = q0 % cols_here;
      for (int64_t t = 0; t < nq; ++t) {
        plane[(ah + u * g.sh) * g.W + aw + v * g.sw] = result[c * ldb + t] + b;
        if (++v == cols_here) v = 0, ++u;
      }
    }
  });
}

// grad_w[k][c,r,s] = sum over n and output pixels of grad_out[n][k][p] * patch[c,r,s][p].
// Tasks own disjoint blocks of grad_w (group x block of patch rows x block of k) and each
// reduces over the whole batch in a fixed order, so there are no partial sums to merge and
// no atomics. The patch tile is gathered transposed (pixels x rows) so the reduction runs
// along gemm_packed's kd loop.
template <class T>
void conv_backward_weight(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR, MR = MicroTile<T>::MR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S, P = g.OH * g.OW;
  int64_t* offs = static_cast<int64_t*>(thread_workspace(sizeof(int64_t) * (g.R + g.S), kSlotShared));
  for (int64_t r = 0; r < g.R; ++r) offs[r] = r * g.dh - g.ph;
  for (int64_t s = 0; s < g.S; ++s) offs[g.R + s] = s * g.dw - g.pw;
  const PatchSpec spec{g.H, g.W, g.R, g.S, g.sh, g.sw, g.OW, offs, offs + g.R};

  const int64_t row_block = min64(round_up(rows, NR), 8 * NR), nrb = ceil_div(rows, row_block);
  int64_t k_block = Kg;
  if (g.groups * nrb < 8) k_block = min64(Kg, round_up(ceil_div(Kg, ceil_div(8, g.groups * nrb)), MR));
  const int64_t nkb = ceil_div(Kg, k_block);
  const int64_t tile = min64(max64((256 * 1024) / (row_block * int64_t(sizeof(T))), 16), max64(P, 1));
  const int64_t ntiles = ceil_div(P, tile);

  parallel_tasks(g.groups * nrb * nkb, threads, [&](int64_t task) {
    const int64_t gi = task / (nrb * nkb), rb = (task / nkb) % nrb, kb = task % nkb;
    const int64_t row0 = rb * row_block, nrows = min64(row_block, rows - row0), ldb = round_up(nrows, NR);
    const int64_t k0 = kb * k_block, nk = min64(k_block, Kg - k0);
    T* acc = static_cast<T*>(thread_workspace(sizeof(T) * nk * ldb, kSlotTile2));
    T* patches = static_cast<T*>(thread_workspace(sizeof(T) * tile * ldb, kSlotTile));
    T* packed_gy = static_cast<T*>(thread_workspace(sizeof(T) * packed_a_size<T>(nk, tile), kSlotPackA));
    for (int64_t i = 0; i < nk * ldb; ++i) acc[i] = T(0);
    for (int64_t i = 0; i < tile * ldb; ++i) patches[i] = T(0);  // padding columns stay zero
    for (int64_t n = 0; n < g.N; ++n) {
      const T* xs = x + (n * g.C + gi * Cg) * g.H * g.W;
      const T* gys = gy + (n * g.K + gi * Kg + k0) * P;
      for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t p0 = t * tile, np = min64(tile, P - p0);
        gather_patch_rows(spec, xs, row0, nrows, p0, np, patches, 1, ldb);
        pack_a<T>(nk, np, gys + p0, P, 1, packed_gy);
        gemm_packed<T>(nk, nrows, np, packed_gy, patches, ldb, acc, ldb, true);
      }
    }
    for (int64_t k = 0; k < nk; ++k)
      for (int64_t r = 0; r < nrows; ++r) gw[(gi * Kg + k0 + k) * rows + row0 + r] = acc[k * ldb + r];
  });
}

#define FC_INSTANTIATE(T)                                                                          \
  template void conv_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);          \
  template void conv_backward_data<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);    \
  template void conv_backward_weight<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
