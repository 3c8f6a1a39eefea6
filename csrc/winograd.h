// Shared pieces of the Winograd kernels (winograd_f23.cpp, winograd_f43.cpp, winograd_s2.cpp): the weight
// transforms' task split and the forward's task size (the masked loads and stores for the ragged ends of tile
// rows are gemm_microkernel.h's). Compiled per ISA with the kernels.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "gather.h"
#include "gemm_microkernel.h"
#include "geometry.h"
#include "tasks.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

constexpr int64_t kWinogradBlockBytes = 1 << 20;  // forward: a task's transformed inputs and products

template <class T>
constexpr int64_t kSkew = 64 / sizeof(T);  // elements in a cache line

// Every group's transformed kernels (U, or U^T when transposed), packed per (group, position
// xi) at packed + (gi * positions + xi) * per_xi; a task per MR-row panel, done by
// panel(group's w, Kg, Cg, first row, transposed, group's packed, per_xi). `phases`: the packed
// columns (or, transposed, rows) per input channel.
template <class T, class Panel>
void transform_weights(const ConvGeom& g, const T* w, bool transposed, T* packed, int64_t per_xi, int positions,
                       int threads, Panel panel, int64_t phases = 1) {
  constexpr int64_t MR = MicroTile<T>::MR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, panels = ceil_div(transposed ? phases * Cg : Kg, MR);
  parallel_tasks(g.groups * panels, threads, [&](int64_t task) {
    const int64_t gi = task / panels;
    panel(w + gi * Kg * Cg * g.R * g.S, Kg, Cg, (task % panels) * MR, transposed, packed + gi * positions * per_xi,
          per_xi);
  });
}

// Items (tile rows or images) per task: a task's transforms under kWinogradBlockBytes, halved until
// there are 8 tasks over the groups.
inline int64_t winograd_task_block(int64_t item_bytes, int64_t items, int64_t groups) {
  int64_t block = min64(max64(1, kWinogradBlockBytes / item_bytes), items);
  while (groups * ceil_div(items, block) < 8 && block > 1) block = ceil_div(block, 2);
  return block;
}

// A forward's tasks: blocks of `rows` tile rows by blocks of `channels` output channels.
struct WinogradTasks {
  int64_t rows, row_blocks, channels, channel_blocks;
};

// Blocks of tile rows as winograd_task_block, all output channels each -- except for deep layers
// with few tiles (ResNet's last stage: 512 channels, 7x7 outputs). Their blocks were a tile row or
// two, so each position's GEMM ran the transformed weights (a MiB a position) from L3 across a
// single panel of tiles. There a task takes up to kDeepTiles tiles, whose panels each KC block of
// the weights meets while in L2, and a share of the output channels (a multiple of MR), so that
// there are still 8 tasks.
constexpr int64_t kDeepTiles = 128;

template <class T>
WinogradTasks winograd_forward_tasks(int64_t item_bytes, int64_t tile_rows, int64_t tiles_w, int64_t Kg,
                                     int64_t groups) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  WinogradTasks t{winograd_task_block(item_bytes, tile_rows, groups), 0, Kg, 1};
  if (t.rows * tiles_w < 2 * NR && Kg >= 8 * MR) {
    t.rows = min64(tile_rows, max64(1, kDeepTiles / tiles_w));
    const int64_t blocks = groups * ceil_div(tile_rows, t.rows);
    t.channels = min64(Kg, round_up(ceil_div(Kg, ceil_div(8, blocks)), MR));
  }
  t.row_blocks = ceil_div(tile_rows, t.rows);
  t.channel_blocks = ceil_div(Kg, t.channels);
  return t;
}


// The lanes of v from n on replaced by zero (n <= 0: all of them).
inline VecOf<float> keep_lanes(VecOf<float> v, int64_t n) {
  typedef int32_t I __attribute__((vector_size(32)));
  const I lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return lane < static_cast<int32_t>(n) ? v : VecOf<float>{};
}
inline VecOf<double> keep_lanes(VecOf<double> v, int64_t n) {
  typedef int64_t I __attribute__((vector_size(32)));
  const I lane = {0, 1, 2, 3};
  return lane < n ? v : VecOf<double>{};
}

