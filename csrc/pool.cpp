// Max and average pooling, forward and backward, one plane (n, c) per task.
//
// The window arithmetic is PyTorch's CPU kernels' (aten/src/ATen/native/cpu/MaxPoolKernel.cpp,
// AvgPoolKernel.cpp) line for line, including the index of an all -inf window and the NaN
// rule, and the backward passes scatter in PyTorch's order so float sums round alike.
#include <omp.h>

#include <cstring>
#include <limits>
#include <new>

#include "kernels.h"

namespace fastconv {
namespace FC_ISA {
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

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

template <class T>
void max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  // 2x2 windows at stride 2 without padding or dilation (every pooling layer of the seed
  // networks): windows never leave the plane, so no bounds arithmetic per output.
  const bool pairs = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 && g.dh == 1 &&
                     g.dw == 1 && 2 * g.OH <= g.H && 2 * g.OW <= g.W;
  for_each_plane(g.N * g.C, threads, [&](int64_t plane) {
    const T* in = x + plane * HW;
    T* out = y + plane * OHW;
    int64_t* idx = indices + plane * OHW;
    if (pairs) {
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const T* r0 = in + 2 * oh * g.W;
        const T* r1 = r0 + g.W;
        const int64_t at0 = 2 * oh * g.W;
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          // Starting from the first tap is the general scan's first step (from -inf, the first
          // tap is taken unless it is -inf itself, and then the index is the same).
          T best = r0[2 * ow];
          int64_t best_at = at0 + 2 * ow;
          take_max(r0[2 * ow + 1], at0 + 2 * ow + 1, best, best_at);
          take_max(r1[2 * ow], at0 + g.W + 2 * ow, best, best_at);
          take_max(r1[2 * ow + 1], at0 + g.W + 2 * ow + 1, best, best_at);
          out[oh * g.OW + ow] = best;
          idx[oh * g.OW + ow] = best_at;
        }
      }
      return;
    }
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      int64_t h0 = oh * g.sh - g.ph;
      const int64_t h1 = min64(h0 + (g.kh - 1) * g.dh + 1, g.H);
      while (h0 < 0) h0 += g.dh;
      for (int64_t ow = 0; ow < g.OW; ++ow) {
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

template <class T>
void avg_pool_forward(const PoolGeom& g, const T* x, T* y, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_each_plane(g.N * g.C, threads, [&](int64_t plane) {
    const T* in = x + plane * HW;
    T* out = y + plane * OHW;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        if (win.h0 >= win.h1 || win.w0 >= win.w1) {
          out[oh * g.OW + ow] = T(0);
          continue;
        }
        T sum = 0;
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) sum += in[ih * g.W + iw];
        out[oh * g.OW + ow] = sum / T(win.divisor);
      }
  });
}

template <class T>
void avg_pool_backward(const PoolGeom& g, const T* gy, T* gx, int threads) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_each_plane(g.N * g.C, threads, [&](int64_t plane) {
    T* out = gx + plane * HW;
    std::memset(out, 0, sizeof(T) * HW);
    const T* in = gy + plane * OHW;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        if (win.h0 >= win.h1 || win.w0 >= win.w1) continue;
        const T share = in[oh * g.OW + ow] / T(win.divisor);
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) out[ih * g.W + iw] += share;
      }
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
