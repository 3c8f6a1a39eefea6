// A convolution followed by 2x2 stride-2 max pooling, fused: forward and backward-weight, for
// convs with few input channels at stride 1, dilation 1, one group (a network's first layer:
// MNIST's 1 -> 32 on 28x28, the restoration nets' 1 or 2 -> 32 and 64).
//
// Unfused, such a layer is memory-bound four times over: the conv writes its K-channel output,
// the pool reads it back and writes int64 indices, the pool's backward writes a dense grad_out
// that is mostly zeros, and backward-weight and the bias gradient read that again (MNIST conv1:
// 5.5 MB each way, ~1.8 ms a training step at 2 threads, for 25 MFLOP). Fused, the conv output
// lives in registers and only the pooled values and one byte per window (which of its four
// pixels won) are written.
//
// The four pixels of pooling window (i, j) are conv outputs (2i + dh, 2j + e): tap (r, s) of
// pixel (dh, e) reads input (2i + dh + r - ph, 2j + e + s - pw), which is tap (r + dh, s + e) of a
// stride-2 conv with an (R+1) x (S+1) kernel and output size (OH/2, OW/2). So the input is laid
// out as that conv's stride-phase slabs (wide.h) and every tap of every window pixel is one
// contiguous read over the wide pooled rows.
//
// Forward: per (image, block of 8 output channels) task, for 2 channels at a time, the four
// pixels' sums for L windows stay in registers over all taps (c, r, s in order); then bias, then
// the max in torch's window order (0,0), (0,1), (1,0), (1,1), a later pixel winning when it is
// greater or NaN (aten's max_pool2d rule). `where` gets the winner 0..3 (dh * 2 + e).
// Backward-weight: grad_w[k][c][r][s] = sum over windows of gy * x at the winning pixel's tap:
// per window pixel a masked copy of gy (gy where that pixel won, else 0) on the wide grid, then
// sum_q sum_pixel masked_gy[pixel][q] * slab[tap(r + dh, s + e) + q], vectorised over q. The
// masked products are the dense conv's (a zero grad_out for the pixels that lost), so an x with
// an inf or NaN (0 * inf = NaN in the dense sum too, but also in the dropped columns of the wide
// grid, where the dense sum has no term) is refused: the caller then runs the unfused backward.
// Tasks: (chunk of images, block of 8 output channels); each writes per-chunk partial sums, added
// in chunk order. Both passes: thread-count independent results.
#include <cstdint>
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

constexpr int64_t kChannelBlock = 8;  // output channels per task
constexpr int64_t kMaxChunks = 16;    // image chunks of the backward-weight

// The stride-2 conv whose taps cover a pooling window's four pixels' taps (see the top).
ConvGeom window_geometry(const ConvGeom& g) {
  return {g.N, g.C, g.H, g.W, g.K, g.R + 1, g.S + 1, 1, 2, 2, g.ph, g.pw, 1, 1, g.OH / 2, g.OW / 2};
}

template <class T>
using V = typename Vec<T>::type;

template <class T>
inline V<T> load(const T* p) {
  V<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Slabs of one image's C channels (channel_stride apart), zeroed `slack` elements past the last.
template <class T>
void image_slabs(const ConvGeom& e, const T* x_image, int64_t srows, int64_t Wp, int64_t phase_stride, int64_t slack,
                 T* slab) {
  build_slabs(e, x_image, e.C, 0, srows, Wp, slab, 4 * phase_stride, phase_stride);
  std::memset(slab + e.C * 4 * phase_stride, 0, sizeof(T) * slack);
}

// For KB output channels and the L windows at wide columns q0..q0+L-1: the four pixels' conv sums
// (held in registers over all taps, in the order c, r, s), the bias, then the max in torch's window
// order; into best[k * ld + q] and won[k * ld + q].
template <class T, int KB>
inline void pooled_windows(const T* slab, int64_t channel_stride, const ConvGeom& g, const int64_t* tap,
                           const T* const* wk, const T* bias, int64_t q0, T* best, uint8_t* won, int64_t ld) {
  typedef V<T> Vt;
  typedef decltype(Vt{} > Vt{}) Mask;  // the lane-wise comparison's integer vector
  constexpr int L = Vec<T>::kLanes;
  const int64_t S1 = g.S + 1;
  Vt acc[KB][4];
#pragma GCC unroll 4
  for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) acc[k][p] = Vt{};
  for (int64_t c = 0; c < g.C; ++c) {
    const T* sc = slab + c * channel_stride + q0;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t t = (r * S1 + s);
        const Vt p0 = load(sc + tap[t]), p1 = load(sc + tap[t + 1]);
        const Vt p2 = load(sc + tap[t + S1]), p3 = load(sc + tap[t + S1 + 1]);
        const int64_t wi = (c * g.R + r) * g.S + s;
#pragma GCC unroll 4
        for (int k = 0; k < KB; ++k) {
          const T wv = wk[k][wi];
          acc[k][0] += p0 * wv;
          acc[k][1] += p1 * wv;
          acc[k][2] += p2 * wv;
          acc[k][3] += p3 * wv;
        }
      }
  }