// dst[ow * ld + k] = src[k * src_stride + ow] for k < rows (a multiple of L) and ow < W, and
// zero for W <= ow < Wd (a multiple of L): rows of a plane made channel-last, L x L blocks
// transposed in registers.
template <class T>
void to_channel_last(const T* src, int64_t src_stride, int64_t rows, int64_t W, int64_t Wd, T* dst, int64_t ld) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  for (int64_t k0 = 0; k0 < rows; k0 += L)
    for (int64_t w0 = 0; w0 < Wd; w0 += L) {
      V r[L];
      if (w0 + L <= W) {  // (masked loads, slow on this class of machine, only at the row's end)
        for (int i = 0; i < L; ++i) r[i] = load(src + (k0 + i) * src_stride + w0);
      } else {
        for (int i = 0; i < L; ++i) masked_row_load(src + (k0 + i) * src_stride, w0, W, r[i]);
      }
      transpose(r);
      for (int j = 0; j < L; ++j) store(dst + (w0 + j) * ld + k0, r[j]);
    }
}

// dst[ow * KW + k] = src[k * src_stride + ow] for k < K and ow < W, zero for the other k < KW
// and ow < Wd (a multiple of L): grad_out rows channel-last, whole vectors of k by to_channel_last.
template <class T>
void rows_channel_last(const T* src, int64_t src_stride, int64_t K, int64_t W, int64_t Wd, T* dst, int64_t KW) {
  const int64_t full = K / Vec<T>::kLanes * Vec<T>::kLanes;
  to_channel_last(src, src_stride, full, W, Wd, dst, KW);
  for (int64_t ow = 0; ow < Wd; ++ow)
    for (int64_t k = full; k < KW; ++k) dst[ow * KW + k] = k < K && ow < W ? src[k * src_stride + ow] : T(0);
}

// Backward-weight: tile rows split into chunks (at most 8, and no more partial sums than
// kMaxPartials elements in all), each summed into its own partial M of msize elements.
constexpr int64_t kWindowBytes = 512 << 10;  // a task's transforms per window of tile rows
constexpr int64_t kMaxPartials = 1 << 22;    // elements of per-chunk partial sums

struct Chunks {
  int64_t count, per;  // chunks, tile rows per chunk (the last may have fewer)
};

inline Chunks weight_chunks(int64_t tile_rows, int64_t msize) {
  const int64_t n = max64(1, min64(min64(8, tile_rows), kMaxPartials / msize));
  const int64_t per = ceil_div(tile_rows, n);
  return {ceil_div(tile_rows, per), per};
}

