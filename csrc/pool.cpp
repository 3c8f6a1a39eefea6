// Max and average pooling, forward and backward, one plane (n, c) per task.
//
// The window arithmetic is PyTorch's CPU kernels' (aten/src/ATen/native/cpu/MaxPoolKernel.cpp,
// AvgPoolKernel.cpp) line for line, including the index of an all -inf window and the NaN
// rule, and the backward passes scatter in PyTorch's order so float sums round alike.
#include <omp.h>

#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"

namespace fastconv {
namespace FC_ISA {
namespace {

// Parallel over planes: N*C is the natural independent axis (no plane is shared).
template <class Body>
void for_each_plane(int64_t planes, int threads, const Body& body) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) body(p);
}

// torch's avg-pool window: the divisor counts padding up to H + pad (not beyond), and an
// empty window (possible in ceil mode) yields 0 and takes no gradient.
struct AvgWindow {
  int64_t h0, h1, w0, w1, divisor;
};

inline AvgWindow avg_window(const PoolGeom& g, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int64_t h1 = min64(h0 + g.kh, g.H + g.ph), w1 = min64(w0 + g.kw, g.W + g.pw);
  const int64_t with_pad = (h1 - h0) * (w1 - w0);
  h0 = max64(h0, 0);
  w0 = max64(w0, 0);
  h1 = min64(h1, g.H);
  w1 = min64(w1, g.W);
  int64_t divisor = g.divisor_override ? g.divisor_override
                                       : (g.count_include_pad ? with_pad : (h1 - h0) * (w1 - w0));
  return {h0, h1, w0, w1, divisor};
}

}  // namespace

// The max / argmax update without a branch: on random data `v > best` is a coin flip, and a
// mispredicted branch per element cost more than the rest of the loop.
template <class T>
inline void take_max(T v, int64_t at, T& best, int64_t& best_at) {
  const bool take = (v > best) | (v != v);  // a NaN always wins (torch's `val > max || isnan(val)`)
  best = take ? v : best;
  best_at = take ? at : best_at;
}

// One output row of a 2x2 stride-2 max pool (windows inside the plane) from input rows r0 and
// r0 + W; at0 is r0's offset in the plane. Vectorised over L outputs: GCC turned the scalar
// selects below into branches (a misprediction per coin-flip compare, ~50 cycles per output),
// so the even/odd taps are split with shuffles and compared lane-wise. The order of the taps
// and the NaN rule are the scalar scan's (torch's): r0 even, r0 odd, r1 even, r1 odd, and a
// tap replaces the best when it is greater or NaN.
template <class T>
struct PoolLanes {
  typedef VecOf<T> V;
  typedef typename IntVec<T>::type M;
  static constexpr int L = Vec<T>::kLanes;
};

// L outputs from rows a and b (2L elements each): their maxima, and per lane the winning tap's
// code (0..3 = a even, a odd, b even, b odd).
template <class T>
inline void max_2x2_lanes(const T* a, const T* b, typename PoolLanes<T>::V& best, typename PoolLanes<T>::M& code) {
  typedef typename PoolLanes<T>::V V;
  typedef typename PoolLanes<T>::M M;
  constexpr int L = PoolLanes<T>::L;
  M even, odd;
  for (int l = 0; l < L; ++l) even[l] = 2 * l, odd[l] = 2 * l + 1;
  V a0, a1, b0, b1;
  std::memcpy(&a0, a, sizeof(V));
  std::memcpy(&a1, a + L, sizeof(V));
  std::memcpy(&b0, b, sizeof(V));
  std::memcpy(&b1, b + L, sizeof(V));
  const V taps[3] = {__builtin_shuffle(a0, a1, odd), __builtin_shuffle(b0, b1, even), __builtin_shuffle(b0, b1, odd)};
  best = __builtin_shuffle(a0, a1, even);
  code = M{};
  for (int t = 0; t < 3; ++t) {
    const M take = (taps[t] > best) | (taps[t] != taps[t]);
    best = take ? taps[t] : best;
    code = take ? M{} + (t + 1) : code;
  }
}

