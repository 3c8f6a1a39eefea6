// Convolution forward, backward-data and backward-weight as implicit GEMM on one shared-memory
// tile (gemm_tile.cuh). Each kernel is a pair of operand loaders plus an epilogue.
//
// Index widths: the host (backends/cupy.py, _check_index_range) guarantees that every plane
// (H*W, OH*OW), every padded extent and every GEMM reduction length Cg*R*S, Kg*R*S fits in a
// 32-bit int, so coordinates inside a plane are int; anything that crosses planes or images
// (batch offsets, the pixel column index n = b*P + p) is i64.
//
// grid.z enumerates groups (times phases or splits); the host launches it in chunks of at
// most 65535 with z0 the first index of the chunk.
#include "common.cuh"
#include "gemm_tile.cuh"

// --------------------------------------------------------------------------- forward
// y[b][k][p] = sum over (c, r, s) of w[k][c][r][s] * x[b][c][oh*sh - ph + r*dh][ow*sw - pw + s*dw]
// per group: M = Kg output channels, columns n = b*P + p (P = OH*OW), reduction k = (c, r, s).

// A[m][k] = w[m][k]: one group's weights, a row-major rows x Kd matrix. k-fastest map.
template <class T, int TM>
struct WeightMatrix {
  const T* w;  // row m0 of the block's tile
  int rows;    // rows from m0 to the end of the group
  int Kd;
  __device__ void operator()(int k0, T (&regs)[TM]) const {
    const int k = k0 + threadIdx.x % 16;
#pragma unroll
    for (int j = 0; j < TM; ++j) {
      const int m = threadIdx.x / 16 + 16 * j;
      regs[j] = (k < Kd && m < rows) ? w[i64(m) * Kd + k] : T(0);
    }
  }
};

// B[k][n] = x[b][c][ih][iw] (0 in the padding), k = (c, r, s), for this thread's one column
// n = (b, oh, ow). mn-fastest map: the thread's TN rows are consecutive, so (c, r, s) is
// divided out once per tile and then stepped.
template <class T, int TN>
struct ImageColumns {
  const T* image;  // x[b][first channel of the group]
  i64 plane;       // H * W
  int ih0, iw0;    // top-left tap of this column's window
  bool valid;      // n < N * P
  int H, W, R, S, dh, dw, Kd;

  __device__ ImageColumns(const T* x, const ConvGeom& g, int group, i64 n) {
    const int Cg = int(g.C / g.groups), P = int(g.OH * g.OW), OW = int(g.OW);
    H = int(g.H), W = int(g.W), R = int(g.R), S = int(g.S), dh = int(g.dh), dw = int(g.dw);
    plane = g.H * g.W;
    Kd = Cg * R * S;
    valid = n < g.N * P;
    const i64 b = valid ? n / P : 0;
    const int p = int(n - b * P), oh = p / OW, ow = p - oh * OW;
    ih0 = oh * int(g.sh) - int(g.ph);
    iw0 = ow * int(g.sw) - int(g.pw);
    image = x + (b * g.C + i64(group) * Cg) * plane;
  }

  __device__ void operator()(int k0, T (&regs)[TN]) const {
    constexpr int BN = 16 * TN;
    const int k = k0 + (int(threadIdx.x) / BN) * TN;
    int c = k / (R * S), rs = k - c * R * S, r = rs / S, s = rs - r * S;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      T v = T(0);
      if (valid && k + j < Kd) {
        const int ih = ih0 + r * dh, iw = iw0 + s * dw;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = image[c * plane + ih * W + iw];
      }
      regs[j] = v;
      if (++s == S) {
        s = 0;
        if (++r == R) r = 0, ++c;
      }
    }
  }
};

