// Backward-weight as a batch of dot products along the output pixels:
// grad_w[k][c,r,s] = sum over q of gy[k][q] * u_{c,r,s}[q], where u_{c,r,s} is the input at tap
// (r, s) of each output pixel q (build_tap_columns: one array per channel, stride row phase and
// kernel column, so that tap rows are runs of it). u is laid out in grad_out's own pixel order,
// so grad_out's rows are read where they lie: nothing of grad_out is copied but the last partial
// vector of each row. A 3 x 4 block of (k, patch row) pairs keeps 12 vector accumulators along
// q, loads 3 + 4 vectors per 12 FMAs and is reduced across lanes once per window of pieces.
// (An earlier version laid grad_out out Wp wide with zeros between rows, beside one slab per
// stride phase: the copy was a sixth of its time, and reading grad_out in place instead only
// paid once the next k tile's rows were prefetched -- 0.74-0.92x the time on MNIST's conv1,
// DCGAN's D1, the decoder's 64->3 transposed conv and ResNet's stem.)
//
// The zero-padded tails multiply a zero by a value of x past the row; an inf or NaN there would
// turn that zero into NaN, so a grad_w that is not all finite is made again by implicit_gemm's
// kernel (kernel_table.cpp's finite_or_direct).
//
// Work: pieces (image, block of output rows) are split into up to 8 chunks, each summed into
// its own partial grad_w (at most kMaxPartials elements in all); patch tiles and grad_out
// tiles into groups while there are fewer than 8 tasks or a task's share of a piece is large.
// A task (group, chunk, patch-tile group, grad_out-tile group) builds the tap columns of its
// channels window by window in its own scratch -- the thread that builds the data is the one
// that reads it -- and the partials are added in chunk order at the end. The order of every
// sum is fixed by the shape: results do not depend on the thread count.
#include <cstring>
#include <vector>

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

// One piece's tap columns: for channel c, row phase a that some tap reads (its number in
// `phase_number`) and kernel column s, the srows x OW array
// u[hr][ow] = x[c][(oh0 + hr)*sh + a - ph][ow*sw + s*dw - pw], zero outside x. Tap (r, s) of the
// block's output pixel q = i*OW + ow is then u(c, r*dh % sh, s)[(r*dh / sh)*OW + q]: grad_out's
// own pixel order, so grad_out is read where it lies.
template <class T>
static void build_tap_columns(const ConvGeom& g, const T* x, int64_t channels, int64_t oh0, int64_t srows,
                              const int64_t* phase_number, int64_t nphases, T* dst) {
  const int64_t plane = srows * g.OW;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t a = 0; a < g.sh; ++a) {
      if (phase_number[a] < 0) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        T* u = dst + ((c * nphases + phase_number[a]) * g.S + s) * plane;
        const int64_t shift = s * g.dw - g.pw;  // column ow reads input column ow*sw + shift
        const int64_t lo = min64(g.OW, shift < 0 ? ceil_div(-shift, g.sw) : 0);
        const int64_t hi = max64(lo, min64(g.OW, g.W - shift > 0 ? ceil_div(g.W - shift, g.sw) : 0));
        for (int64_t hr = 0; hr < srows; ++hr) {
          const int64_t ih = (oh0 + hr) * g.sh + a - g.ph;
          strided_row(g, ih >= 0 && ih < g.H ? x + (c * g.H + ih) * g.W : nullptr, shift, lo, hi, g.OW, u + hr * g.OW);
        }
      }
    }
}

