// Tile gathers ("im2col" restricted to one tile of output pixels): the packing step that
// turns a convolution into gemm_panels calls. Compiled per ISA with the kernels.
#pragma once
#include <cstdint>
#include <cstring>

namespace fastconv {
namespace FC_ISA {

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// out[t * out_step] = src_row[a + t * step] for t in [0, n) where 0 <= a + t*step < W, else 0.
template <class T>
static inline void gather_row(T* out, int64_t out_step, const T* src_row, int64_t n, int64_t a, int64_t step,
                              int64_t W) {
  int64_t lo = a >= 0 ? 0 : ceil_div(-a, step);
  int64_t hi = a < W ? ceil_div(W - a, step) : 0;
  hi = min64(hi, n);
  lo = min64(lo, hi);
  for (int64_t t = 0; t < lo; ++t) out[t * out_step] = T(0);
  if (step == 1 && out_step == 1) {
    std::memcpy(out + lo, src_row + a + lo, sizeof(T) * (hi - lo));
  } else {
    for (int64_t t = lo; t < hi; ++t) out[t * out_step] = src_row[a + t * step];
  }
  for (int64_t t = hi; t < n; ++t) out[t * out_step] = T(0);
}

// One tile of the patch matrix of a strided, offset window over `channels` planes of
// (Hs, Ws). Patch row (c, i, j) holds, for output pixel q = q0 + t of a grid grid_w wide,
// src[c][qh*step_h + offs_h[i]][qw*step_w + offs_w[j]] (0 outside the plane).
// Rows [row0, row0 + nrows) of the full (channels*nh*nw) row range are written, at
// out + (row - row0) * row_stride + t * col_stride.
struct PatchSpec {
  int64_t Hs, Ws, nh, nw, step_h, step_w, grid_w;
  const int64_t* offs_h;
  const int64_t* offs_w;
};

template <class T>
static void gather_patch_rows(const PatchSpec& p, const T* src, int64_t row0, int64_t nrows, int64_t q0, int64_t nq,
                              T* out, int64_t row_stride, int64_t col_stride) {
  const int64_t taps = p.nh * p.nw;
  for (int64_t row = row0; row < row0 + nrows; ++row) {
    const int64_t c = row / taps, i = (row % taps) / p.nw, j = row % p.nw;
    const T* plane = src + c * p.Hs * p.Ws;
    T* o = out + (row - row0) * row_stride;
    int64_t qh = q0 / p.grid_w, qw = q0 % p.grid_w, t = 0;
    while (t < nq) {
      const int64_t seg = min64(nq - t, p.grid_w - qw);
      const int64_t ih = qh * p.step_h + p.offs_h[i];
      if (ih < 0 || ih >= p.Hs) {
        for (int64_t u = 0; u < seg; ++u) o[(t + u) * col_stride] = T(0);
      } else {
        gather_row(o + t * col_stride, col_stride, plane + ih * p.Ws, seg, qw * p.step_w + p.offs_w[j], p.step_w,
                   p.Ws);
      }
      t += seg;
      ++qh;
      qw = 0;
    }
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
