// Depthwise convolution (groups = C = K: one input and one output channel per group), direct.
//
// As a GEMM a depthwise conv has one row and R*S-long sums, so the GEMM kernels spend their
// time packing and on idle register rows (MobileNet's 3x3 stride-2 layer ran at 2 GFLOP/s).
// Here each plane is copied once into its stride-phase slabs (wide.h), and then every tap is
// one vectorisable multiply-add over the plane's wide rows: y_wide[q] += w[r][s] * slab[tap + q],
// taps in order. Backward-weight is R*S dot products per plane over the same layout, grad_out
// laid out wide with zeros in the dropped columns (so an x that is not all finite, whose inf
// would meet one of those zeros, goes to implicit_gemm's kernel instead).
//
// Tasks: forward, one plane (image, channel) each; backward-weight, one channel each (all
// images in order inside). Fixed summation orders: results do not depend on the thread count.
#include <cstring>

#include "gather.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

template <class T>
void conv_forward_depthwise(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, srows = g.OH + lay.halo, phase_stride = srows * Wp, RS = g.R * g.S;
  const int64_t Q = g.OH > 0 ? (g.OH - 1) * Wp + g.OW : 0;
  parallel_tasks(g.N * g.C, threads, [&](int64_t plane) {
    const int64_t c = plane % g.C;
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * lay.phases * phase_stride, kSlotPackA));
    T* acc = static_cast<T*>(thread_workspace(sizeof(T) * (Q + 1), kSlotTile));
    build_slabs(g, x + plane * g.H * g.W, 1, 0, srows, Wp, slab, lay.phases * phase_stride, phase_stride);
    const T* f = w + c * RS;
    for (int64_t q = 0; q < Q; ++q) acc[q] = T(0);
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        const T* src = slab + tap_offset(g, Wp, phase_stride, r, s);
        const T wv = f[r * g.S + s];
        for (int64_t q = 0; q < Q; ++q) acc[q] += wv * src[q];
      }
    const T b = bias ? bias[c] : T(0);
    T* out = y + plane * g.OH * g.OW;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) out[oh * g.OW + ow] = acc[oh * Wp + ow] + b;
  });
}

template <class T>
void conv_backward_weight_depthwise(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  if (!all_finite(x, g.N * g.C * g.H * g.W)) return conv_backward_weight<T>(g, gy, x, gw, threads);
  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, srows = g.OH + lay.halo, phase_stride = srows * Wp, RS = g.R * g.S;
  const int64_t Q = g.OH > 0 ? (g.OH - 1) * Wp + g.OW : 0, OHW = g.OH * g.OW;
  constexpr int U = 8;  // independent partial sums per dot product, in a fixed order
  parallel_tasks(g.C, threads, [&](int64_t c) {
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * lay.phases * phase_stride, kSlotPackA));
    T* gyw = static_cast<T*>(thread_workspace(sizeof(T) * (Q + U), kSlotTile));
    T* total = static_cast<T*>(thread_workspace(sizeof(T) * RS, kSlotTile2));
    for (int64_t t = 0; t < RS; ++t) total[t] = T(0);
    for (int64_t n = 0; n < g.N; ++n) {
      build_slabs(g, x + (n * g.C + c) * g.H * g.W, 1, 0, srows, Wp, slab, lay.phases * phase_stride, phase_stride);
      lay_out_wide(gy + (n * g.C + c) * OHW, g.OH, g.OW, Wp, Q, gyw);
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const T* b = slab + tap_offset(g, Wp, phase_stride, r, s);
          T part[U] = {};
          int64_t q = 0;
          for (; q + U <= Q; q += U)
            for (int u = 0; u < U; ++u) part[u] += gyw[q + u] * b[q + u];
          for (; q < Q; ++q) part[0] += gyw[q] * b[q];
          T sum = 0;
          for (int u = 0; u < U; ++u) sum += part[u];
          total[r * g.S + s] += sum;
        }
    }
    for (int64_t t = 0; t < RS; ++t) gw[c * RS + t] = total[t];
  });
}

#define FC_INSTANTIATE(T)                                                                          \
  template void conv_forward_depthwise<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_depthwise<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