// Each group's partials (groups x chunks x msize) added in chunk order into its first, in
// parallel over stretches of it: the same sums in the same order at any thread count.
template <class T>
void sum_chunk_partials(T* partials, int64_t groups, int64_t chunks, int64_t msize, int threads) {
  if (chunks <= 1) return;
  const int64_t stretch = 4096, stretches = ceil_div(msize, stretch);
  parallel_tasks(groups * stretches, threads, [&](int64_t task) {
    const int64_t gi = task / stretches, e0 = (task % stretches) * stretch;
    T* first = partials + gi * chunks * msize;
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const T* part = first + ch * msize;
      for (int64_t e = e0; e < min64(e0 + stretch, msize); ++e) first[e] += part[e];
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Tile rows of 6x6 input tiles at stride 4 (rows 4 th - ph + i, columns 4 tw - pw + j, i, j < 6):
// F(4x4, 3x3) (winograd_f43.cpp) and F(2x2, 2x2) over a stride-2 4x4 kernel's phases
// (winograd_s2.cpp) read the same tiles. A tile's column j is phase j mod 4, offset j / 4 of
// its row split into four column phases, so column j of consecutive tiles is one contiguous load
// -- if each tile row carries one phantom tile, whose lanes a permute drops before the
// transform is stored.

// row[lo .. lo + L - 1], zero outside 0 .. W - 1. Masked loads are slow: only for a vector that
// straddles an end of the row.
template <class T>
inline VecOf<T> row_vector(const T* row, int64_t lo, int64_t W) {
  constexpr int L = Vec<T>::kLanes;
  if (lo + L <= 0 || lo >= W) return VecOf<T>{};
  if (lo >= 0 && lo + L <= W) return load(row + lo);
  VecOf<T> v;
  masked_row_load(row, lo, W, v);
  return v;
}

// out[p * stride + u] = row[2u + p - pw] for the two column parities p and u < n (rounded up to
// whole vectors: the lanes past n are written too), zero outside the row.
template <class T>
void split_row_parities(const T* row, int64_t W, int64_t pw, int64_t n, int64_t stride, T* out) {
  constexpr int L = Vec<T>::kLanes;
  for (int64_t u = 0; u < n; u += L) {
    const VecOf<T> a = row_vector(row, 2 * u - pw, W), b = row_vector(row, 2 * u - pw + L, W);
    store(out + u, deinterleave_even(a, b));
    store(out + stride + u, deinterleave_odd(a, b));
  }
}

// out[p * stride + u] = row[4u + p - pw] for the four phases p and u < n (rounded up to whole
// vectors: the lanes past n are written too), zero outside the row.
template <class T>
void split_row_phases(const T* row, int64_t W, int64_t pw, int64_t n, int64_t stride, T* out) {
  constexpr int L = Vec<T>::kLanes;
  if (W < L) {  // rows shorter than a vector (MNIST's 5): zero vectors, then one move per element
    for (int p = 0; p < 4; ++p)
      for (int64_t u = 0; u < n; u += L) store(out + p * stride + u, VecOf<T>{});
    for (int64_t iw = max64(0, -pw); iw < W && (iw + pw) / 4 < round_up(n, L); ++iw)
      out[(iw + pw) % 4 * stride + (iw + pw) / 4] = row[iw];
    return;
  }
  for (int64_t u = 0; u < n; u += L) {
    const int64_t base = 4 * u - pw;
    VecOf<T> v[4];
    for (int e = 0; e < 4; ++e) v[e] = row_vector(row, base + e * L, W);
    const VecOf<T> a = v[0], b = v[1], c = v[2], d = v[3];
    const VecOf<T> e1 = deinterleave_even(a, b), o1 = deinterleave_odd(a, b);
    const VecOf<T> e2 = deinterleave_even(c, d), o2 = deinterleave_odd(c, d);
    store(out + u, deinterleave_even(e1, e2));
    store(out + stride + u, deinterleave_even(o1, o2));
    store(out + 2 * stride + u, deinterleave_odd(e1, e2));
    store(out + 3 * stride + u, deinterleave_odd(o1, o2));
  }
}

// v's lanes picked by idx (lane l of the result = v[idx[l]]).
inline VecOf<float> permute(VecOf<float> v, const int32_t* idx) {
#ifdef __AVX2__
  return reinterpret_cast<VecOf<float>>(_mm256_permutevar8x32_ps(
      reinterpret_cast<__m256>(v), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx))));
#else
  VecOf<float> r;
  for (int l = 0; l < 8; ++l) r[l] = v[idx[l]];
  return r;
#endif
}
inline VecOf<double> permute(VecOf<double> v, const int32_t* idx) {
  VecOf<double> r;
  for (int l = 0; l < 4; ++l) r[l] = v[idx[l]];
  return r;
}

// The lanes of a, b, c, d interleaved four ways: out[0] = a0 b0 c0 d0 a1 b1 c1 d1, ... (the
// inverse of the phase split: tile t's four output columns side by side).
inline void interleave4(VecOf<float> a, VecOf<float> b, VecOf<float> c, VecOf<float> d, VecOf<float> (&out)[4]) {
  VecOf<float> ab_lo, ab_hi, cd_lo, cd_hi;
  interleave(a, b, ab_lo, ab_hi);
  interleave(c, d, cd_lo, cd_hi);
  out[0] = __builtin_shufflevector(ab_lo, cd_lo, 0, 1, 8, 9, 2, 3, 10, 11);
  out[1] = __builtin_shufflevector(ab_lo, cd_lo, 4, 5, 12, 13, 6, 7, 14, 15);
  out[2] = __builtin_shufflevector(ab_hi, cd_hi, 0, 1, 8, 9, 2, 3, 10, 11);
  out[3] = __builtin_shufflevector(ab_hi, cd_hi, 4, 5, 12, 13, 6, 7, 14, 15);
}
inline void interleave4(VecOf<double> a, VecOf<double> b, VecOf<double> c, VecOf<double> d,
                        VecOf<double> (&out)[4]) {
  VecOf<double> ab_lo, ab_hi, cd_lo, cd_hi;
  interleave(a, b, ab_lo, ab_hi);
  interleave(c, d, cd_lo, cd_hi);
  out[0] = __builtin_shufflevector(ab_lo, cd_lo, 0, 1, 4, 5);
  out[1] = __builtin_shufflevector(ab_lo, cd_lo, 2, 3, 6, 7);
  out[2] = __builtin_shufflevector(ab_hi, cd_hi, 0, 1, 4, 5);
  out[3] = __builtin_shufflevector(ab_hi, cd_hi, 2, 3, 6, 7);
}

// Where the input transform's vector of padded tiles q0 .. q0 + L - 1 goes: its real tiles'
// lanes, in order (then anything), and the compact index of the first. The way back (the
// adjoint): padded lane l is compact lane spread[l] of the `real` loaded from dst, a phantom
// lane is lane `real` (zeroed: a phantom vector is all real, real = L, never has one).
struct Compaction {
  int32_t keep[8], spread[8], real;
  int64_t dst;
};

// Where a compact tile's output goes (relative to its channel's plane), and how much of it.
struct TileOut {
  int64_t offset;
  int32_t rows, cols;
};

// The tile rows [r0, r1) of one group, numbered compactly (t = (r - r0) * tiles_w + tw) for the
// GEMMs and with one phantom tile per row (q = (r - r0) * (tiles_w + 1) + tw) for the
// transforms; tiles_h x tiles_w tiles per image, `side` x `side` outputs each. And the buffers of
// the transforms at its `positions` positions xi: V[xi][v_rows][t], M[xi][K/groups][t] (planes
// vs / ms apart, rows ld apart).
template <class T>
struct TileRows {
  static constexpr int L = Vec<T>::kLanes;
  const ConvGeom& g;
  int64_t gi, r0, r1, side, tiles_h, tiles_w, padded_w, positions;
  int64_t nt, nq, nvec, ld, stride;  // ld: of the GEMMs' rows; stride: of the split phases
  int64_t vs, ms;
  int64_t k0 = 0, k1;  // the forward's output channels (of the group): M's rows
  T* v = nullptr;  // place_input
  Compaction* plan = nullptr;
  T* m = nullptr;  // place_output
  TileOut* outs = nullptr;

  TileRows(const ConvGeom& geom, int64_t group, int64_t row0, int64_t row1, int64_t tile_side, int64_t xi_count,
           int64_t v_rows)
      : g(geom), gi(group), r0(row0), r1(row1), side(tile_side), tiles_h(ceil_div(g.OH, side)),
        tiles_w(ceil_div(g.OW, side)), padded_w(tiles_w + 1), positions(xi_count) {
    nt = (r1 - r0) * tiles_w;
    nq = (r1 - r0) * padded_w;
    nvec = ceil_div(nq, L);
    ld = round_up(nt + L, MicroTile<T>::NR);  // slack for the last vector's extra lanes
    stride = round_up(nq + 2 * L, L);
    // The planes a cache line off a multiple of 4 KiB apart (see winograd_f23.cpp).
    vs = v_rows * ld + kSkew<T>;
    k1 = g.K / g.groups;
    ms = k1 * ld + kSkew<T>;
  }
  // A forward task of output channels [first, last) only (first a multiple of the micro-tile's MR).
  void output_channels(int64_t first, int64_t last) {
    k0 = first;
    k1 = last;
    ms = (k1 - k0) * ld + kSkew<T>;
  }
  int64_t v_bytes() const { return sizeof(T) * positions * vs; }
  int64_t m_bytes() const { return sizeof(T) * positions * ms; }
  int64_t plan_bytes() const { return sizeof(Compaction) * nvec; }
  int64_t outs_bytes() const { return sizeof(TileOut) * nt; }
  int64_t split_bytes() const { return sizeof(T) * 24 * stride; }

  // The input transform's compaction plan (plan_bytes) for each vector of padded tiles.
  void make_plan(Compaction* plan) const {
    for (int64_t vi = 0; vi < nvec; ++vi) {
      int n = 0;
      plan[vi].dst = -1;
      for (int l = 0; l < L; ++l) {
        const int64_t q = vi * L + l;
        plan[vi].spread[l] = -1;
        if (q < nq && q % padded_w < tiles_w) {
          if (plan[vi].dst < 0) plan[vi].dst = q / padded_w * tiles_w + q % padded_w;
          plan[vi].spread[l] = n;
          plan[vi].keep[n++] = l;
        }
      }
      for (int l = 0; l < 8; ++l) {
        if (l >= n) plan[vi].keep[l] = 0;
        if (l >= L || plan[vi].spread[l] < 0) plan[vi].spread[l] = l < L ? n : 0;
      }
      plan[vi].real = n;
      if (plan[vi].dst < 0) plan[vi].dst = nt;  // nothing real: into the slack
    }
  }

  // V at `buffer` (v_bytes) and the input transform's compaction plan at `plans` (plan_bytes).
  void place_input(T* buffer, Compaction* plans) {
    v = buffer;
    plan = plans;
    make_plan(plan);
  }

  // M at `buffer` (m_bytes) and the output transform's per-tile table at `table` (outs_bytes;
  // none for the adjoint, which keeps Z in M's place).
  void place_output(T* buffer, TileOut* table) {
    m = buffer;
    outs = table;
    if (table) make_outs(table);
  }

  // Where each compact tile's output goes (relative to its channel's plane) and how much of it.
  void make_outs(TileOut* outs) const {
    const int64_t P = g.OH * g.OW;
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t r = r0 + t / tiles_w, n = r / tiles_h, th = r % tiles_h, tw = t % tiles_w;
      outs[t] = {(n * g.K + gi * (g.K / g.groups)) * P + side * (th * g.OW + tw),
                 static_cast<int32_t>(min64(side, g.OH - side * th)), static_cast<int32_t>(min64(side, g.OW - side * tw))};
    }
  }

  // The first `rows` rows of every tile row's input tiles, taken from channel `ch` of planes
  // H x W (`channels` per image; tile row th starts at row 4 th - ph, column -pw), split into
  // column phases: row i, phase p of tile row r at split + (4 i + p) * stride + (r - r0) * padded_w.
  void split_tile_rows(const T* planes, int64_t channels, int64_t ch, int64_t H, int64_t W, int64_t ph, int64_t pw,
                       int rows, T* split) const {
    // Lanes read past the last tile row: zero, so no garbage (a slow denormal) enters the sums.
    for (int s = 0; s < 4 * rows; ++s)
      for (int64_t q = nq; q < stride; ++q) split[s * stride + q] = T(0);
    for (int64_t r = r0; r < r1; ++r) {  // in order: a row's whole-vector overrun is rewritten by the next
      const int64_t n = r / tiles_h, th = r % tiles_h, q = (r - r0) * padded_w;
      const T* plane = planes + (n * channels + ch) * H * W;
      for (int i = 0; i < rows; ++i) {
        const int64_t ih = 4 * th + i - ph;
        T* out = split + 4 * i * stride + q;
        if (ih >= 0 && ih < H)
          split_row_phases(plane + ih * W, W, pw, padded_w, stride, out);
        else
          for (int p = 0; p < 4; ++p) std::memset(out + p * stride, 0, sizeof(T) * padded_w);
      }
    }
  }

  // The adjoint: grad_x for input channel c of image n (whose tile rows the block holds, all of
  // them) from `acc`, plus b. Input row y = ih + ph is row y mod 4 of tile row y / 4 and, when
  // y mod 4 < 2, row y mod 4 + 4 of the tile row above: added in tile-row order. `row`: scratch
  // of 4 round_up(padded_w, L) elements.
  void merge_image(const T* acc, int64_t n, int64_t c, T b, T* gx, T* row) const {
    typedef VecOf<T> V;
    const int64_t rr = n * tiles_h - r0;  // the image's first tile row in the block
    T* out = gx + (n * g.C + gi * (g.C / g.groups) + c) * g.H * g.W;
    for (int64_t ih = 0; ih < g.H; ++ih) {
      const int64_t y = ih + g.ph, th = y / 4, i = y % 4;
      const T* own = th < tiles_h ? acc + 4 * i * stride + (rr + th) * padded_w : nullptr;
      const T* above = i < 2 && th > 0 && th - 1 < tiles_h ? acc + 4 * (i + 4) * stride + (rr + th - 1) * padded_w : nullptr;
      for (int64_t u = 0; u < padded_w; u += L) {
        V p[4], o[4];
        for (int e = 0; e < 4; ++e) {
          p[e] = above ? load(above + e * stride + u) : V{};
          if (own) p[e] = above ? p[e] + load(own + e * stride + u) : load(own + e * stride + u);
        }
        interleave4(p[0], p[1], p[2], p[3], o);
        for (int e = 0; e < 4; ++e) store(row + 4 * u + e * L, o[e]);
      }
      for (int64_t iw = 0; iw < g.W; ++iw) out[ih * g.W + iw] = row[iw + g.pw] + b;
    }
  }
};


