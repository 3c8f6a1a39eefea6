// Winograd F(4x4, 3x3) forward for 3x3 kernels at stride 1, dilation 1 (Lavin & Gray 2016,
// interpolation points 0, +-1, +-2, infinity): each 4x4 output tile takes 36 multiplies per
// (k, c) instead of 144 directly, or 64 with F(2x2, 3x3) -- 1.78x fewer GEMM flops than
// winograd_f23.cpp, whose structure this follows: U = G w G^T packed per position xi (36 of
// them), V = B^T d B for the 6x6 input tiles, 36 GEMMs with the tiles as columns, then
// Y = A^T M A with the bias. Also the backward-data of a stride-1 conv (the flipped kernel's
// forward, cpp_algorithms.py).
//
// Tiles are numbered across tile rows and images, so a task's transforms run on whole vectors
// even where a row has 3 tiles (MNIST's 11x11 outputs; numbering them row by row left 5 of 8
// lanes idle and made this slower than F(2x2, 3x3) there). A tile's input columns are
// 4 tw - pw + j, j = 0..5: with each input row split into its four column phases (column
// mod 4), column j of consecutive tiles is one contiguous load (phase j mod 4, offset j / 4) --
// if each tile row carries one phantom tile, whose lanes a permute drops before V is stored.
// The output transform stores each tile's rows through a small per-tile table. Deep layers with
// few tiles (ResNet's 7x7 stage) split a task's output channels instead of its tile rows, so
// that the transformed weights meet several tile panels while in L2 (winograd_forward_tasks).
//
// Accuracy: the transforms' coefficients reach 5 (B), 1/24 (G) and 8 (A), so each output
// carries more roundoffs than F(2x2, 3x3)'s (measured: ~2e-6 of the sum of |products| in float32
// vs ~1e-7, inside the tests' bound); the autotuner only picks it where it is faster. Infinite
// inputs or weights go to the implicit GEMM (inf - inf in the transforms; kernel_table.cpp's
// finite_inputs_or_direct, and for backward-weight, which checks its result, finite_or_direct). One writer per
// output: thread-count independent.
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

constexpr int kTile = 6, kXi = 36;  // input tile side, transform positions

// r = B^T d for one column of six values. B^T rows: (4,0,-5,0,1,0), (0,-4,-4,1,1,0),
// (0,4,-4,-1,1,0), (0,-2,-1,2,1,0), (0,2,-1,-2,1,0), (0,4,0,-5,0,1).
template <class T, class V = VecOf<T>>
inline void bt_column(const V (&d)[kTile], V (&r)[kTile]) {
  const V four = V{} + T(4), five = V{} + T(5), two = V{} + T(2);
  const V t0 = d[4] - four * d[2], t1 = d[3] - four * d[1];
  const V t2 = d[4] - d[2], t3 = two * (d[3] - d[1]);
  r[0] = four * d[0] - five * d[2] + d[4];
  r[1] = t0 + t1;
  r[2] = t0 - t1;
  r[3] = t2 + t3;
  r[4] = t2 - t3;
  r[5] = four * d[1] - five * d[3] + d[5];
}

// V = B^T d B for the L padded tiles q0 .. q0 + L - 1; `split` holds, per tile row i of the
// input tile and phase p, the padded sequence at split + (4 i + p) * stride. The lanes are
// compacted by `keep` (phantom tiles dropped) and stored whole at v + xi * xi_stride + dst: the
// lanes past the real ones land where the next vector's go (or on slack).
template <class T>
void input_transform(const T* split, int64_t stride, int64_t q0, const int32_t* keep, T* v, int64_t xi_stride) {
  typedef VecOf<T> V;
  V rows[kTile][kTile];  // B^T d, row i of it per column j
  for (int j = 0; j < kTile; ++j) {
    V d[kTile], r[kTile];
    for (int i = 0; i < kTile; ++i) d[i] = load(split + (4 * i + j % 4) * stride + q0 + j / 4);
    bt_column<T>(d, r);
    for (int i = 0; i < kTile; ++i) rows[i][j] = r[i];
  }
  for (int i = 0; i < kTile; ++i) {  // (B^T d) B: the same combination along each row
    V r[kTile];
    bt_column<T>(rows[i], r);
    for (int j = 0; j < kTile; ++j) store(v + (i * kTile + j) * xi_stride, permute(r[j], keep));
  }
}