template <class T, int TM, int TN>
__global__ void __launch_bounds__(kGemmThreads)
    fc_conv_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                    T* __restrict__ y, ConvGeom g, i64 z0) {
  constexpr int BM = TileShape<TM, TN>::BM, BN = TileShape<TM, TN>::BN;
  const int group = int(z0 + blockIdx.z);
  const int Cg = int(g.C / g.groups), Kg = int(g.K / g.groups), Kd = Cg * int(g.R * g.S);
  const int P = int(g.OH * g.OW);
  const int m0 = int(blockIdx.y) * BM;
  const i64 n0 = i64(blockIdx.x) * BN, columns = g.N * P;

  const WeightMatrix<T, TM> load_a{w + (i64(group) * Kg + m0) * Kd, Kg - m0, Kd};
  const ImageColumns<T, TN> load_b(x, g, group, n0 + threadIdx.x % BN);
  T acc[TM][TN];
  gemm_tile<T, TM, TN, false>(load_a, load_b, (Kd + kTileK - 1) / kTileK, acc);

  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const i64 n = n0 + tn + 16 * j;
    if (n >= columns) continue;
    const i64 b = n / P;
    const int p = int(n - b * P);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + tm + 16 * i;
      if (m >= Kg) continue;
      const i64 k = i64(group) * Kg + m;
      T v = acc[i][j];
      if (bias) v += bias[k];
      y[(b * g.K + k) * P + p] = v;
    }
  }
}

// --------------------------------------------------------------------------- backward-data
// gx = conv^T(gy, w), also the transposed convolution's forward, by the sub-pixel (phase)
// decomposition instead of zero insertion. Input pixels split into sh x sw phases by
// (ih mod sh, iw mod sw). In phase (ah, aw) only the kernel rows r with
// (ah + ph - r*dh) divisible by sh reach a pixel ih = ah + u*sh, from grad_out row
// oh = u + (ah + ph - r*dh) / sh: each phase is a dense stride-1 correlation of grad_out with a
// sub-kernel, and no multiply-by-zero is ever done. Per (group, phase): M = Cg input channels,
// columns n = (b, u, v) over the phase's pixels, reduction (k, i, j) over the phase's taps.

// Along one axis, the taps of a phase: kernel positions r = first + i*step for i < count; tap
// i reads grad_out row u + off0 - i*off_step for input row ah + u*stride. The solutions of
// r*dil = residue + pad (mod stride) are spaced stride/gcd(stride, dil) apart, so the first
// lies in [0, step) if any does.
struct PhaseTaps {
  int first, count, step, off0, off_step;
};

__device__ inline PhaseTaps phase_taps(int residue, int stride, int pad, int dil, int kernel) {
  int a = stride, b = dil;
  while (b != 0) {
    const int t = a % b;
    a = b;
    b = t;
  }
  PhaseTaps taps{0, 0, stride / a, 0, dil / a};
  for (int r = 0; r < kernel && r < taps.step; ++r) {
    const int reach = residue + pad - r * dil;  // may be negative: % and / are exact here
    if (reach % stride == 0) {
      taps.first = r;
      taps.count = (kernel - 1 - r) / taps.step + 1;
      taps.off0 = reach / stride;
      break;
    }
  }
  return taps;
}

// A[c][kd] = w[k][c][r_i][s_j], kd = (k*Th + i)*Tw + j over the phase's taps. k-fastest map:
// the thread's TM elements share kd, so it is divided out once per tile.
template <class T, int TM>
struct PhaseWeights {
  const T* w;  // w[group*Kg][c0]
  int rows;    // channels from c0 to the end of the group
  int Cg, RS, S, Kd;
  PhaseTaps th, tw;
  __device__ void operator()(int k0, T (&regs)[TM]) const {
    const int kd = k0 + threadIdx.x % 16;
    i64 offset = 0;
    if (kd < Kd) {
      const int taps = th.count * tw.count, k = kd / taps, ij = kd - k * taps, i = ij / tw.count,
                j = ij - i * tw.count;
      offset = i64(k) * Cg * RS + (th.first + i * th.step) * S + (tw.first + j * tw.step);
    }
#pragma unroll
    for (int jj = 0; jj < TM; ++jj) {
      const int c = threadIdx.x / 16 + 16 * jj;
      regs[jj] = (kd < Kd && c < rows) ? w[offset + i64(c) * RS] : T(0);
    }
  }
};