// A forward task over a block of tile rows (a Block of winograd_f43.cpp or winograd_s2.cpp): its
// split rows, compaction plan and output table in kSlotPackA, V in kSlotTile, M in kSlotTile2;
// every input channel transformed, the Positions GEMMs, every output channel transformed.
template <int Positions, class T, class Block>
void forward_task(Block& b, const T* x, const T* packed_u, int64_t per_xi, const T* bias, T* y) {
  char* scratch = static_cast<char*>(thread_workspace(b.split_bytes() + b.plan_bytes() + b.outs_bytes(), kSlotPackA));
  T* split = reinterpret_cast<T*>(scratch);
  b.place_input(static_cast<T*>(thread_workspace(b.v_bytes(), kSlotTile)),
                reinterpret_cast<Compaction*>(scratch + b.split_bytes()));
  b.place_output(static_cast<T*>(thread_workspace(b.m_bytes(), kSlotTile2)),
                 reinterpret_cast<TileOut*>(scratch + b.split_bytes() + b.plan_bytes()));
  for (int64_t c = 0; c < b.g.C / b.g.groups; ++c) b.transform_input(x, c, split);
  for (int xi = 0; xi < Positions; ++xi) b.multiply(packed_u, per_xi, xi);
  for (int64_t k = b.k0; k < b.k1; ++k) b.transform_output(bias, k, y);
}