template <class T>
void max_pool_2x2_row(const T* r0, int64_t W, int64_t at0, int64_t OW, T* out, int64_t* idx, const T* x_end) {
  typedef typename PoolLanes<T>::V V;
  typedef typename PoolLanes<T>::M M;
  constexpr int L = PoolLanes<T>::L;
  const T* r1 = r0 + W;
  M code;
  for (int64_t ow = 0; ow < OW; ow += L) {
    const int64_t n = OW - ow < L ? OW - ow : L;
    V best;
    if (n == L) {  // reads r[2*ow .. 2*ow + 2L - 1], inside the row as 2*OW <= W
      max_2x2_lanes(r0 + 2 * ow, r1 + 2 * ow, best, code);
      std::memcpy(out + ow, &best, sizeof(V));
    } else {
      // The row's last outputs: lanes past n read on into the next row or plane and are
      // dropped; only at the very end of x do they go through zero-padded copies.
      if (r1 + 2 * ow + 2 * L <= x_end) {
        max_2x2_lanes(r0 + 2 * ow, r1 + 2 * ow, best, code);
      } else {
        T a[2 * L] = {}, b[2 * L] = {};
        for (int64_t e = 0; e < 2 * n; ++e) a[e] = r0[2 * ow + e], b[e] = r1[2 * ow + e];
        max_2x2_lanes(a, b, best, code);
      }
      for (int64_t l = 0; l < n; ++l) out[ow + l] = best[l];
    }
    for (int64_t l = 0; l < n; ++l) idx[ow + l] = at0 + 2 * (ow + l) + (code[l] & 1) + (code[l] >> 1) * W;
  }
}

// The output columns [from, to) whose windows lie inside the plane's columns, pooled in vector
// lanes; empty (from = to = OW) where they are fewer than L.
struct LaneColumns {
  int64_t from, to;
};
template <class T>
LaneColumns lane_columns(const PoolGeom& g) {
  const int64_t from = min64(g.OW, ceil_div(g.pw, g.sw));
  const int64_t last = g.W - 1 - (g.kw - 1) * g.dw + g.pw;  // the largest first column * sw
  const int64_t to = max64(from, last < 0 ? 0 : min64(g.OW, last / g.sw + 1));
  if (to - from < Vec<T>::kLanes) return {g.OW, g.OW};
  return {from, to};
}

// The group of L lanes after the one at ow, in [.., ow1): the last group ends at ow1, overlapping
// the one before (its outputs computed twice, alike: a scalar tail was most of the time).
inline int64_t next_lane_group(int64_t ow, int64_t ow1, int64_t L) {
  return ow + L < ow1 && ow + 2 * L > ow1 ? ow1 - L : ow + L;
}

// Lanes l = 0 .. L-1 of p[l * sw]: one load at stride 1, the even lanes of two at stride 2 (while
// the second stays before x_end: the last odd lane may be past the row), else gathered.
template <class T>
inline VecOf<T> load_strided(const T* p, int64_t sw, const T* x_end) {
  constexpr int L = Vec<T>::kLanes;
  if (sw == 1) return load(p);
  if (sw == 2 && p + 2 * L <= x_end) return deinterleave_even(load(p), load(p + L));
  VecOf<T> v;
  for (int l = 0; l < L; ++l) v[l] = p[l * sw];
  return v;
}

// Outputs [ow0, ow1) of output row oh (lane_columns), L at a time: lane l takes output ow + l's
// taps in the scalar scan's order (rows, then columns) with the same rule, so values and indices
// are the scalar scan's. The scalar scan's selects became branches, a misprediction per coin-flip
// compare (ResNet's 3x3 s2 pool ran at 1.7 GB/s). Rows [h0, h1) step dh are the window's rows
// inside the plane; indices are plane offsets, held in lanes of IntVec<T> (the caller checks the
// plane fits).
template <class T>
void max_pool_row_lanes(const PoolGeom& g, const T* in, int64_t h0, int64_t h1, int64_t ow0, int64_t ow1, T* out,
                        int64_t* idx, const T* x_end) {
  typedef typename PoolLanes<T>::V V;
  typedef typename PoolLanes<T>::M M;
  typedef typename std::remove_reference<decltype(M{}[0])>::type I;
  constexpr int L = PoolLanes<T>::L;
  M lane;
  for (int l = 0; l < L; ++l) lane[l] = static_cast<I>(l * g.sw);
  for (int64_t ow = ow0; ow < ow1; ow = next_lane_group(ow, ow1, L)) {
    const int64_t w0 = ow * g.sw - g.pw;
    V best = V{} - std::numeric_limits<T>::infinity();
    M at = lane + static_cast<I>(h0 * g.W + w0);
    for (int64_t ih = h0; ih < h1; ih += g.dh)
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t first = ih * g.W + w0 + j * g.dw;  // lane 0's tap
        const V v = load_strided(in + first, g.sw, x_end);
        const M take = (v > best) | (v != v);
        best = take ? v : best;
        at = take ? lane + static_cast<I>(first) : at;
      }
    std::memcpy(out + ow, &best, sizeof(V));
    for (int l = 0; l < L; ++l) idx[ow + l] = at[l];
  }
}