// B[kd][n] = gy[b][k][u + off0_h - i*step_h][v + off0_w - j*step_w] (0 outside grad_out) for the
// thread's one column n = (b, u, v). mn-fastest map, (k, i, j) stepped across the TN rows.
template <class T, int TN>
struct PhaseGradColumns {
  const T* image;  // gy[b][first channel of the group]
  i64 plane;       // OH * OW
  int u, v;
  bool valid;
  int OH, OW, Kd;
  PhaseTaps th, tw;

  // n = (b, u, v) over the phase's `pixels`, `cols_here` of them per row.
  __device__ PhaseGradColumns(const T* gy, const ConvGeom& g, int group, i64 n, i64 pixels, int cols_here,
                              int Kd_, PhaseTaps th_, PhaseTaps tw_)
      : Kd(Kd_), th(th_), tw(tw_) {
    const int Kg = int(g.K / g.groups);
    plane = g.OH * g.OW;
    OH = int(g.OH), OW = int(g.OW);
    valid = n < g.N * pixels;
    const i64 b = valid ? n / pixels : 0;
    const int q = int(n - b * pixels);
    u = q / cols_here;
    v = q - u * cols_here;
    image = gy + (b * g.K + i64(group) * Kg) * plane;
  }

  __device__ void operator()(int k0, T (&regs)[TN]) const {
    constexpr int BN = 16 * TN;
    const int kd = k0 + (int(threadIdx.x) / BN) * TN;
    const int taps = th.count * tw.count;  // > 0 whenever this is called (Kd > 0)
    int k = kd / taps, ij = kd - k * taps, i = ij / tw.count, j = ij - i * tw.count;
#pragma unroll
    for (int jj = 0; jj < TN; ++jj) {
      T value = T(0);
      if (valid && kd + jj < Kd) {
        const int oh = u + th.off0 - i * th.off_step, ow = v + tw.off0 - j * tw.off_step;
        if (oh >= 0 && oh < OH && ow >= 0 && ow < OW) value = image[k * plane + oh * OW + ow];
      }
      regs[jj] = value;
      if (++j == tw.count) {
        j = 0;
        if (++i == th.count) i = 0, ++k;
      }
    }
  }
};