// The adjoint's task over the whole images [n0, n1) a Block holds: Z for every grad_out channel
// (in M's place), the Positions GEMMs into V's, then per input channel dd added up and merged
// into grad_x, plus b.
template <int Positions, class T, class Block>
void adjoint_task(Block& b, int64_t n0, int64_t n1, const T* gy, const T* packed_ut, int64_t per_xi, const T* bias,
                  T* gx) {
  const int64_t Cg = b.g.C / b.g.groups, row_bytes = sizeof(T) * 4 * round_up(b.padded_w, Vec<T>::kLanes);
  char* scratch = static_cast<char*>(thread_workspace(b.split_bytes() + row_bytes + b.plan_bytes(), kSlotPackA));
  T* split = reinterpret_cast<T*>(scratch);
  T* row = reinterpret_cast<T*>(scratch + b.split_bytes());
  b.place_input(static_cast<T*>(thread_workspace(b.v_bytes(), kSlotTile)),
                reinterpret_cast<Compaction*>(scratch + b.split_bytes() + row_bytes));
  b.place_output(static_cast<T*>(thread_workspace(b.m_bytes(), kSlotTile2)), nullptr);
  for (int64_t k = 0; k < b.g.K / b.g.groups; ++k) b.transform_grad_out(gy, k, split);
  for (int xi = 0; xi < Positions; ++xi) b.multiply_adjoint(packed_ut, per_xi, xi);
  for (int64_t c = 0; c < Cg; ++c) {
    b.transform_input_adjoint(c, split);
    const T bc = bias ? bias[b.gi * Cg + c] : T(0);
    for (int64_t n = n0; n < n1; ++n) b.merge_image(split, n, c, bc, gx, row);
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
