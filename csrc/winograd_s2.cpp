// Winograd F(2x2, 2x2) for 4x4 kernels at stride 2, dilation 1: DCGAN's and the decoders'
// layers, and (as their backward-data) the transposed convs that upsample by 2.
//
// Output tile (th, tw), outputs 2 th + e, 2 tw + f (e, f < 2), reads input rows 4 th - ph + i and
// columns 4 tw - pw + j (i, j < 6): the same 6x6 tiles at stride 4 as F(4x4, 3x3), so the tile
// numbering, the phase-split rows and the adjoint's merge are winograd.h's TileRows. Tap
// (r0 + 2q, s0 + 2q') meets input (r0 + 2u, s0 + 2v) of the tile at output (u - q, v - q'): per
// kernel phase (r0, s0) in {0, 1}^2 the tile is a 2x2 kernel g (taps q, q') over a 3x3 input d
// (u, v) at stride 1, which F(2x2, 2x2) computes with 9 multiplies instead of 16:
//   y = A^T [sum over c and the 4 phases of U (.) V] A,  U = G g G^T,  V = B^T d B,
// G rows (1,0), (1,1), (0,1); B^T rows (1,-1,0), (0,1,0), (0,-1,1); A^T rows (1,1,0), (0,1,1).
// The sums over the input channels and phases are 9 GEMMs (one per position xi of the 3x3
// transform) whose reduction runs over 4 C rows, c * 4 + phase: 1.78x fewer multiplies than
// the direct sum. Backward-data is the adjoint (Z = A gy A^T, dV = U^T Z, dd = B dV B^T added
// where the forward read d); backward-weight is G^T [sum_t Z_t (.) V_t] G per phase.
//
// Every coefficient is 0 or +-1: each output carries a roundoff or two more than the direct sum.
// Infinite inputs or weights go to the implicit GEMM (inf - inf in the transforms; kernel_table.cpp's
// finite_inputs_or_direct, and for backward-weight, which checks its result, finite_or_direct). One writer
// per output (forward, adjoint) and per-chunk partials added in chunk order (backward-weight):
// thread-count independent.
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

constexpr int kXi = 9;      // transform positions (3x3)
constexpr int kPhases = 4;  // kernel phases (r0, s0), phase = 2 r0 + s0

// u[a][b] = (G g G^T)[a][b] for one phase's taps g (q, q') = f[8 q + 2 q'] (f at the phase's
// first tap of a 4x4 kernel); on scalars or on vectors of kernels.
template <class X, class F>
inline void kernel_transform(F f, X (&u)[3][3]) {
  X gf[3][2];  // G g
  for (int s = 0; s < 2; ++s) {
    gf[0][s] = f(2 * s);
    gf[1][s] = f(2 * s) + f(8 + 2 * s);
    gf[2][s] = f(8 + 2 * s);
  }
  for (int a = 0; a < 3; ++a) {  // (G g) G^T
    u[a][0] = gf[a][0];
    u[a][1] = gf[a][0] + gf[a][1];
    u[a][2] = gf[a][1];
  }
}

