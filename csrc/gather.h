// Tile gathers ("im2col" restricted to one tile of columns): the packing step that turns a
// convolution into gemm_packed calls. Compiled per ISA with the kernels.
//
// A patch matrix has one row per (channel, tap_h, tap_w) and one column per output pixel of
// a grid grid_h x grid_w per image, images one after another; column q is pixel
// (n, qh, qw) = (q / (grid_h*grid_w), ...). Row (c, i, j), column (n, qh, qw) holds
// src[n][c][qh*step_h + offs_h[i]][qw*step_w + offs_w[j]], or 0 outside the source plane.
// Tiles span image boundaries, so small planes still give long GEMM dimensions.
#pragma once
#include <cstdint>
#include <cstring>

namespace fastconv {
namespace FC_ISA {

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

struct PatchSpec {
  int64_t Hs, Ws;            // source plane
  int64_t image_stride;      // elements between images of the source
  int64_t nh, nw;            // taps
  int64_t step_h, step_w;    // source step per grid step
  int64_t grid_h, grid_w;    // output grid per image
  const int64_t* offs_h;     // [nh]
  const int64_t* offs_w;     // [nw]
  const int64_t* col_lo;     // [nw]: first qw whose source column is inside the plane
  const int64_t* col_hi;     // [nw]: one past the last such qw
};

// col_lo / col_hi for every tap: 0 <= qw*step + off < Ws  <=>  lo <= qw < hi.
static inline void column_ranges(int64_t nw, const int64_t* offs_w, int64_t step, int64_t Ws, int64_t grid_w,
                                 int64_t* lo, int64_t* hi) {
  for (int64_t j = 0; j < nw; ++j) {
    const int64_t off = offs_w[j];
    lo[j] = min64(off >= 0 ? 0 : ceil_div(-off, step), grid_w);
    hi[j] = off < Ws ? min64(ceil_div(Ws - off, step), grid_w) : 0;
    if (hi[j] < lo[j]) hi[j] = lo[j];
  }
}

constexpr int64_t kSmallGrid = 64;  // output pixels per image up to which gather_patch uses a table

// Writes rows [row0, row0 + nrows) and columns [q0, q0 + nq) of the patch matrix. Row rr =
// row - row0 goes to out + (rr / panel) * panel_stride + (rr % panel) * row_stride, column t
// at + t * col_stride: panel = 1 gives a plain row-major matrix (panel_stride = its width),
// panel = MR with col_stride = MR writes straight into gemm_packed's A-panel layout.
template <class T>
static void gather_patch(const PatchSpec& p, const T* src, int64_t row0, int64_t nrows, int64_t q0, int64_t nq,
                         T* out, int64_t panel, int64_t panel_stride, int64_t row_stride, int64_t col_stride) {
  const int64_t taps = p.nh * p.nw, grid = p.grid_h * p.grid_w;
  for (int64_t row = row0; row < row0 + nrows; ++row) {
    const int64_t c = row / taps, i = (row % taps) / p.nw, j = row % p.nw;
    const int64_t rr = row - row0, lo = p.col_lo[j], hi = p.col_hi[j], off_w = p.offs_w[j];
    T* o = out + (rr / panel) * panel_stride + (rr % panel) * row_stride;
    if (grid <= kSmallGrid) {
      // Small planes (MNIST's 3x3 grids): rows of a few elements made the segment loop below
      // cost more per element than the copy. A table of this tap's source offsets over one
      // image's grid (-1 in the padding), then one lookup per element.
      int64_t tab[kSmallGrid];
      for (int64_t q = 0; q < grid; ++q) {
        const int64_t ih = (q / p.grid_w) * p.step_h + p.offs_h[i], iw = (q % p.grid_w) * p.step_w + off_w;
        tab[q] = ih >= 0 && ih < p.Hs && iw >= 0 && iw < p.Ws ? ih * p.Ws + iw : -1;
      }
      int64_t n = q0 / grid, q = q0 % grid;
      const T* plane = src + n * p.image_stride + c * p.Hs * p.Ws;
      for (int64_t t = 0; t < nq; ++t) {
        o[t * col_stride] = tab[q] >= 0 ? plane[tab[q]] : T(0);
        if (++q == grid) q = 0, plane += p.image_stride;
      }
      continue;
    }
    int64_t n = q0 / grid, qh = (q0 % grid) / p.grid_w, qw = q0 % p.grid_w, t = 0;
    while (t < nq) {
      const int64_t seg = min64(nq - t, p.grid_w - qw);
      const int64_t ih = qh * p.step_h + p.offs_h[i];
      T* dst = o + t * col_stride;
      if (ih < 0 || ih >= p.Hs) {
        for (int64_t u = 0; u < seg; ++u) dst[u * col_stride] = T(0);
      } else {
        const T* src_row = src + n * p.image_stride + c * p.Hs * p.Ws + ih * p.Ws;
        // [a, b): the part of [qw, qw + seg) whose source column is inside the plane
        const int64_t a = min64(max64(lo, qw), qw + seg), b = max64(min64(hi, qw + seg), a);
        int64_t u = 0;
        for (; u < a - qw; ++u) dst[u * col_stride] = T(0);
        if (p.step_w == 1 && col_stride == 1) {
          // An inline loop, not memcpy: segments are often a few dozen elements (small
          // planes), where the library call costs more than the copy.
          const T* __restrict from = src_row + qw + off_w;
          T* __restrict to = dst;
          for (; u < b - qw; ++u) to[u] = from[u];
        } else {
          for (; u < b - qw; ++u) dst[u * col_stride] = src_row[(qw + u) * p.step_w + off_w];
        }
        for (; u < seg; ++u) dst[u * col_stride] = T(0);
      }
      t += seg;
      qw = 0;
      if (++qh == p.grid_h) qh = 0, ++n;
    }
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