#pragma GCC unroll 4
  for (int k = 0; k < KB; ++k) {
    const T b = bias ? bias[k] : T(0);
    Vt m = acc[k][0] + b;
    Mask at = Mask{};
#pragma GCC unroll 4
    for (int p = 1; p < 4; ++p) {
      const Vt v = acc[k][p] + b;
      const Mask take = (v > m) | (v != v);
      m = take ? v : m;
      at = take ? Mask{} + p : at;
    }
    std::memcpy(best + k * ld + q0, &m, sizeof(Vt));
#pragma GCC unroll 8
    for (int l = 0; l < L; ++l) won[k * ld + q0 + l] = static_cast<uint8_t>(at[l]);
  }
}

}  // namespace

template <class T>
void conv_max_pool_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, uint8_t* where,
                           int threads) {
  constexpr int L = Vec<T>::kLanes;
  const ConvGeom e = window_geometry(g);
  const WideLayout lay = wide_layout(e);
  const int64_t Wp = lay.Wp, srows = e.OH + lay.halo, phase_stride = srows * Wp, channel_stride = 4 * phase_stride;
  const int64_t PH = e.OH, PW = e.OW, Q = PH > 0 ? (PH - 1) * Wp + PW : 0, Qr = round_up(Q, L);
  const int64_t slab_size = g.C * channel_stride + L, CRS = g.C * g.R * g.S;
  std::vector<int64_t> tap((g.R + 1) * (g.S + 1));
  for (int64_t r = 0; r <= g.R; ++r)
    for (int64_t s = 0; s <= g.S; ++s) tap[r * (g.S + 1) + s] = tap_offset(e, Wp, phase_stride, r, s);
  const int64_t kblocks = ceil_div(g.K, kChannelBlock);
  parallel_tasks(g.N * kblocks, threads, [&](int64_t task) {
    const int64_t n = task / kblocks, k_lo = (task % kblocks) * kChannelBlock, k_hi = min64(g.K, k_lo + kChannelBlock);
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    T* best = static_cast<T*>(thread_workspace(sizeof(T) * 2 * Qr, kSlotTile));
    uint8_t* won = static_cast<uint8_t*>(thread_workspace(2 * Qr, kSlotTile2));
    image_slabs(e, x + n * g.C * g.H * g.W, srows, Wp, phase_stride, L, slab);
    for (int64_t k0 = k_lo; k0 < k_hi;) {
      const int kb = k_hi - k0 >= 2 ? 2 : 1;
      const T* wk[2] = {w + k0 * CRS, w + (k0 + kb - 1) * CRS};
      const T* bk = bias ? bias + k0 : nullptr;
      for (int64_t q0 = 0; q0 < Q; q0 += L)
        if (kb == 2)
          pooled_windows<T, 2>(slab, channel_stride, g, tap.data(), wk, bk, q0, best, won, Qr);
        else
          pooled_windows<T, 1>(slab, channel_stride, g, tap.data(), wk, bk, q0, best, won, Qr);
      for (int k = 0; k < kb; ++k)
        for (int64_t i = 0; i < PH; ++i) {
          const int64_t out = (n * g.K + k0 + k) * PH * PW + i * PW;
          std::memcpy(y + out, best + k * Qr + i * Wp, sizeof(T) * PW);
          std::memcpy(where + out, won + k * Qr + i * Wp, PW);
        }
      k0 += kb;
    }
  });
}