// U = G g G^T, all 9 positions, for one MR-row panel of one group, straight into pack_a's panels
// (xi's packed matrix at packed + xi * per_xi, a panel [column][MR rows]): rows k and columns
// 4 c + phase, or (transposed, for the adjoint) rows 4 c + phase and columns k. Each column's MR
// values are made together and stored as one block (one store per value was most of the time
// on DCGAN G1, 19 MB of U per call).
template <class T>
void weight_transform_panel(const T* w, int64_t Kg, int64_t Cg, int64_t p0, bool transposed, T* packed,
                            int64_t per_xi) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t MR = MicroTile<T>::MR;
  constexpr int NV = (MR + L - 1) / L;  // vectors per panel column
  const int64_t rows = transposed ? kPhases * Cg : Kg, cols = transposed ? Kg : kPhases * Cg;
  const int64_t valid = min64(MR, rows - p0);  // rows past the last: zero kernels
  T* panel = packed + p0 * cols;
  if (!transposed) {  // lanes: the panel's rows k; per input channel, all 4 phases
    for (int64_t c = 0; c < Cg; ++c) {
      alignas(32) T taps[16][NV * L] = {};
      for (int64_t i = 0; i < valid; ++i)
        for (int s = 0; s < 16; ++s) taps[s][i] = w[((p0 + i) * Cg + c) * 16 + s];
      for (int ph = 0; ph < kPhases; ++ph) {
        const int first = ph / 2 * 4 + ph % 2;
        for (int nv = 0; nv < NV; ++nv) {
          V u[3][3];
          kernel_transform([&](int e) { return load(taps[first + e] + nv * L); }, u);
          alignas(32) T lanes[L];
          for (int xi = 0; xi < kXi; ++xi) {
            store(lanes, u[xi / 3][xi % 3]);
            std::memcpy(panel + xi * per_xi + (kPhases * c + ph) * MR + nv * L, lanes,
                        sizeof(T) * min64(L, MR - nv * L));
          }
        }
      }
    }
    return;
  }
  for (int64_t k = 0; k < Kg; ++k) {  // transposed: per column k, the panel's MR (c, phase) rows
    T col[kXi][MR] = {};
    for (int64_t i = 0; i < valid; ++i) {
      const int64_t cp = p0 + i, ph = cp % kPhases;
      const T* f = w + (k * Cg + cp / kPhases) * 16 + ph / 2 * 4 + ph % 2;
      T u[3][3];
      kernel_transform([&](int e) { return f[e]; }, u);
      for (int xi = 0; xi < kXi; ++xi) col[xi][i] = u[xi / 3][xi % 3];
    }
    for (int xi = 0; xi < kXi; ++xi) std::memcpy(panel + xi * per_xi + k * MR, col[xi], sizeof(col[xi]));
  }
}

// V = B^T d B for the L padded tiles q0 .. q0 + L - 1, each phase's 3x3 input (tile rows r0 + 2u,
// columns s0 + 2v, from TileRows::split_tile_rows' layout), compacted by `keep` and stored whole
// at v + phase * phase_stride + xi * xi_stride.
template <class T>
void input_transform(const T* split, int64_t stride, int64_t q0, const int32_t* keep, T* v, int64_t phase_stride,
                     int64_t xi_stride) {
  typedef VecOf<T> V;
  for (int ph = 0; ph < kPhases; ++ph) {
    const int r0 = ph / 2, s0 = ph % 2;
    V rows[3][3];  // B^T d, row a of it per column b
    for (int b = 0; b < 3; ++b) {
      const int j = s0 + 2 * b;
      V d[3];
      for (int u = 0; u < 3; ++u) d[u] = load(split + (4 * (r0 + 2 * u) + j % 4) * stride + q0 + j / 4);
      rows[0][b] = d[0] - d[1];
      rows[1][b] = d[1];
      rows[2][b] = d[2] - d[1];
    }
    T* out = v + ph * phase_stride;
    for (int a = 0; a < 3; ++a) {  // (B^T d) B
      store(out + (3 * a) * xi_stride, permute(rows[a][0] - rows[a][1], keep));
      store(out + (3 * a + 1) * xi_stride, permute(rows[a][1], keep));
      store(out + (3 * a + 2) * xi_stride, permute(rows[a][2] - rows[a][1], keep));
    }
  }
}

// z = A g for a column of a 2x2 grad_out tile: (g0, g0 + g1, g1). A = G.
template <class V>
inline void a_column(V g0, V g1, V (&z)[3]) {
  z[0] = g0;
  z[1] = g0 + g1;
  z[2] = g1;
}

// Z = A gy A^T for 2x2 grad_out tiles on vectors, gt[i][j] = row i, column j.
template <class V>
inline void grad_out_transform(const V (&gt)[2][2], V (&z)[3][3]) {
  V za[3][2];  // A gy, per grad_out column
  for (int j = 0; j < 2; ++j) {
    V col[3];
    a_column(gt[0][j], gt[1][j], col);
    for (int a = 0; a < 3; ++a) za[a][j] = col[a];
  }
  for (int a = 0; a < 3; ++a) a_column(za[a][0], za[a][1], z[a]);  // (A gy) A^T
}

// A block of tile rows (TileRows, 2x2 output tiles, 9 positions) whose V holds 4 rows, one per
// phase, for each of `channels` input channels: V[xi][4 c + phase][t].
template <class T>
struct Block : TileRows<T> {
  typedef VecOf<T> V;
  using Base = TileRows<T>;
  using Base::L, Base::g, Base::gi, Base::r0, Base::r1, Base::tiles_h, Base::tiles_w, Base::padded_w, Base::nt,
      Base::nq, Base::nvec, Base::ld, Base::stride, Base::split_tile_rows, Base::split_bytes, Base::vs, Base::ms,
      Base::v, Base::plan, Base::m, Base::outs;