template <class T>
void conv_backward_weight_wide(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, rows = Cg * g.R * g.S, OHW = g.OH * g.OW;
  if (g.N * OHW == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * rows);
    return;
  }

  // The row phases some tap reads, numbered in order (a 1x1 kernel at stride 2 reads one of two).
  std::vector<int64_t> phase_number(g.sh, -1);
  for (int64_t r = 0; r < g.R; ++r) phase_number[r * g.dh % g.sh] = 0;
  int64_t nphases = 0;
  for (int64_t a = 0; a < g.sh; ++a)
    if (phase_number[a] == 0) phase_number[a] = nphases++;
  const int64_t arrays = nphases * g.S;  // tap-column arrays per channel
  const int64_t halo = (g.R - 1) * g.dh / g.sh;
  const int64_t block = max64(1, min64(g.OH, kMaxPieceColumns / g.OW));
  const int64_t nblocks = ceil_div(g.OH, block), pieces = g.N * nblocks;
  // Sizes for a full block; the last block of an image is shorter.
  const int64_t q8_max = round_up(block * g.OW, L);
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
  // or while a window (the pieces of a task's share that fit in L2 together: its channels' tap
  // columns and one k tile's rows of grad_out) holds fewer than kWindowIterations vector steps
  // of reduction: the per-tile cost of starting and reducing the sums is paid once per window.
  const int64_t ktiles = ceil_div(Kg, KI), jtiles = ceil_div(rows, KJ);
  int64_t jgroups = 1, kgroups = 1;
  auto columns_part = [&] { return (ceil_div(Cg, jgroups) + 1) * arrays * (block + halo) * g.OW; };
  const int64_t iters_per_piece = q8_max / L;
  for (;;) {
    const bool few = g.groups * nchunks * jgroups * kgroups < 8;
    // Windows too short to sum over: split the channels, so that more pieces fit in one.
    const int64_t window = max64(1, kWindowBytes / (int64_t(sizeof(T)) * (columns_part() + KI * q8_max)));
    const bool big = window * iters_per_piece < kWindowIterations;
    const bool can_j = jgroups * 2 <= jtiles, can_k = kgroups * 2 <= ktiles;
    if ((!few && !big) || (!can_j && !can_k)) break;
    // Split the larger share: the tap columns are built once per task, grad_out read once.
    if (can_j && (big || !can_k || columns_part() >= ceil_div(ktiles, kgroups) * KI * q8_max)) jgroups *= 2;
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
    // A piece's scratch: its tap columns (with L elements of slack read past the last array),
    // then the last partial vector of each of its grad_out rows, zero-padded. Rounded to whole
    // vectors so that the tails start 32-byte aligned.
    const int64_t columns_size = round_up(nch * arrays * (block + halo) * g.OW + L, L);
    const int64_t piece_size = columns_size + nk * L;
    const int64_t per_window = max64(1, kWindowBytes / (int64_t(sizeof(T)) * (columns_size + KI * q8_max)));
    const T* xg = x + (gi * Cg + ch0) * g.H * g.W;
    const T* gyg = gy + (gi * Kg + kr0) * OHW;
    T* part = partials + (nchunks == 1 ? gi * wgt : (gi * nchunks + chunk) * wgt);
    T* buf = static_cast<T*>(thread_workspace(sizeof(T) * per_window * piece_size, kSlotTile));
    const int64_t c0 = chunk * per_chunk, c1 = min64(c0 + per_chunk, pieces);

    for (int64_t p0 = c0; p0 < c1; p0 += per_window) {
      const int64_t np = min64(per_window, c1 - p0);
      for (int64_t pi = 0; pi < np; ++pi) {
        const int64_t piece = p0 + pi, n = piece / nblocks, oh0 = (piece % nblocks) * block;
        const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo, q = nrows * g.OW;
        const int64_t whole = q / L * L;
        T* columns = buf + pi * piece_size;
        build_tap_columns(g, xg + n * g.C * g.H * g.W, nch, oh0, srows, phase_number.data(), nphases, columns);
        for (int64_t e = 0; e < L; ++e) columns[nch * arrays * srows * g.OW + e] = T(0);
        T* tails = columns + columns_size;
        for (int64_t k = 0; k < nk; ++k)
          for (int64_t e = 0; e < L; ++e)
            tails[k * L + e] = whole + e < q ? gyg[(n * g.K + k) * OHW + oh0 * g.OW + whole + e] : T(0);
      }

      // k tiles outside: a k tile's grad_out rows over the window stay in L1/L2 while the
      // task's patch tiles pass over them; the next k tile's rows are fetched from memory a
      // slice per patch tile meanwhile (read in the first patch tile, they came in a burst
      // faster than memory streams).
      for (int64_t kt = k0; kt < k1; ++kt)
        for (int64_t jt = j0; jt < j1; ++jt) {
          if (kt + 1 < k1)
            for (int64_t pi = 0; pi < np; ++pi) {
              const int64_t n = (p0 + pi) / nblocks, oh0 = ((p0 + pi) % nblocks) * block;
              const int64_t bytes = int64_t(sizeof(T)) * min64(block, g.OH - oh0) * g.OW;
              const int64_t lo = bytes * (jt - j0) / (j1 - j0), hi = bytes * (jt - j0 + 1) / (j1 - j0);
              for (int i = 0; i < KI && (kt + 1) * KI + i < Kg; ++i) {
                const char* row = reinterpret_cast<const char*>(gyg + (n * g.K + (kt + 1) * KI + i - kr0) * OHW + oh0 * g.OW);
                for (int64_t off = lo & ~int64_t(63); off < hi; off += 64) __builtin_prefetch(row + off);
              }
            }
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
            const int64_t n = (p0 + pi) / nblocks, oh0 = ((p0 + pi) % nblocks) * block;
            const int64_t nrows = min64(block, g.OH - oh0), srows = nrows + halo, q = nrows * g.OW;
            const int64_t whole = q / L * L;
            run = nblocks == 1 && kt * KI + KI <= Kg ? np - pi : 1;
            const T* columns = buf + pi * piece_size;
            const T* tails = columns + columns_size;
            const T* a[KI];
            const T* b[KJ];
            for (int i = 0; i < KI; ++i)
              a[i] = kt * KI + i < Kg ? gyg + (n * g.K + kt * KI + i - kr0) * OHW + oh0 * g.OW : zeros;
            for (int j = 0; j < KJ; ++j)
              b[j] = columns + ((chan[j] * nphases + phase_number[tap_r[j] * g.dh % g.sh]) * g.S + tap_s[j]) * srows * g.OW +
                     (tap_r[j] * g.dh / g.sh) * g.OW;
            dot_block<T>(whole / L, run, g.K * OHW, piece_size, a, b, acc);
            if (whole < q) {  // the last partial vector, grad_out's from the tails
              for (int i = 0; i < KI; ++i) a[i] = kt * KI + i < Kg ? tails + (kt * KI + i - kr0) * L : zeros;
              for (int j = 0; j < KJ; ++j) b[j] += whole;
              dot_block<T>(1, run, piece_size, piece_size, a, b, acc);
            }
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
