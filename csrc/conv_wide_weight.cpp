// Backward-weight over "wide" output rows (wide.h): grad_w[k][c,r,s] = sum over q of
// gyw[k][q] * slabs_c[tap_offset(r, s) + q], where gyw is grad_out laid out Wp wide with zeros
// in the dropped columns. Both operands are contiguous along the
// reduction q, so this is a batch of dot products: a 3 x 4 block of (k, patch row) pairs keeps
// 12 vector accumulators along q, loads 3 + 4 vectors per 12 FMAs and is reduced across lanes
// once per window of pieces. Nothing is transposed or packed beyond building the
// zero-bordered slabs and gyw, one pass over x and grad_out per task that needs them.
//
// The dropped columns multiply a zero of gyw by a value of x; an inf or NaN there would turn
// that zero into NaN, so a grad_w that is not all finite is made again by implicit_gemm's kernel
// (kernel_table.cpp's finite_or_direct).
//
// Work: pieces (image, block of output rows) are split into up to 8 chunks, each summed into
// its own partial grad_w (at most kMaxPartials elements in all); patch tiles and grad_out
// tiles into groups while there are fewer than 8 tasks or a task's share of a piece is large.
// A task (group, chunk, patch-tile group, grad_out-tile group) builds the slabs of its channels
// and the gyw rows of its grad_out rows, window by window, in its own scratch -- the thread
// that builds the data is the one that reads it -- and the partials are added in chunk order at
// the end. The order of every sum is fixed by the shape: results do not depend on the thread
// count.
#include <cstring>

#include "dot_block.h"
#include "gather.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {

constexpr int64_t kMaxPieceColumns = 1024;
constexpr int64_t kWindowBytes = 512 << 10;  // pieces built and summed over at a time, per task
constexpr int64_t kWindowIterations = 64;    // vector steps of reduction per window, at least, where it can split
constexpr int64_t kMinIterations = 256;      // vector steps of reduction per chunk, at least
constexpr int64_t kMaxPartials = 1 << 20;     // elements of per-chunk partial grad_w
}  // namespace