  Block(const ConvGeom& geom, int64_t group, int64_t row0, int64_t row1, int64_t channels)
      : Base(geom, group, row0, row1, 2, kXi, kPhases * channels) {}

  // V's rows 4 slot .. 4 slot + 3 for channel c (of the group), with `split` (split_bytes) as scratch.
  void transform_input(const T* x, int64_t c, int64_t slot, T* split) const {
    split_tile_rows(x, g.C, gi * (g.C / g.groups) + c, g.H, g.W, g.ph, g.pw, 6, split);
    for (int64_t vi = 0; vi < nvec; ++vi)
      input_transform(split, stride, vi * L, plan[vi].keep, v + kPhases * slot * ld + plan[vi].dst, ld, vs);
  }

  void transform_input(const T* x, int64_t c, T* split) const { transform_input(x, c, c, split); }

  // M[xi] = U[xi] V[xi].
  void multiply(const T* packed_u, int64_t per_xi, int xi) const {
    const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
    gemm_packed<T>(Kg, nt, kPhases * Cg, packed_u + (gi * kXi + xi) * per_xi, v + xi * vs, ld, m + xi * ms, ld, false);
  }

  // Y = A^T M A plus the bias for output channel k (of the group), on vectors of compact tiles;
  // each tile's two rows stored through its TileOut, clipped at the bottom and right edges.
  void transform_output(const T* bias, int64_t k, T* y) const {
    alignas(32) T buf[2 * L];
    const V b = V{} + (bias ? bias[gi * (g.K / g.groups) + k] : T(0));
    T* plane = y + k * g.OH * g.OW;
    for (int64_t t0 = 0; t0 < nt; t0 += L) {
      V mm[3][3];
      for (int xi = 0; xi < kXi; ++xi) mm[xi / 3][xi % 3] = load(m + xi * ms + k * ld + t0);
      const int64_t lanes = min64(L, nt - t0);
      for (int i = 0; i < 2; ++i) {
        V q[3];  // row i of A^T M
        for (int j = 0; j < 3; ++j) q[j] = mm[i][j] + mm[i + 1][j];
        V lo, hi;
        interleave(q[0] + q[1] + b, q[1] + q[2] + b, lo, hi);
        store(buf, lo);
        store(buf + L, hi);
        for (int64_t l = 0; l < lanes; ++l) {
          const TileOut& to = outs[t0 + l];
          if (i >= to.rows) continue;
          T* dst = plane + to.offset + i * g.OW;
          dst[0] = buf[2 * l];
          if (to.cols == 2) dst[1] = buf[2 * l + 1];
        }
      }
    }
  }

  // The adjoint: Z = A gy A^T for grad_out channel k (of the group) into M's rows. `split`
  // (split_bytes) holds each tile row's grad_out rows 2 th + i split by column parity p at
  // split + (2 i + p) * stride + (r - r0) * padded_w.
  void transform_grad_out(const T* gy, int64_t k, T* split) const {
    for (int s = 0; s < 4; ++s)  // lanes read past the last tile row: zero
      for (int64_t q = nq; q < stride; ++q) split[s * stride + q] = T(0);
    for (int64_t r = r0; r < r1; ++r) {  // in order: a row's whole-vector overrun is rewritten by the next
      const int64_t n = r / tiles_h, th = r % tiles_h, q = (r - r0) * padded_w;
      const T* plane = gy + (n * g.K + gi * (g.K / g.groups) + k) * g.OH * g.OW;
      for (int i = 0; i < 2; ++i) {
        const int64_t oh = 2 * th + i;
        T* out = split + 2 * i * stride + q;
        if (oh < g.OH)
          split_row_parities(plane + oh * g.OW, g.OW, 0, padded_w, stride, out);
        else
          for (int p = 0; p < 2; ++p) std::memset(out + p * stride, 0, sizeof(T) * padded_w);
      }
    }
    for (int64_t vi = 0; vi < nvec; ++vi) {
      const T* s = split + vi * L;
      const V gt[2][2] = {{load(s), load(s + stride)}, {load(s + 2 * stride), load(s + 3 * stride)}};
      V z[3][3];
      grad_out_transform(gt, z);
      T* out = m + k * ld + plan[vi].dst;
      for (int xi = 0; xi < kXi; ++xi) store(out + xi * ms, permute(z[xi / 3][xi % 3], plan[vi].keep));
    }
  }