template <class T>
bool conv_max_pool_backward_weight(const ConvGeom& g, const T* gy, const uint8_t* where, const T* x, T* gw, T* gb,
                                   int threads) {
  // The bias gradient is summed in double and rounded once, as the unfused bias_grad does.
  typedef V<T> Vt;
  constexpr int L = Vec<T>::kLanes;
  if (!all_finite(x, g.N * g.C * g.H * g.W)) return false;
  const ConvGeom e = window_geometry(g);
  const WideLayout lay = wide_layout(e);
  const int64_t Wp = lay.Wp, srows = e.OH + lay.halo, phase_stride = srows * Wp, channel_stride = 4 * phase_stride;
  const int64_t PH = e.OH, PW = e.OW, Q = PH > 0 ? (PH - 1) * Wp + PW : 0, Qr = round_up(Q, L);
  const int64_t slab_size = g.C * channel_stride + L, RS = g.R * g.S, CRS = g.C * RS;
  const int64_t S1 = g.S + 1;
  std::vector<int64_t> tap((g.R + 1) * S1);
  for (int64_t r = 0; r <= g.R; ++r)
    for (int64_t s = 0; s < S1; ++s) tap[r * S1 + s] = tap_offset(e, Wp, phase_stride, r, s);
  const int64_t chunk = ceil_div(g.N, min64(g.N, kMaxChunks)), chunks = ceil_div(g.N, chunk);
  const int64_t kblocks = ceil_div(g.K, kChannelBlock);
  std::vector<T> partial(chunks * g.K * CRS);  // per chunk
  std::vector<double> bias_partial(chunks * g.K);
  parallel_tasks(chunks * kblocks, threads, [&](int64_t task) {
    const int64_t ci = task / kblocks, k_lo = (task % kblocks) * kChannelBlock, k_hi = min64(g.K, k_lo + kChannelBlock);
    const int64_t kn = k_hi - k_lo;
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    T* masked = static_cast<T*>(thread_workspace(sizeof(T) * 4 * Qr, kSlotTile));
    Vt* sums = static_cast<Vt*>(thread_workspace(sizeof(Vt) * kn * CRS, kSlotTile2));
    T* part = partial.data() + ci * g.K * CRS;
    double* bias_part = bias_partial.data() + ci * g.K;
    for (int64_t i = 0; i < kn * CRS; ++i) sums[i] = Vt{};
    for (int64_t k = k_lo; k < k_hi; ++k) bias_part[k] = 0.0;
    for (int64_t n = ci * chunk; n < min64(g.N, (ci + 1) * chunk); ++n) {
      image_slabs(e, x + n * g.C * g.H * g.W, srows, Wp, phase_stride, L, slab);
      for (int64_t k = k_lo; k < k_hi; ++k) {
        const T* gk = gy + (n * g.K + k) * PH * PW;
        const uint8_t* wk = where + (n * g.K + k) * PH * PW;
        std::memset(masked, 0, sizeof(T) * 4 * Qr);
        double bsum = 0.0;
        for (int64_t i = 0; i < PH; ++i)
          for (int64_t j = 0; j < PW; ++j) {
            const T v = gk[i * PW + j];
            masked[(wk[i * PW + j] & 3) * Qr + i * Wp + j] = v;
            bsum += v;
          }
        bias_part[k] += bsum;
        Vt* sk = sums + (k - k_lo) * CRS;
        for (int64_t c = 0; c < g.C; ++c) {
          const T* sc = slab + c * channel_stride;
          for (int64_t q0 = 0; q0 < Qr; q0 += L) {
            const Vt m0 = load(masked + q0), m1 = load(masked + Qr + q0);
            const Vt m2 = load(masked + 2 * Qr + q0), m3 = load(masked + 3 * Qr + q0);
            const T* sq = sc + q0;
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t t = r * S1 + s;
                sk[c * RS + r * g.S + s] += m0 * load(sq + tap[t]) + m1 * load(sq + tap[t + 1]) +
                                           m2 * load(sq + tap[t + S1]) + m3 * load(sq + tap[t + S1 + 1]);
              }
          }
        }
      }
    }
    for (int64_t k = k_lo; k < k_hi; ++k)
      for (int64_t i = 0; i < CRS; ++i) {
        T total = T(0);
        for (int l = 0; l < L; ++l) total += sums[(k - k_lo) * CRS + i][l];
        part[k * CRS + i] = total;
      }
  });
  for (int64_t i = 0; i < g.K * CRS; ++i) {
    T total = T(0);
    for (int64_t ci = 0; ci < chunks; ++ci) total += partial[ci * g.K * CRS + i];
    gw[i] = total;
  }
  for (int64_t k = 0; gb && k < g.K; ++k) {
    double total = 0.0;
    for (int64_t ci = 0; ci < chunks; ++ci) total += bias_partial[ci * g.K + k];
    gb[k] = static_cast<T>(total);
  }
  return true;
}

#define FC_INSTANTIATE(T)                                                                                           \
  template void conv_max_pool_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, uint8_t*, int);         \
  template bool conv_max_pool_backward_weight<T>(const ConvGeom&, const T*, const uint8_t*, const T*, T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