template <class T>
void max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  // 2x2 windows at stride 2 without padding or dilation (every pooling layer of the seed
  // networks): windows never leave the plane, so no bounds arithmetic per output.
  const bool pairs = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 && g.dh == 1 &&
                     g.dw == 1 && 2 * g.OH <= g.H && 2 * g.OW <= g.W;
  const T* x_end = x + g.N * g.C * HW;
  // Lanes hold plane offsets in IntVec<T>'s integers (int32 for float).
  const bool fits = sizeof(typename IntVec<T>::type) / PoolLanes<T>::L >= 8 || HW <= std::numeric_limits<int32_t>::max();
  const LaneColumns lanes = fits ? lane_columns<T>(g) : LaneColumns{g.OW, g.OW};
  for_each_plane(g.N * g.C, threads, [&](int64_t plane) {
    const T* in = x + plane * HW;
    T* out = y + plane * OHW;
    int64_t* idx = indices + plane * OHW;
    if (pairs) {
      for (int64_t oh = 0; oh < g.OH; ++oh)
        max_pool_2x2_row(in + 2 * oh * g.W, g.W, 2 * oh * g.W, g.OW, out + oh * g.OW, idx + oh * g.OW, x_end);
      return;
    }
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      int64_t h0 = oh * g.sh - g.ph;
      const int64_t h1 = min64(h0 + (g.kh - 1) * g.dh + 1, g.H);
      while (h0 < 0) h0 += g.dh;
      // The columns whose windows are inside the plane in lanes; the rest one by one.
      if (lanes.from < lanes.to)
        max_pool_row_lanes(g, in, h0, h1, lanes.from, lanes.to, out + oh * g.OW, idx + oh * g.OW, x_end);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        if (ow == lanes.from) ow = lanes.to;
        if (ow >= g.OW) break;
        int64_t w0 = ow * g.sw - g.pw;
        const int64_t w1 = min64(w0 + (g.kw - 1) * g.dw + 1, g.W);
        while (w0 < 0) w0 += g.dw;
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_at = h0 * g.W + w0;
        for (int64_t ih = h0; ih < h1; ih += g.dh)
          for (int64_t iw = w0; iw < w1; iw += g.dw) take_max(in[ih * g.W + iw], ih * g.W + iw, best, best_at);
        out[oh * g.OW + ow] = best;
        idx[oh * g.OW + ow] = best_at;
      }
    }
  });
}

template <class T>
void max_pool_backward(const PoolGeom& g, const T* gy, const int64_t* indices, T* gx, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_each_plane(g.N * g.C, threads, [&](int64_t plane) {
    T* out = gx + plane * HW;
    std::memset(out, 0, sizeof(T) * HW);
    const T* in = gy + plane * OHW;
    const int64_t* idx = indices + plane * OHW;
    // An index outside the plane (torch's forward emits one for a window lying entirely in the
    // padding, and a caller may pass anything) takes no gradient, as in torch.
    for (int64_t o = 0; o < OHW; ++o)
      if (idx[o] >= 0 && idx[o] < HW) out[idx[o]] += in[o];
  });
}

// Outputs [ow0, ow1) of one plane's output row (lane_columns), L at a time: lane l sums output
// ow + l's window in the scalar order (rows h0 .. h1, then columns), so the sums round alike, and
// divides by the row's divisor (the same for every such window).
template <class T>
void avg_pool_row_lanes(const PoolGeom& g, const T* in, int64_t h0, int64_t h1, int64_t ow0, int64_t ow1, T divisor,
                        T* out, const T* x_end) {
  typedef VecOf<T> V;
  for (int64_t ow = ow0; ow < ow1; ow = next_lane_group(ow, ow1, Vec<T>::kLanes)) {
    V sum = V{};
    for (int64_t ih = h0; ih < h1; ++ih)
      for (int64_t j = 0; j < g.kw; ++j) sum += load_strided(in + ih * g.W + ow * g.sw - g.pw + j, g.sw, x_end);
    const V mean = sum / divisor;
    std::memcpy(out + ow, &mean, sizeof(V));
  }
}

