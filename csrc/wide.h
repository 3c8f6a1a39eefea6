// The "wide rows" layout of conv_wide.cpp (forward) and conv_depthwise.cpp's plane kernels; the
// strided row copies of dot_wide's tap columns (conv_wide_weight.cpp).
//
// Input rows and columns are split by stride phase: slab (c, a, b) holds
// x[c][hr*sh + a - ph][wc*sw + b - pw] for hr < srows, wc < Wp, and zero outside x. Tap (r, s)
// of output pixel (oh, ow) then reads slab (c, r*dh % sh, s*dw % sw) at row oh + r*dh / sh,
// column ow + s*dw / sw: at every stride, a stride-1 read. With the slab's rows laid out one
// after another, columns q = i*Wp + ow (output row i of a block, ow < Wp) read tap (c, r, s) at
// one contiguous run from tap_offset; the columns with ow >= OW are computed and dropped,
// Wp - OW = (S-1)*dw / sw of every Wp. At stride 1 there is one phase: the zero-bordered input.
// Compiled per ISA with the kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gather.h"
#include "gemm_microkernel.h"
#include "geometry.h"

namespace fastconv {
namespace FC_ISA {

struct WideLayout {
  int64_t Wp;      // slab width
  int64_t halo;    // slab rows beyond a block's output rows
  int64_t phases;  // sh * sw slabs per channel
};

static inline WideLayout wide_layout(const ConvGeom& g) {
  return {g.OW + (g.S - 1) * g.dw / g.sw, (g.R - 1) * g.dh / g.sh, g.sh * g.sw};
}

// The slab columns [lo, hi) of column phase b whose input column wc*sw + b - pw lies in [0, W).
struct SlabColumns {
  int64_t lo, hi;
};
static inline SlabColumns slab_columns(const ConvGeom& g, int64_t Wp, int64_t b) {
  const int64_t lo = min64(Wp, g.pw > b ? ceil_div(g.pw - b, g.sw) : 0);
  return {lo, max64(lo, min64(Wp, g.W + g.pw - b > 0 ? ceil_div(g.W + g.pw - b, g.sw) : 0))};
}

// Where tap (r, s) starts within a channel's slabs, phase slabs `phase_stride` elements apart.
static inline int64_t tap_offset(const ConvGeom& g, int64_t Wp, int64_t phase_stride, int64_t r, int64_t s) {
  const int64_t a = r * g.dh % g.sh, b = s * g.dw % g.sw;
  return (a * g.sw + b) * phase_stride + (r * g.dh / g.sh) * Wp + s * g.dw / g.sw;
}

// d[e] = row[2e + shift] for e in [e0, e1); returns e1. Vectors of L take the even lanes of two
// loads (the scalar loop was half of a stride-2 depthwise conv's time); the tail whose second
// load would pass the row's W elements is scalar.
template <class T>
static inline int64_t gather_even(const T* row, int64_t W, int64_t shift, int64_t e0, int64_t e1, T* d) {
  constexpr int L = Vec<T>::kLanes;
  int64_t e = e0;
  for (; e + L <= e1 && 2 * e + shift + 2 * L <= W; e += L) {
    const T* src = row + 2 * e + shift;
    store(d + e, deinterleave_even(load(src), load(src + L)));
  }
  for (; e < e1; ++e) d[e] = row[2 * e + shift];
  return e;
}

// d[e] = a channel plane's pixel at tap (ti, tj) for the output pixels p0 .. p0 + kc - 1 of a
// conv without padding, by runs along output rows (stride 1 copied, stride 2 as even lanes).
template <class T>
void gather_tap(const ConvGeom& g, const T* plane, int64_t ti, int64_t tj, int64_t p0, int64_t kc, T* d) {
  const T* at_tap = plane + ti * g.dh * g.W + tj * g.dw;
  const int64_t width = g.W - tj * g.dw;  // elements of a row from the tap's column on
  for (int64_t e = 0, oh = p0 / g.OW, ow = p0 % g.OW; e < kc; ++oh, ow = 0) {
    const T* row = at_tap + oh * g.sh * g.W;
    const int64_t run = min64(g.OW - ow, kc - e);
    if (g.sw == 1)
      std::memcpy(d + e, row + ow, sizeof(T) * run);
    else if (g.sw == 2)
      gather_even(row, width, 2 * ow, 0, run, d + e);
    else
      for (int64_t t = 0; t < run; ++t) d[e + t] = row[(ow + t) * g.sw];
    e += run;
  }
}

// d[e] = row[e*sw + shift] for e in [lo, hi) and zero elsewhere in [0, width); all zeros where
// row is null (an input row outside x). build_slabs' and dot_wide's rows of one input row.
template <class T>
static inline void strided_row(const ConvGeom& g, const T* row, int64_t shift, int64_t lo, int64_t hi,
                               int64_t width, T* d) {
  int64_t e = 0;
  if (row) {
    for (; e < lo; ++e) d[e] = T(0);
    if (g.sw == 1)
      for (; e < hi; ++e) d[e] = row[e + shift];
    else if (g.sw == 2)
      e = gather_even(row, g.W, shift, e, hi, d);
    else
      for (; e < hi; ++e) d[e] = row[e * g.sw + shift];
  }
  for (; e < width; ++e) d[e] = T(0);
}

// One image's slabs for output rows oh0 .. oh0 + srows - 1 (plus halo): channel c, phase p at
// dst + c * channel_stride + p * phase_stride, rows Wp apart. x points at the image's first
// channel of the group.
template <class T>
static void build_slabs(const ConvGeom& g, const T* x, int64_t channels, int64_t oh0, int64_t srows, int64_t Wp,
                        T* dst, int64_t channel_stride, int64_t phase_stride) {
  for (int64_t a = 0; a < g.sh; ++a)
    for (int64_t b = 0; b < g.sw; ++b) {
      // A phase no tap reads (a 1x1 kernel at stride 2 reads one of four) is left unwritten.
      bool read_h = false, read_w = false;
      for (int64_t r = 0; r < g.R; ++r) read_h |= r * g.dh % g.sh == a;
      for (int64_t s = 0; s < g.S; ++s) read_w |= s * g.dw % g.sw == b;
      if (!read_h || !read_w) continue;
      const SlabColumns cols = slab_columns(g, Wp, b);
      const int64_t lo = cols.lo, hi = cols.hi;
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t hr = 0; hr < srows; ++hr) {
          const int64_t ih = (oh0 + hr) * g.sh + a - g.ph;
          // slab column wc is input column wc * sw + b - pw
          strided_row(g, ih >= 0 && ih < g.H ? x + (c * g.H + ih) * g.W : nullptr, b - g.pw, lo, hi, Wp,
                      dst + c * channel_stride + (a * g.sw + b) * phase_stride + hr * Wp);
        }
    }
}

// The largest |x[i]|, or +inf if any x[i] is inf or NaN: the Winograd kernels' input scan. (x - x
// is 0 for finite x and NaN otherwise, and a NaN survives the sums; vectors of independent sums, as
// the compiler may not reorder one sum.)
template <class T>
static T finite_max_abs(const T* x, int64_t n) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  V nonfinite[2] = {}, largest[2] = {};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L)
#pragma GCC unroll 2
    for (int u = 0; u < 2; ++u) {
      V v;
      std::memcpy(&v, x + i + u * L, sizeof(V));
      nonfinite[u] += v - v;
      const V a = v < 0 ? -v : v;
      largest[u] = a > largest[u] ? a : largest[u];
    }
  T rest = 0, most = 0;
  for (; i < n; ++i) {
    rest += x[i] - x[i];
    most = std::max(most, std::fabs(x[i]));
  }
  for (int u = 0; u < 2; ++u)
    for (int l = 0; l < L; ++l) rest += nonfinite[u][l], most = std::max(most, largest[u][l]);
  return rest == T(0) ? most : std::numeric_limits<T>::infinity();
}

// Whether x holds no inf or NaN: the result of every backward-weight kernel that meets values the
// direct sum does not (kernel_table.cpp).
template <class T>
static bool all_finite(const T* x, int64_t n) {
  return finite_max_abs(x, n) != std::numeric_limits<T>::infinity();
}

}  // namespace FC_ISA
}  // namespace fastconv