// y = A^T m for one column of six values. A^T rows: (1,1,1,1,1,0), (0,1,-1,2,-2,0),
// (0,1,1,4,4,0), (0,1,-1,8,-8,1).
template <class T, class V = VecOf<T>>
inline void at_column(const V (&m)[kTile], V (&y)[4]) {
  const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = m[0] + s12 + s34;
  y[1] = d12 + T(2) * d34;
  y[2] = s12 + T(4) * s34;
  y[3] = d12 + T(8) * d34 + m[5];
}

// z = A g for one column of a 4x4 grad_out tile. A's rows (1,0,0,0), (1,1,1,1), (1,-1,1,-1),
// (1,2,4,8), (1,-2,4,-8), (0,0,0,1).
template <class T, class V = VecOf<T>>
inline void a_column(const V (&gc)[4], V (&z)[kTile]) {
  const V s02 = gc[0] + gc[2], s13 = gc[1] + gc[3];
  const V t02 = gc[0] + T(4) * gc[2], t13 = T(2) * gc[1] + T(8) * gc[3];
  z[0] = gc[0];
  z[1] = s02 + s13;
  z[2] = s02 - s13;
  z[3] = t02 + t13;
  z[4] = t02 - t13;
  z[5] = gc[3];
}

// Z = A gy A^T for the L padded tiles q0 .. q0 + L - 1 of 4x4 grad_out tiles; `split` holds,
// per tile row i and phase (column) j, the padded sequence at split + (4 i + j) * stride.
// Compacted and stored like input_transform's V.
template <class T>
void grad_out_transform(const T* split, int64_t stride, int64_t q0, const int32_t* keep, T* z, int64_t xi_stride) {
  typedef VecOf<T> V;
  V cols[kTile][4];  // A gy, row a of it per column j
  for (int j = 0; j < 4; ++j) {
    V gc[4], zc[kTile];
    for (int i = 0; i < 4; ++i) gc[i] = load(split + (4 * i + j) * stride + q0);
    a_column<T>(gc, zc);
    for (int a = 0; a < kTile; ++a) cols[a][j] = zc[a];
  }
  for (int a = 0; a < kTile; ++a) {  // (A gy) A^T
    V zr[kTile];
    a_column<T>(cols[a], zr);
    for (int c = 0; c < kTile; ++c) store(z + (a * kTile + c) * xi_stride, permute(zr[c], keep));
  }
}

// r = B m for one column of six values (the adjoint of bt_column: B^T's columns as rows).
template <class T, class V = VecOf<T>>
inline void b_column(const V (&m)[kTile], V (&r)[kTile]) {
  r[0] = T(4) * m[0];
  r[1] = T(4) * (m[2] - m[1] + m[5]) + T(2) * (m[4] - m[3]);
  r[2] = -(T(5) * m[0] + T(4) * (m[1] + m[2]) + m[3] + m[4]);
  r[3] = m[1] - m[2] + T(2) * (m[3] - m[4]) - T(5) * m[5];
  r[4] = m[0] + m[1] + m[2] + m[3] + m[4];
  r[5] = m[5];
}

// The kernel transform's G (U = G w G^T; backward-weight: grad_w = G^T M G).
template <class T>
constexpr T kG[kTile][3] = {{T(1) / 4, 0, 0},
                            {T(-1) / 6, T(-1) / 6, T(-1) / 6},
                            {T(-1) / 6, T(1) / 6, T(-1) / 6},
                            {T(1) / 24, T(1) / 12, T(1) / 6},
                            {T(1) / 24, T(-1) / 12, T(1) / 6},
                            {0, 0, 1}};