  // The adjoint: dV[xi] = U[xi]^T Z[xi], into V's rows.
  void multiply_adjoint(const T* packed_ut, int64_t per_xi, int xi) const {
    const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
    gemm_packed<T>(kPhases * Cg, nt, Kg, packed_ut + (gi * kXi + xi) * per_xi, m + xi * ms, ld, v + xi * vs, ld, false);
  }

  // The adjoint: dd = B dV B^T for input channel c (of the group), per phase, on vectors of padded
  // tiles (phantom lanes zero), added into `acc` (split_bytes) in split_tile_rows' layout: tile
  // row i, column j of padded tile q lands on row i, phase j mod 4 at q + j / 4.
  void transform_input_adjoint(int64_t c, T* acc) const {
    std::memset(acc, 0, split_bytes());
    for (int64_t vi = 0; vi < nvec; ++vi) {
      const Compaction& pl = plan[vi];
      for (int ph = 0; ph < kPhases; ++ph) {
        const int r0 = ph / 2, s0 = ph % 2;
        const T* src = v + (kPhases * c + ph) * ld + pl.dst;
        V bm[3][3];  // B dV, per column b: B's rows (1,0,0), (-1,1,-1), (0,0,1)
        for (int b = 0; b < 3; ++b) {
          V col[3];
          for (int a = 0; a < 3; ++a) col[a] = permute(keep_lanes(load(src + (3 * a + b) * vs), pl.real), pl.spread);
          bm[0][b] = col[0];
          bm[1][b] = col[1] - col[0] - col[2];
          bm[2][b] = col[2];
        }
        for (int u = 0; u < 3; ++u) {  // (B dV) B^T
          const V r[3] = {bm[u][0], bm[u][1] - bm[u][0] - bm[u][2], bm[u][2]};
          for (int w = 0; w < 3; ++w) {
            const int i = r0 + 2 * u, j = s0 + 2 * w;
            T* a = acc + (4 * i + j % 4) * stride + vi * L + j / 4;
            store(a, load(a) + r[w]);
          }
        }
      }
    }
  }
};

// grad_w from the summed M ([xi][4 c + phase][k], rows of Kg): per phase, G^T M G (G^T rows
// (1,1,0), (0,1,1)) into taps (r0 + 2r, s0 + 2s). On vectors of k, channels innermost so that
// each k's 16 taps per channel are written in order along its row of grad_w.
template <class T>
void weight_output(const ConvGeom& g, const T* msum, int64_t gi, int64_t k0, T* gw) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, nk = min64(L, Kg - k0);
  for (int64_t c = 0; c < Cg; ++c) {
    alignas(32) T out[16][L];
    for (int ph = 0; ph < kPhases; ++ph) {
      V mm[3][3];
      for (int xi = 0; xi < kXi; ++xi)  // (the last vector of a row: its lanes past Kg zero)
        mm[xi / 3][xi % 3] = row_vector(msum + (xi * kPhases * Cg + kPhases * c + ph) * Kg + k0, 0, nk);
      const int r0 = ph / 2, s0 = ph % 2;
      for (int r = 0; r < 2; ++r) {
        V row[3];  // row r of G^T M
        for (int b = 0; b < 3; ++b) row[b] = mm[r][b] + mm[r + 1][b];
        store(out[(r0 + 2 * r) * 4 + s0], row[0] + row[1]);
        store(out[(r0 + 2 * r) * 4 + s0 + 2], row[1] + row[2]);
      }
    }
    for (int e0 = 0; e0 < 16; e0 += L) {  // L x L blocks of out transposed: lane l's taps e0 .. e0 + L - 1
      V r[L];
      for (int j = 0; j < L; ++j) r[j] = load(out[e0 + j]);
      transpose(r);
      for (int64_t l = 0; l < nk; ++l) store(gw + ((gi * Kg + k0 + l) * Cg + c) * 16 + e0, r[l]);
    }
  }
}

// Backward-weight windows: a task's V, its packed copy and Z^T per window of tile rows. Deeper
// than F(4x4, 3x3)'s: with 4x4 kernels on small planes a tile row holds few tiles, and each window
// is a GEMM whose reduction runs over its tiles.
constexpr int64_t kS2WindowBytes = 2 << 20;

// Forward and adjoint: items (tile rows or images) per task. Each task streams all of U (9 x K x
// 4 C) through its GEMMs once, so it needs enough tiles to pay for that: with 4x4 kernels on small
// planes 1 MiB of transforms can be under 20 tiles, and DCGAN G1's 19 MB of U then came from
// memory at 9 flops per byte. So at least kMinTiles tiles, while that leaves 2 tasks.
constexpr int64_t kMinTiles = 128;