template <class T, int TM, int TN>
__global__ void __launch_bounds__(kGemmThreads)
    fc_conv_backward_data(const T* __restrict__ gy, const T* __restrict__ w, const T* __restrict__ bias,
                          T* __restrict__ gx, ConvGeom g, i64 z0) {
  constexpr int BM = TileShape<TM, TN>::BM, BN = TileShape<TM, TN>::BN;
  const int sh = int(g.sh), sw = int(g.sw), H = int(g.H), W = int(g.W);
  // Residues >= H (or W) hold no pixel: only min(sh, H) x min(sw, W) phases are launched.
  const int phases_h = min32(sh, H), phases_w = min32(sw, W);
  const i64 z = z0 + blockIdx.z, phases = i64(phases_h) * phases_w;
  const int group = int(z / phases), phase = int(z - group * phases);
  const int ah = phase / phases_w, aw = phase - ah * phases_w;
  const int rows_here = (H - ah + sh - 1) / sh, cols_here = (W - aw + sw - 1) / sw;  // both >= 1
  const i64 pixels = i64(rows_here) * cols_here, columns = g.N * pixels;
  const i64 n0 = i64(blockIdx.x) * BN;
  // The grid is sized for the largest phase; smaller phases leave whole blocks idle. The test
  // depends on blockIdx only, so the block leaves together, before any barrier.
  if (n0 >= columns) return;

  const int Cg = int(g.C / g.groups), Kg = int(g.K / g.groups), c0 = int(blockIdx.y) * BM;
  const PhaseTaps th = phase_taps(ah, sh, int(g.ph), int(g.dh), int(g.R));
  const PhaseTaps tw = phase_taps(aw, sw, int(g.pw), int(g.dw), int(g.S));
  const int Kd = Kg * th.count * tw.count;

  const PhaseWeights<T, TM> load_a{w + (i64(group) * Kg * Cg + c0) * (g.R * g.S), Cg - c0, Cg, int(g.R * g.S),
                                   int(g.S), Kd, th, tw};
  const PhaseGradColumns<T, TN> load_b(gy, g, group, n0 + threadIdx.x % BN, pixels, cols_here, Kd, th, tw);
  T acc[TM][TN];
  gemm_tile<T, TM, TN, false>(load_a, load_b, (Kd + kTileK - 1) / kTileK, acc);

  // A phase no tap reaches (Kd == 0) still writes its pixels: bias or 0.
  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
  const i64 HW = g.H * g.W;
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const i64 n = n0 + tn + 16 * j;
    if (n >= columns) continue;
    const i64 b = n / pixels;
    const int q = int(n - b * pixels), u = q / cols_here, v = q - u * cols_here;
    const int pixel = (ah + u * sh) * W + (aw + v * sw);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int c = c0 + tm + 16 * i;
      if (c >= Cg) continue;
      const i64 channel = i64(group) * Cg + c;
      T value = acc[i][j];
      if (bias) value += bias[channel];
      gx[(b * g.C + channel) * HW + pixel] = value;
    }
  }
}

// --------------------------------------------------------------------------- backward-weight
// gw[k][c][r][s] = sum over q = (b, p) of gy[b][k][p] * x[b][c][oh*sh - ph + r*dh][ow*sw - pw + s*dw].
// Per group: M = Kg, columns n = (c, r, s), reduction over q in [0, N*P).
//
// Determinism: no atomics. Each block owns one BM x BN tile of grad_w for one split [q_begin,
// q_end) of the reduction and sums it in a fixed order; with splits > 1 every split writes its
// own slice of a workspace and fc_sum_splits adds the slices in split order. The split count
// is a function of the shape alone (backends/cupy.py, weight_splits), so every run, on any
// GPU, gives the same bits.

// A[m][q] = gy[b][k][p], q = b*P + p. k-fastest map: 16 consecutive q per half-warp.
template <class T, int TM>
struct GradRows {
  const T* gy;  // gy[0][group*Kg + m0]
  int rows;     // output channels from m0 to the end of the group
  i64 q_begin, q_end, image;  // image = K * P, the stride of b
  int P;
  __device__ void operator()(int k0, T (&regs)[TM]) const {
    const i64 q = q_begin + k0 + threadIdx.x % 16;
    const bool ok = q < q_end;
    const i64 b = ok ? q / P : 0;
    const i64 offset = b * image + (q - b * P);
#pragma unroll
    for (int j = 0; j < TM; ++j) {
      const int m = threadIdx.x / 16 + 16 * j;
      regs[j] = (ok && m < rows) ? gy[offset + i64(m) * P] : T(0);
    }
  }
};

// B[q][n] = x[b][c][ih][iw] (0 in the padding), n = (c, r, s). k-fastest map: the thread's TN
// columns are fixed for the block, so their (c, r, s) offsets are computed once.
template <class T, int TN>
struct PatchRows {
  const T* x;                  // x[0][first channel of the group]
  i64 channel_offset[TN];      // c * H * W
  int tap_h[TN], tap_w[TN];    // r * dh, s * dw
  bool column_ok[TN];
  i64 q_begin, q_end, image;   // image = C * H * W, the stride of b
  int P, OW, sh, sw, ph, pw, H, W;