// U = G w G^T, all 36 positions, for one MR-row panel of one group, straight into pack_a's
// panels (xi's packed matrix at packed + xi * per_xi): rows k and columns c, or (transposed, for
// the adjoint) rows c and columns k.
template <class T>
void weight_transform_panel(const T* w, int64_t Kg, int64_t Cg, int64_t r0, bool transposed, T* packed,
                            int64_t per_xi) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t MR = MicroTile<T>::MR;
  const auto& G = kG<T>;
  const int64_t rows = transposed ? Cg : Kg, cols = transposed ? Kg : Cg;
  const int64_t row_step = transposed ? 9 : Cg * 9, col_step = transposed ? Cg * 9 : 9;  // in w
  // On vectors of L kernels (columns c0 .. c0 + L - 1 of one row): the scalar version of this
  // was a quarter of MNIST conv3's forward.
  for (int64_t c0 = 0; c0 < cols; c0 += L) {
    const int64_t nc = min64(L, cols - c0);
    // Each position's nc x MR values, column by column as pack_a lays them out: gathered here and
    // copied whole (written straight into the 36 panels, one value at a time, they were half of a
    // 512-channel layer's time).
    alignas(32) T panel[kXi][L * MR];
    for (int64_t i = 0; i < MR; ++i) {
      alignas(32) T taps[9][L] = {};  // rows past the last: zero kernels
      if (r0 + i < rows)
        for (int64_t l = 0; l < nc; ++l)
          for (int s = 0; s < 9; ++s) taps[s][l] = w[(r0 + i) * row_step + (c0 + l) * col_step + s];
      V f[9], gf[kTile][3];  // G f
      for (int s = 0; s < 9; ++s) f[s] = load(taps[s]);
      for (int a = 0; a < kTile; ++a)
        for (int s = 0; s < 3; ++s) gf[a][s] = G[a][0] * f[s] + G[a][1] * f[3 + s] + G[a][2] * f[6 + s];
      alignas(32) T u[kXi][L];  // (G f) G^T
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) store(u[a * kTile + b], G[b][0] * gf[a][0] + G[b][1] * gf[a][1] + G[b][2] * gf[a][2]);
      for (int xi = 0; xi < kXi; ++xi)
        for (int64_t l = 0; l < nc; ++l) panel[xi][l * MR + i] = u[xi][l];
    }
    for (int xi = 0; xi < kXi; ++xi) std::memcpy(packed + xi * per_xi + r0 * cols + c0 * MR, panel[xi], sizeof(T) * nc * MR);
  }
}

// A block of tile rows (TileRows, 4x4 output tiles, 36 positions, V's rows the input channels).
template <class T>
struct Block : TileRows<T> {
  using Base = TileRows<T>;
  using Base::L, Base::g, Base::gi, Base::tiles_h, Base::tiles_w, Base::padded_w, Base::nt, Base::nvec, Base::ld,
      Base::stride, Base::split_tile_rows, Base::split_bytes, Base::r0, Base::r1, Base::vs, Base::ms, Base::v,
      Base::plan, Base::m, Base::outs, Base::k0, Base::k1;

  Block(const ConvGeom& geom, int64_t group, int64_t row0, int64_t row1)
      : Base(geom, group, row0, row1, 4, kXi, geom.C / geom.groups) {}

  // V's rows for channel c (of the group), with `split` (split_bytes) as scratch.
  void transform_input(const T* x, int64_t c, T* split) const {
    split_tile_rows(x, g.C, gi * (g.C / g.groups) + c, g.H, g.W, g.ph, g.pw, kTile, split);
    for (int64_t vi = 0; vi < nvec; ++vi) input_transform(split, stride, vi * L, plan[vi].keep, v + c * ld + plan[vi].dst, vs);
  }

  // The adjoint: Z = A gy A^T for grad_out channel k (of the group) into M's rows.
  void transform_grad_out(const T* gy, int64_t k, T* split) const {
    split_tile_rows(gy, g.K, gi * (g.K / g.groups) + k, g.OH, g.OW, 0, 0, 4, split);
    for (int64_t vi = 0; vi < nvec; ++vi)
      grad_out_transform(split, stride, vi * L, plan[vi].keep, m + k * ld + plan[vi].dst, ms);
  }

  // The adjoint: dV[xi] = U[xi]^T Z[xi], into V's rows.
  void multiply_adjoint(const T* packed_ut, int64_t per_xi, int xi) const {
    gemm_packed<T>(g.C / g.groups, nt, g.K / g.groups, packed_ut + (gi * kXi + xi) * per_xi, m + xi * ms, ld, v + xi * vs,
                   ld, false);
  }