// Average pooling runs P planes in lockstep: each window's sum is a chain of dependent adds,
// in torch's order (rows, then columns, one at a time, so the sums round as torch's), and P
// independent chains keep the adder busy where one left it idle for its latency (global pooling,
// 49 adds per plane, was bound by that chain). Where a row has L or more windows inside the
// plane's columns, those run in lanes instead (avg_pool_row_lanes: 3x3 stride-1 pooling on 56-wide
// planes ran at 3 GB/s).
template <class T, int P>
void avg_pool_forward_planes(const PoolGeom& g, const T* x, T* y, const T* x_end) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const LaneColumns lanes = lane_columns<T>(g);  // avg pooling has no dilation: dw = 1
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    int64_t from = g.OW, to = g.OW;
    if (lanes.from < lanes.to) {
      const AvgWindow win = avg_window(g, oh, lanes.from);
      if (win.h0 < win.h1) {
        from = lanes.from, to = lanes.to;
        for (int p = 0; p < P; ++p)
          avg_pool_row_lanes(g, x + p * HW, win.h0, win.h1, from, to, T(win.divisor), y + p * OHW + oh * g.OW, x_end);
      }
    }
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      if (ow == from) ow = to;
      if (ow >= g.OW) break;
      const AvgWindow win = avg_window(g, oh, ow);
      T sum[P] = {};
      for (int64_t ih = win.h0; ih < win.h1; ++ih)
        for (int64_t iw = win.w0; iw < win.w1; ++iw)
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) sum[p] += x[p * HW + ih * g.W + iw];
      const bool empty = win.h0 >= win.h1 || win.w0 >= win.w1;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) y[p * OHW + oh * g.OW + ow] = empty ? T(0) : sum[p] / T(win.divisor);
    }
  }
}

template <class T, int P>
void avg_pool_backward_planes(const PoolGeom& g, const T* gy, T* gx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  std::memset(gx, 0, sizeof(T) * P * HW);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const AvgWindow win = avg_window(g, oh, ow);
      if (win.h0 >= win.h1 || win.w0 >= win.w1) continue;
      T share[P];
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) share[p] = gy[p * OHW + oh * g.OW + ow] / T(win.divisor);
      for (int64_t ih = win.h0; ih < win.h1; ++ih)
        for (int64_t iw = win.w0; iw < win.w1; ++iw)
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) gx[p * HW + ih * g.W + iw] += share[p];
    }
}

// body(first plane, std::integral_constant<int, P>) over groups of kAvgPlanes planes; the last
// planes that fill no group one at a time (P = 1).
constexpr int kAvgPlanes = 8;

template <class Body>
void for_plane_groups(int64_t planes, int threads, const Body& body) {
  for_each_plane(ceil_div(planes, kAvgPlanes), threads, [&](int64_t group) {
    const int64_t p0 = group * kAvgPlanes;
    if (p0 + kAvgPlanes <= planes)
      body(p0, std::integral_constant<int, kAvgPlanes>());
    else
      for (int64_t p = p0; p < planes; ++p) body(p, std::integral_constant<int, 1>());
  });
}

template <class T>
void avg_pool_forward(const PoolGeom& g, const T* x, T* y, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const T* x_end = x + g.N * g.C * HW;
  for_plane_groups(g.N * g.C, threads, [&](int64_t p, auto count) {
    avg_pool_forward_planes<T, decltype(count)::value>(g, x + p * HW, y + p * OHW, x_end);
  });
}

template <class T>
void avg_pool_backward(const PoolGeom& g, const T* gy, T* gx, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_plane_groups(g.N * g.C, threads, [&](int64_t p, auto count) {
    avg_pool_backward_planes<T, decltype(count)::value>(g, gy + p * OHW, gx + p * HW);
  });
}

#define FC_INSTANTIATE(T)                                                              \
  template void max_pool_forward<T>(const PoolGeom&, const T*, T*, int64_t*, int);    \
  template void max_pool_backward<T>(const PoolGeom&, const T*, const int64_t*, T*, int); \
  template void avg_pool_forward<T>(const PoolGeom&, const T*, T*, int);              \
  template void avg_pool_backward<T>(const PoolGeom&, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