template <class T>
void conv_backward_weight_wide(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S, OHW = g.OH * g.OW;
  if (g.N * OHW == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * rows);
    return;
  }

  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, halo = lay.halo, phases = lay.phases;
  const int64_t block = max64(1, min64(g.OH, (kMaxPieceColumns - g.OW) / Wp + 1));
  const int64_t nblocks = ceil_div(g.OH, block), pieces = g.N * nblocks;
  // Sizes for a full block; the last block of an image is shorter.
  const int64_t q8_max = round_up((block - 1) * Wp + g.OW, L);
  const int64_t wgt = Kg * rows;  // one group's grad_w

  // Pieces are split into chunks, each summed into its own partial grad_w, and the partials
  // are added in chunk order: up to 8 chunks, as many as the partials' bound allows.
  // A chunk gets at least kMinIterations vector steps of reduction (a few small images), so
  // small batches are split over tiles instead of into chunks too short to sum over.
  const int64_t pieces_per_chunk = ceil_div(kMinIterations, q8_max / L);
  int64_t nchunks = max64(1, min64(pieces / pieces_per_chunk, 8));
  nchunks = max64(1, min64(nchunks, kMaxPartials / wgt));
  const int64_t per_chunk = ceil_div(pieces, nchunks);
  nchunks = ceil_div(pieces, per_chunk);

  // Patch tiles and grad_out tiles are split into groups while there are fewer than 8 tasks,
  // or while a window (the pieces of a task's share -- its channels' slabs, its rows of gyw --
  // that fit in L2 together) holds fewer than kWindowIterations vector steps of reduction: the
  // per-tile cost of starting and reducing the sums is paid once per window.
  const int64_t ktiles = ceil_div(Kg, KI), jtiles = ceil_div(rows, KJ);
  int64_t jgroups = 1, kgroups = 1;
  auto slab_part = [&] { return (ceil_div(Cg, jgroups) + 1) * phases * (block + halo) * Wp; };
  auto gyw_part = [&] { return ceil_div(ktiles, kgroups) * KI * q8_max; };
  const int64_t iters_per_piece = q8_max / L;
  for (;;) {
    const bool few = g.groups * nchunks * jgroups * kgroups < 8;
    // Windows too short to sum over: split, so that more pieces fit in one (each split means
    // building the slabs or gyw once more per piece, so only where the sums are short).
    const int64_t window = max64(1, kWindowBytes / (int64_t(sizeof(T)) * (slab_part() + gyw_part())));
    const bool big = window * iters_per_piece < kWindowIterations;
    const bool can_j = jgroups * 2 <= jtiles, can_k = kgroups * 2 <= ktiles;
    if ((!few && !big) || (!can_j && !can_k)) break;
    if (can_j && (!can_k || slab_part() >= gyw_part())) jgroups *= 2;
    else kgroups *= 2;
  }
  const int64_t jper = ceil_div(jtiles, jgroups), kper = ceil_div(ktiles, kgroups);
  jgroups = ceil_div(jtiles, jper);
  kgroups = ceil_div(ktiles, kper);

  T* shared = static_cast<T*>(thread_workspace(sizeof(T) * (q8_max + g.groups * nchunks * wgt), kSlotShared));
  T* zeros = shared;  // a grad_out row for the k past Kg in the last tile
  T* partials = nchunks == 1 ? gw : shared + q8_max;
  std::memset(zeros, 0, sizeof(T) * q8_max);

  const int64_t per_gi = nchunks * jgroups * kgroups;
  parallel_tasks(g.groups * per_gi, threads, [&](int64_t task) {
    const int64_t gi = task / per_gi, chunk = (task / (jgroups * kgroups)) % nchunks;
    const int64_t jg = (task / kgroups) % jgroups, kg = task % kgroups;
    const int64_t j0 = jg * jper, j1 = min64(j0 + jper, jtiles), k0 = kg * kper, k1 = min64(k0 + kper, ktiles);
    // This task's channels (those of patch rows j0*KJ ..) and grad_out rows.
    const int64_t ch0 = j0 * KJ / (g.R * g.S), ch1 = (min64(j1 * KJ, rows) - 1) / (g.R * g.S) + 1, nch = ch1 - ch0;
    const int64_t kr0 = k0 * KI, nk = min64(k1 * KI, Kg) - kr0;
    // Rounded to whole vectors so that every gyw row starts 32-byte aligned.
    const int64_t slab_size = round_up(nch * phases * (block + halo) * Wp + L, L);
    const int64_t piece_size = slab_size + nk * q8_max;
    const int64_t per_window = max64(1, kWindowBytes / (int64_t(sizeof(T)) * piece_size));
    const T* xg = x + (gi * Cg + ch0) * g.H * g.W;
    const T* gyg = gy + (gi * Kg + kr0) * OHW;
    T* part = partials + (nchunks == 1 ? gi * wgt : (gi * nchunks + chunk) * wgt);
    T* buf = static_cast<T*>(thread_workspace(sizeof(T) * per_window * piece_size, kSlotTile));
    const int64_t c0 = chunk * per_chunk, c1 = min64(c0 + per_chunk, pieces);

    for (int64_t p0 = c0; p0 < c1; p0 += per_window) {
      const int64_t np = min64(per_window, c1 - p0);
      // Build the window: each piece's zero-bordered slabs (with L elements of slack read past
      // the last row) and gyw (grad_out rows Wp wide, zeros in the dropped columns and up to
      // a whole vector).
      for (int64_t pi = 0; pi < np; ++pi) {
        const int64_t piece = p0 + pi, n = piece / nblocks, oh0 = (piece % nblocks) * block;
        const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo, q = (nrows - 1) * Wp + g.OW;
        const int64_t q8 = round_up(q, L);
        T* slab = buf + pi * piece_size;
        T* gyw = slab + slab_size;
        build_slabs(g, xg + n * g.C * g.H * g.W, nch, oh0, srows, Wp, slab, phases * srows * Wp, srows * Wp);
        for (int64_t e = 0; e < L; ++e) slab[nch * phases * srows * Wp + e] = T(0);
        for (int64_t k = 0; k < nk; ++k)
          lay_out_wide(gyg + (n * g.K + k) * OHW + oh0 * g.OW, nrows, g.OW, Wp, q8, gyw + k * q8);
      }

      // k tiles outside: a k tile's grad_out rows over the window stay in L1/L2 while the
      // task's patch tiles pass over them.
      for (int64_t kt = k0; kt < k1; ++kt)
        for (int64_t jt = j0; jt < j1; ++jt) {
          // The KJ patch rows of this tile as (channel, tap); rows past the last repeat it and
          // are dropped.
          int64_t chan[KJ], tap_r[KJ], tap_s[KJ];
          for (int j = 0; j < KJ; ++j) {
            const int64_t row = min64(jt * KJ + j, rows - 1), rs = row % (g.R * g.S);
            chan[j] = row / (g.R * g.S) - ch0;
            tap_r[j] = rs / g.S;
            tap_s[j] = rs % g.S;
          }
          V acc[KI * KJ];
          for (int i = 0; i < KI * KJ; ++i) acc[i] = V{};
          // Runs of pieces of one size (all of them when an image is one block) in one call;
          // the zero row past Kg does not move with the pieces, so then one at a time.
          for (int64_t pi = 0, run = 1; pi < np; pi += run) {
            const int64_t oh0 = ((p0 + pi) % nblocks) * block;
            const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo;
            const int64_t iters = round_up((nrows - 1) * Wp + g.OW, L) / L, q8 = iters * int64_t(L);
            run = nblocks == 1 && kt * KI + KI <= Kg ? np - pi : 1;
            const T* slab = buf + pi * piece_size;
            const T* gyw = slab + slab_size;
            const T* a[KI];
            const T* b[KJ];
            for (int i = 0; i < KI; ++i) a[i] = kt * KI + i < Kg ? gyw + (kt * KI + i - kr0) * q8 : zeros;
            for (int j = 0; j < KJ; ++j)
              b[j] = slab + chan[j] * phases * srows * Wp + tap_offset(g, Wp, srows * Wp, tap_r[j], tap_s[j]);
            dot_block<T>(iters, run, piece_size, a, b, acc);
          }
          for (int i = 0; i < KI; ++i)
            for (int j = 0; j < KJ; ++j) {
              const int64_t k = kt * KI + i, row = jt * KJ + j;
              if (k >= Kg || row >= rows) continue;
              const T sum = lane_sum<T>(acc[i * KJ + j]);
              part[k * rows + row] = p0 == c0 ? sum : part[k * rows + row] + sum;
            }
        }
    }
  });

  if (nchunks > 1)  // the partials, added in chunk order
    for (int64_t gi = 0; gi < g.groups; ++gi)
      for (int64_t e = 0; e < wgt; ++e) {
        const T* part = partials + gi * nchunks * wgt + e;
        T sum = part[0];
        for (int64_t c = 1; c < nchunks; ++c) sum += part[c * wgt];
        gw[gi * wgt + e] = sum;
      }
}

template void conv_backward_weight_wide<float>(const ConvGeom&, const float*, const float*, float*, int);
template void conv_backward_weight_wide<double>(const ConvGeom&, const double*, const double*, double*, int);

}  // namespace FC_ISA
}  // namespace fastconv