  // The adjoint: dd = B dV B^T for input channel c (of the group), on vectors of padded tiles
  // (phantom lanes zero), added into `acc` (split_bytes) in split_tile_rows' layout: tile column
  // j of padded tile q lands on phase j mod 4 at q + j / 4 (the last real tile's columns 4 and 5
  // on its row's phantom slot).
  void transform_input_adjoint(int64_t c, T* acc) const {
    typedef VecOf<T> V;
    std::memset(acc, 0, split_bytes());
    for (int64_t vi = 0; vi < nvec; ++vi) {
      const Compaction& pl = plan[vi];
      V cols[kTile][kTile];  // B dV, row i of it per column j
      for (int j = 0; j < kTile; ++j) {
        V col[kTile], r[kTile];
        for (int i = 0; i < kTile; ++i)
          col[i] = permute(keep_lanes(load(v + (i * kTile + j) * vs + c * ld + pl.dst), pl.real), pl.spread);
        b_column<T>(col, r);
        for (int i = 0; i < kTile; ++i) cols[i][j] = r[i];
      }
      for (int i = 0; i < kTile; ++i) {  // (B dV) B^T
        V r[kTile];
        b_column<T>(cols[i], r);
        for (int j = 0; j < kTile; ++j) {
          T* a = acc + (4 * i + j % 4) * stride + vi * L + j / 4;
          store(a, load(a) + r[j]);
        }
      }
    }
  }

  // M[xi] = U[xi] V[xi].
  void multiply(const T* packed_u, int64_t per_xi, int xi) const {
    gemm_packed<T>(k1 - k0, nt, g.C / g.groups, packed_u + (gi * kXi + xi) * per_xi + k0 * (g.C / g.groups), v + xi * vs,
                   ld, m + xi * ms, ld, false);
  }

  // Y = A^T M A plus the bias for output channel k (of the group), on vectors of compact
  // tiles; each tile's rows stored through its TileOut, clipped at the bottom and right edges.
  void transform_output(const T* bias, int64_t k, T* y) const {
    typedef VecOf<T> V;
    alignas(32) T buf[4 * L];
    const V b = V{} + (bias ? bias[gi * (g.K / g.groups) + k] : T(0));
    T* plane = y + k * g.OH * g.OW;
    for (int64_t t0 = 0; t0 < nt; t0 += L) {
      V q[4][kTile];  // A^T M, per column
      for (int j = 0; j < kTile; ++j) {
        V col[kTile], yc[4];
        for (int i = 0; i < kTile; ++i) col[i] = load(m + (i * kTile + j) * ms + (k - k0) * ld + t0);
        at_column<T>(col, yc);
        for (int i = 0; i < 4; ++i) q[i][j] = yc[i];
      }
      const int64_t lanes = min64(L, nt - t0);
      for (int i = 0; i < 4; ++i) {
        V yr[4], o[4];
        at_column<T>(q[i], yr);
        interleave4(yr[0] + b, yr[1] + b, yr[2] + b, yr[3] + b, o);
        for (int e = 0; e < 4; ++e) store(buf + e * L, o[e]);
        for (int64_t l = 0; l < lanes; ++l) {
          const TileOut& to = outs[t0 + l];
          if (i >= to.rows) continue;
          T* dst = plane + to.offset + i * g.OW;
          if (to.cols == 4)
            std::memcpy(dst, buf + 4 * l, 4 * sizeof(T));
          else
            for (int e = 0; e < to.cols; ++e) dst[e] = buf[4 * l + e];
        }
      }
    }
  }
};

}  // namespace