inline int64_t s2_task_block(int64_t item_bytes, int64_t tiles_per_item, int64_t items, int64_t groups) {
  const int64_t block = winograd_task_block(item_bytes, items, groups);
  return max64(block, min64(ceil_div(kMinTiles, tiles_per_item), ceil_div(items, 2)));
}

}  // namespace

template <class T>
void conv_forward_winograd_s2(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
  const int64_t tiles_h = ceil_div(g.OH, 2), tiles_w = ceil_div(g.OW, 2), tile_rows = g.N * tiles_h;
  if (tile_rows == 0 || tiles_w == 0) return;

  const int64_t per_xi = packed_a_size<T>(Kg, kPhases * Cg);
  T* packed_u = static_cast<T*>(thread_workspace(sizeof(T) * kXi * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, false, packed_u, per_xi, kXi, threads, weight_transform_panel<T>, kPhases);

  // A task: a block of tile rows (crossing images) of one group.
  const int64_t block =
      s2_task_block(kXi * (kPhases * Cg + Kg) * tiles_w * int64_t(sizeof(T)), tiles_w, tile_rows, g.groups);
  const int64_t nblocks = ceil_div(tile_rows, block);
  parallel_tasks(g.groups * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / nblocks, r0 = (task % nblocks) * block;
    Block<T> b(g, gi, r0, min64(r0 + block, tile_rows), Cg);
    forward_task<kXi>(b, x, packed_u, per_xi, bias, y);
  });
}

// Backward-data as the adjoint of the forward, over the forward's tiles. Input tiles overlap
// (6x6 at stride 4), so a task takes whole images of one group and adds each image's
// contributions in a fixed order (as winograd_f43.cpp's adjoint).
template <class T>
void conv_backward_data_winograd_s2(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
  const int64_t tiles_h = ceil_div(g.OH, 2), tiles_w = ceil_div(g.OW, 2);
  if (g.N * g.C * g.H * g.W == 0) return;
  if (tiles_h * tiles_w == 0)
    return conv_backward_data<T>(g, gy, w, bias, gx, threads);

  const int64_t per_xi = packed_a_size<T>(kPhases * Cg, Kg);
  T* packed_ut = static_cast<T*>(thread_workspace(sizeof(T) * kXi * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, true, packed_ut, per_xi, kXi, threads, weight_transform_panel<T>, kPhases);

  const int64_t block = s2_task_block(kXi * (kPhases * Cg + Kg) * tiles_h * tiles_w * int64_t(sizeof(T)),
                                      tiles_h * tiles_w, g.N, g.groups);
  const int64_t nblocks = ceil_div(g.N, block);
  parallel_tasks(g.groups * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / nblocks, n0 = (task % nblocks) * block, n1 = min64(n0 + block, g.N);
    Block<T> b(g, gi, n0 * tiles_h, n1 * tiles_h, Cg);
    adjoint_task<kXi>(b, n0, n1, gy, packed_ut, per_xi, bias, gx);
  });
}

