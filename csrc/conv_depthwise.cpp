// Depthwise convolution, direct: forward for one input channel per group (groups = C, any
// number of output channels per group: depthwise with a channel multiplier, or a first layer on
// one channel); backward-weight for groups = C = K.
//
// As a GEMM a depthwise conv has one row and R*S-long sums, so the GEMM kernels spend their
// time packing and on idle register rows (MobileNet's 3x3 stride-2 layer ran at 2 GFLOP/s).
// Here each plane is copied once into its stride-phase slabs (wide.h), and then every tap is
// one vectorised multiply-add over the plane's wide rows: y_wide[q] += w[r][s] * slab[tap + q],
// taps in order, for blocks of output channels and of q held in registers. Backward-weight is
// R*S dot products per plane over the same layout, grad_out laid out wide with zeros in the
// dropped columns (so an x that is not all finite, whose inf would meet one of those zeros, goes
// to implicit_gemm's kernel instead).
//
// Tasks: forward, one input plane (image, channel) each, all its output channels;
// backward-weight, one channel each (all images in order inside). Fixed summation orders: results do not depend on the thread count.
#include <cstring>
#include <vector>

#include "gather.h"
#include "kernels.h"
#include "tasks.h"
#include "wide.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {

// out_k[q] = sum over taps t of w_k[t] * slab[tap_t + q] for KB output channels k and q in
// [q0, q0 + NV*L): the KB x NV accumulators stay in registers over all taps. (Accumulating in
// memory, one tap at a time, was a load, a multiply-add and a store per output per tap.)
template <class T, int KB, int NV>
inline void direct_block(const T* slab, const int64_t* taps, int64_t RS, const T* const* wk, int64_t q0, T* const* out) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes;
  V acc[KB][NV];
#pragma GCC unroll 16
  for (int k = 0; k < KB; ++k)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[k][v] = V{};
  for (int64_t t = 0; t < RS; ++t) {
    V src[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(&src[v], slab + taps[t] + q0 + v * L, sizeof(V));
#pragma GCC unroll 16
    for (int k = 0; k < KB; ++k) {
      const T wv = wk[k][t];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[k][v] += src[v] * wv;
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < KB; ++k)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(out[k] + q0 + v * L, &acc[k][v], sizeof(V));
}

}  // namespace

template <class T>
void conv_forward_depthwise(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int L = Vec<T>::kLanes;
  constexpr int KB = 4, NV4 = 2, NV1 = 8;  // 4 channels x 2 vectors, or 1 channel x 8 vectors (8 sums in flight)
  constexpr int64_t kSlack = NV1 * L;      // elements a block may read or write past Q
  const WideLayout lay = wide_layout(g);
  const int64_t Wp = lay.Wp, srows = g.OH + lay.halo, phase_stride = srows * Wp, RS = g.R * g.S;
  const int64_t Q = g.OH > 0 ? (g.OH - 1) * Wp + g.OW : 0, Kg = g.K / g.groups;
  const int64_t slab_size = lay.phases * phase_stride + kSlack, wide = round_up(Q, kSlack) + kSlack;
  std::vector<int64_t> tap(RS);  // each tap's start within a plane's slabs
  for (int64_t t = 0; t < RS; ++t) tap[t] = tap_offset(g, Wp, phase_stride, t / g.S, t % g.S);
  parallel_tasks(g.N * g.groups, threads, [&](int64_t plane) {  // plane = (image, input channel = group)
    const int64_t n = plane / g.groups, gi = plane % g.groups;
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    T* acc = static_cast<T*>(thread_workspace(sizeof(T) * KB * wide, kSlotTile));
    build_slabs(g, x + plane * g.H * g.W, 1, 0, srows, Wp, slab, lay.phases * phase_stride, phase_stride);
    for (int64_t e = lay.phases * phase_stride; e < slab_size; ++e) slab[e] = T(0);
    for (int64_t k0 = 0; k0 < Kg;) {
      const int kb = Kg - k0 >= KB ? KB : 1;
      const T* wk[KB];
      T* out[KB];
      for (int k = 0; k < kb; ++k) {
        wk[k] = w + (gi * Kg + k0 + k) * RS;
        out[k] = acc + k * wide;
      }
      if (kb == KB)
        for (int64_t q0 = 0; q0 < Q; q0 += NV4 * L) direct_block<T, KB, NV4>(slab, tap.data(), RS, wk, q0, out);
      else
        for (int64_t q0 = 0; q0 < Q; q0 += NV1 * L) direct_block<T, 1, NV1>(slab, tap.data(), RS, wk, q0, out);
      for (int k = 0; k < kb; ++k) {
        const int64_t ko = gi * Kg + k0 + k;
        const T b = bias ? bias[ko] : T(0);
        T* dst = y + (n * g.K + ko) * g.OH * g.OW;
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) dst[oh * g.OW + ow] = out[k][oh * Wp + ow] + b;
      }
      k0 += kb;
    }
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