template <class T>
void conv_forward_winograd_f43(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
  const int64_t tiles_h = ceil_div(g.OH, 4), tiles_w = ceil_div(g.OW, 4), tile_rows = g.N * tiles_h;
  if (tile_rows == 0 || tiles_w == 0) return;

  const int64_t per_xi = packed_a_size<T>(Kg, Cg);
  T* packed_u = static_cast<T*>(thread_workspace(sizeof(T) * kXi * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, false, packed_u, per_xi, kXi, threads, weight_transform_panel<T>);

  // A task: a block of tile rows (crossing images) of one group, and a block of its output channels.
  const WinogradTasks t =
      winograd_forward_tasks<T>(kXi * (Cg + Kg) * tiles_w * int64_t(sizeof(T)), tile_rows, tiles_w, Kg, g.groups);
  parallel_tasks(g.groups * t.row_blocks * t.channel_blocks, threads, [&](int64_t task) {
    const int64_t gi = task / (t.row_blocks * t.channel_blocks), rb = task / t.channel_blocks % t.row_blocks;
    const int64_t k0 = task % t.channel_blocks * t.channels, r0 = rb * t.rows;
    Block<T> b(g, gi, r0, min64(r0 + t.rows, tile_rows));
    b.output_channels(k0, min64(k0 + t.channels, Kg));
    forward_task<kXi>(b, x, packed_u, per_xi, bias, y);
  });
}

// Backward-data as the adjoint of the forward (as winograd_f23.cpp's): Z_t = A gy_t A^T,
// dV_t[c] = sum_k U[k,c] (.) Z_t[k] (36 GEMMs, U^T packed), and dd_t = B dV_t B^T added into
// grad_x where the forward read its tile. Over the forward's tiles (MNIST's 11x11 -> 13x13: 9 per
// image, where the flipped kernel's forward needs 16). Input tiles overlap (6x6 at stride 4), so
// a task takes whole images of one group and adds each image's contributions in a fixed order.
template <class T>
void conv_backward_data_winograd_f43(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
  const int64_t tiles_h = ceil_div(g.OH, 4), tiles_w = ceil_div(g.OW, 4);
  if (g.N * g.C * g.H * g.W == 0) return;
  if (tiles_h * tiles_w == 0)
    return conv_backward_data<T>(g, gy, w, bias, gx, threads);

  const int64_t per_xi = packed_a_size<T>(Cg, Kg);
  T* packed_ut = static_cast<T*>(thread_workspace(sizeof(T) * kXi * per_xi * g.groups, kSlotShared));
  transform_weights(g, w, true, packed_ut, per_xi, kXi, threads, weight_transform_panel<T>);

  const int64_t block = winograd_task_block(kXi * (Cg + Kg) * tiles_h * tiles_w * int64_t(sizeof(T)), g.N, g.groups);
  const int64_t nblocks = ceil_div(g.N, block);
  parallel_tasks(g.groups * nblocks, threads, [&](int64_t task) {
    const int64_t gi = task / nblocks, n0 = (task % nblocks) * block, n1 = min64(n0 + block, g.N);
    Block<T> b(g, gi, n0 * tiles_h, n1 * tiles_h);
    adjoint_task<kXi>(b, n0, n1, gy, packed_ut, per_xi, bias, gx);
  });
}

// Backward-weight: differentiating Y = A^T [U (.) V] A with U = G w G^T gives
// grad_w = G^T [sum_t Z_t (.) V_t] G with Z_t = A gy_t A^T: 36 GEMMs M[xi][c][k] whose
// reduction runs over the tiles, A = V (the forward's input transform, packed) and B = Z^T,
// made on vectors of k from grad_out rows laid out channel-last (so no lane idles however
// small the plane). Tasks: (group, chunk of tile rows), windows of tile rows within a chunk
// sized to stay in L2; per-chunk partial sums added in chunk order: thread-count independent.
template <class T>
void conv_backward_weight_winograd_f43(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, OHW = g.OH * g.OW;
  const int64_t tiles_h = ceil_div(g.OH, 4), tiles_w = ceil_div(g.OW, 4), tile_rows = g.N * tiles_h;
  if (tile_rows == 0 || tiles_w == 0) {  // an empty sum
    std::memset(gw, 0, sizeof(T) * g.K * Cg * 9);
    return;
  }

  const int64_t KW = round_up(Kg, NR), msize = kXi * Cg * Kg;  // one group's M, [xi][c][k]
  const Chunks chunks = weight_chunks(tile_rows, msize);
  const int64_t nchunks = chunks.count, per_chunk = chunks.per;
  T* partials = static_cast<T*>(thread_workspace(sizeof(T) * g.groups * nchunks * msize, kSlotShared));

  parallel_tasks(g.groups * nchunks, threads, [&](int64_t task) {
    const int64_t gi = task / nchunks, chunk = task % nchunks;
    const int64_t r_begin = chunk * per_chunk, r_end = min64(r_begin + per_chunk, tile_rows);
    // Per tile row: V and its packed copy, Z^T.
    const int64_t row_bytes = kXi * tiles_w * (2 * round_up(Cg, MR) + KW) * int64_t(sizeof(T));
    const int64_t wrows = max64(1, min64(kWindowBytes / row_bytes, r_end - r_begin));
    const Block<T> widest(g, gi, r_begin, r_begin + wrows);
    const int64_t packed_size = packed_a_size<T>(Cg, widest.nt) + kSkew<T>, zs = widest.nt * KW + kSkew<T>;
    const int64_t Wd = round_up(4 * tiles_w, L), gyt_row = Wd * KW;  // grad_out rows, channel-last
    char* work = static_cast<char*>(thread_workspace(
        sizeof(T) * (kXi * widest.vs + kXi * packed_size + kXi * zs + 4 * gyt_row) + widest.split_bytes(), kSlotTile));
    T* v = reinterpret_cast<T*>(work);
    T* packed = v + kXi * widest.vs;
    T* zt = packed + kXi * packed_size;
    T* gyt = zt + kXi * zs;
    T* split = gyt + 4 * gyt_row;
    Compaction* plans = static_cast<Compaction*>(thread_workspace(widest.plan_bytes(), kSlotPackA));
    T* m = partials + (gi * nchunks + chunk) * msize;

    for (int64_t w0 = r_begin; w0 < r_end; w0 += wrows) {
      Block<T> b(g, gi, w0, min64(w0 + wrows, r_end));
      b.place_input(v, plans);
      for (int64_t c = 0; c < Cg; ++c) b.transform_input(x, c, split);
      for (int xi = 0; xi < kXi; ++xi) pack_a<T>(Cg, b.nt, b.v + xi * b.vs, b.ld, 1, packed + xi * packed_size);

      for (int64_t r = w0; r < b.r1; ++r) {
        const int64_t n = r / tiles_h, th = r % tiles_h;
        for (int i = 0; i < 4; ++i) {
          const int64_t oh = 4 * th + i;
          if (oh >= g.OH)
            std::memset(gyt + i * gyt_row, 0, sizeof(T) * gyt_row);
          else
            rows_channel_last(gy + (n * g.K + gi * Kg) * OHW + oh * g.OW, OHW, Kg, g.OW, Wd, gyt + i * gyt_row, KW);
        }
        for (int64_t tw = 0; tw < tiles_w; ++tw) {
          T* z = zt + ((r - w0) * tiles_w + tw) * KW;
          for (int64_t k = 0; k < KW; k += L) {
            V za[kTile][4];  // A gy, per grad_out column
            for (int j = 0; j < 4; ++j) {
              V col[4], zc[kTile];
              for (int i = 0; i < 4; ++i) col[i] = load(gyt + i * gyt_row + (4 * tw + j) * KW + k);
              a_column<T>(col, zc);
              for (int a = 0; a < kTile; ++a) za[a][j] = zc[a];
            }
            for (int a = 0; a < kTile; ++a) {  // (A gy) A^T
              V zr[kTile];
              a_column<T>(za[a], zr);
              for (int c = 0; c < kTile; ++c) store(z + (a * kTile + c) * zs + k, zr[c]);
            }
          }
        }
      }
      for (int xi = 0; xi < kXi; ++xi)
        gemm_packed<T>(Cg, Kg, b.nt, packed + xi * packed_size, zt + xi * zs, KW, m + xi * Cg * Kg, Kg, w0 > r_begin);
    }
  });

  sum_chunk_partials(partials, g.groups, nchunks, msize, threads);
  // grad_w = G^T M G on vectors of k (M is [xi][c][k]); a task per (group, input channel).
  const auto& G = kG<T>;
  parallel_tasks(g.groups * Cg, threads, [&](int64_t task) {
    const int64_t gi = task / Cg, c = task % Cg;
    const T* msum = partials + gi * nchunks * msize + c * Kg;
    for (int64_t k0 = 0; k0 < Kg; k0 += L) {
      const int64_t nk = min64(L, Kg - k0);
      V mg[kTile][3] = {};  // M G
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b) {
          // (the last vector of a row: its lanes past Kg zero)
          const V mab = row_vector(msum + (a * kTile + b) * Cg * Kg + k0, 0, nk);
          for (int s = 0; s < 3; ++s) mg[a][s] += mab * G[b][s];
        }
      alignas(32) T out[9][L];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) {
          V sum{};
          for (int a = 0; a < kTile; ++a) sum += G[a][r] * mg[a][s];
          store(out[r * 3 + s], sum);
        }
      for (int64_t l = 0; l < nk; ++l)
        for (int e = 0; e < 9; ++e) gw[((gi * Kg + k0 + l) * Cg + c) * 9 + e] = out[e][l];
    }
  });
}

#define FC_INSTANTIATE(T)                                                                \
  template void conv_forward_winograd_f43<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_data_winograd_f43<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_winograd_f43<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