// Backward-weight: 9 GEMMs M[xi][4 c + phase][k] whose reduction runs over the tiles, A = V (the
// forward's input transform, packed) and B = Z^T, made on vectors of k from grad_out rows laid
// out channel-last. Tasks: (group, chunk of tile rows, block of input channels); windows of tile
// rows within a chunk; per-chunk partial sums added in chunk order.
template <class T>
void conv_backward_weight_winograd_s2(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, OHW = g.OH * g.OW;
  const int64_t tiles_h = ceil_div(g.OH, 2), tiles_w = ceil_div(g.OW, 2), tile_rows = g.N * tiles_h;
  if (tile_rows == 0 || tiles_w == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * Cg * 16);
    return;
  }

  const int64_t KW = round_up(Kg, NR), msize = kXi * kPhases * Cg * Kg;  // one group's M
  const Chunks chunks = weight_chunks(tile_rows, msize);
  const int64_t nchunks = chunks.count, per_chunk = chunks.per;
  int64_t cblocks = 1;  // channel blocks (of 8 or more) while there are fewer than 8 tasks
  while (g.groups * nchunks * cblocks < 8 && cblocks * 16 <= Cg) cblocks *= 2;
  const int64_t cper = ceil_div(Cg, cblocks);
  cblocks = ceil_div(Cg, cper);

  T* partials = static_cast<T*>(thread_workspace(sizeof(T) * g.groups * nchunks * msize, kSlotShared));
  const int64_t per_gi = nchunks * cblocks;
  parallel_tasks(g.groups * per_gi, threads, [&](int64_t task) {
    const int64_t gi = task / per_gi, chunk = (task / cblocks) % nchunks, cb = task % cblocks;
    const int64_t c0 = cb * cper, nc = min64(cper, Cg - c0);
    const int64_t r_begin = chunk * per_chunk, r_end = min64(r_begin + per_chunk, tile_rows);
    const int64_t row_bytes = kXi * tiles_w * (2 * kPhases * nc + KW) * int64_t(sizeof(T));
    const int64_t wrows = max64(1, min64(kS2WindowBytes / row_bytes, r_end - r_begin));
    const Block<T> widest(g, gi, r_begin, r_begin + wrows, nc);
    const int64_t packed_size = packed_a_size<T>(kPhases * nc, widest.nt) + kSkew<T>, zs = widest.nt * KW + kSkew<T>;
    const int64_t Wd = round_up(2 * tiles_w, L), gyt_row = Wd * KW;  // grad_out rows, channel-last
    char* work = static_cast<char*>(thread_workspace(
        sizeof(T) * (kXi * widest.vs + kXi * packed_size + kXi * zs + 2 * gyt_row) + widest.split_bytes(), kSlotTile));
    T* v = reinterpret_cast<T*>(work);
    T* packed = v + kXi * widest.vs;
    T* zt = packed + kXi * packed_size;
    T* gyt = zt + kXi * zs;
    T* split = gyt + 2 * gyt_row;
    Compaction* plans = static_cast<Compaction*>(thread_workspace(widest.plan_bytes(), kSlotPackA));
    T* m = partials + (gi * nchunks + chunk) * msize;

    for (int64_t w0 = r_begin; w0 < r_end; w0 += wrows) {
      Block<T> b(g, gi, w0, min64(w0 + wrows, r_end), nc);
      b.place_input(v, plans);
      for (int64_t c = 0; c < nc; ++c) b.transform_input(x, c0 + c, c, split);
      for (int xi = 0; xi < kXi; ++xi) pack_a<T>(kPhases * nc, b.nt, b.v + xi * b.vs, b.ld, 1, packed + xi * packed_size);

      for (int64_t r = w0; r < b.r1; ++r) {
        const int64_t n = r / tiles_h, th = r % tiles_h;
        for (int i = 0; i < 2; ++i) {
          const int64_t oh = 2 * th + i;
          if (oh >= g.OH)
            std::memset(gyt + i * gyt_row, 0, sizeof(T) * gyt_row);
          else
            rows_channel_last(gy + (n * g.K + gi * Kg) * OHW + oh * g.OW, OHW, Kg, g.OW, Wd, gyt + i * gyt_row, KW);
        }
        for (int64_t tw = 0; tw < tiles_w; ++tw) {
          T* z = zt + ((r - w0) * tiles_w + tw) * KW;
          for (int64_t k = 0; k < KW; k += L) {
            const T* top = gyt + 2 * tw * KW + k;
            const V gt[2][2] = {{load(top), load(top + KW)}, {load(top + gyt_row), load(top + gyt_row + KW)}};
            V zr[3][3];
            grad_out_transform(gt, zr);
            for (int xi = 0; xi < kXi; ++xi) store(z + xi * zs + k, zr[xi / 3][xi % 3]);
          }
        }
      }
      for (int xi = 0; xi < kXi; ++xi)
        gemm_packed<T>(kPhases * nc, Kg, b.nt, packed + xi * packed_size, zt + xi * zs, KW,
                       m + (xi * kPhases * Cg + kPhases * c0) * Kg, Kg, w0 > r_begin);
    }
  });

  sum_chunk_partials(partials, g.groups, nchunks, msize, threads);
  const int64_t kvecs = ceil_div(Kg, L);
  parallel_tasks(g.groups * kvecs, threads, [&](int64_t task) {
    const int64_t gi = task / kvecs;
    weight_output(g, partials + gi * nchunks * msize, gi, (task % kvecs) * L, gw);
  });
}

#define FC_INSTANTIATE(T)                                                                                    \
  template void conv_forward_winograd_s2<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);         \
  template void conv_backward_data_winograd_s2<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_winograd_s2<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