  __device__ PatchRows(const T* x_group, const ConvGeom& g, i64 qb, i64 qe, int n0) {
    x = x_group;
    q_begin = qb, q_end = qe, image = g.C * g.H * g.W;
    P = int(g.OH * g.OW), OW = int(g.OW), sh = int(g.sh), sw = int(g.sw), ph = int(g.ph), pw = int(g.pw);
    H = int(g.H), W = int(g.W);
    const int R = int(g.R), S = int(g.S), columns = int(g.C / g.groups) * R * S;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + int(threadIdx.x) / 16 + 16 * j;
      column_ok[j] = n < columns;
      const int c = n / (R * S), rs = n - c * R * S, r = rs / S, s = rs - r * S;
      channel_offset[j] = i64(c) * g.H * g.W;
      tap_h[j] = r * int(g.dh);
      tap_w[j] = s * int(g.dw);
    }
  }

  __device__ void operator()(int k0, T (&regs)[TN]) const {
    const i64 q = q_begin + k0 + threadIdx.x % 16;
    const bool ok = q < q_end;
    const i64 b = ok ? q / P : 0;
    const int p = int(q - b * P), oh = p / OW, ow = p - oh * OW;
    const int ih0 = oh * sh - ph, iw0 = ow * sw - pw;
    const T* img = x + b * image;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int ih = ih0 + tap_h[j], iw = iw0 + tap_w[j];
      const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
      regs[j] = (ok && column_ok[j] && inside) ? img[channel_offset[j] + ih * W + iw] : T(0);
    }
  }
};

// out = grad_w when splits == 1, else the workspace [splits][K][Cg*R*S].
template <class T, int TM, int TN>
__global__ void __launch_bounds__(kGemmThreads)
    fc_conv_backward_weight(const T* __restrict__ gy, const T* __restrict__ x, T* __restrict__ out, ConvGeom g,
                            i64 splits, i64 chunk, i64 z0) {
  constexpr int BM = TileShape<TM, TN>::BM, BN = TileShape<TM, TN>::BN;
  const i64 z = z0 + blockIdx.z;
  const int group = int(z / splits);
  const i64 split = z - group * splits;
  const int Cg = int(g.C / g.groups), Kg = int(g.K / g.groups), columns = Cg * int(g.R * g.S);
  const i64 P = g.OH * g.OW, reduction = g.N * P;
  const i64 q_begin = split * chunk, q_end = min64(reduction, q_begin + chunk);
  // chunk <= 2^30 (host), so the tile count fits an int.
  const int k_tiles = q_end > q_begin ? int((q_end - q_begin + kTileK - 1) / kTileK) : 0;
  const int m0 = int(blockIdx.y) * BM, n0 = int(blockIdx.x) * BN;

  const GradRows<T, TM> load_a{gy + (i64(group) * Kg + m0) * P, Kg - m0, q_begin, q_end, g.K * P, int(P)};
  const PatchRows<T, TN> load_b(x + i64(group) * Cg * g.H * g.W, g, q_begin, q_end, n0);
  T acc[TM][TN];
  gemm_tile<T, TM, TN, true>(load_a, load_b, k_tiles, acc);

  T* slice = out + split * (g.K * columns);
  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + tm + 16 * i;
    if (m >= Kg) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + tn + 16 * j;
      if (n < columns) slice[(i64(group) * Kg + m) * columns + n] = acc[i][j];
    }
  }
}

// grad_w[i] = sum over s = 0, 1, ..., splits-1 of partial[s][i]: a fixed order, no atomics.
template <class T>
__global__ void fc_sum_splits(const T* __restrict__ partial, T* __restrict__ out, i64 count, i64 splits) {
  for (i64 i = global_thread_index(); i < count; i += global_thread_count()) {
    T sum = T(0);
    for (i64 s = 0; s < splits; ++s) sum += partial[s * count + i];
    out[i] = sum;
  }
}
