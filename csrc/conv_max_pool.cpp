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
// sum_q sum_pixel masked_gy[pixel][q] * slab[tap(r + dh, s + e) + q], vectorised over q. (The
// bias gradient, the sum of the pooled grad_out, is the caller's: no window pixel is involved.) The
// masked products are the dense conv's (a zero grad_out for the pixels that lost), so an x with
// an inf or NaN (0 * inf = NaN in the dense sum too, but also in the dropped columns of the wide
// grid, where the dense sum has no term) is refused: the caller then runs the unfused backward.
// Tasks: (chunk of images, block of 8 output channels); each writes per-chunk partial sums, added
// in chunk order. Both passes: thread-count independent results.
#include <cstdint>
#include <cstring>
#include <vector>

#include "dot_block.h"
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

// The input laid out as the stride-2 conv whose taps cover a pooling window's four pixels' taps
// (see the top): its geometry, slab sizes, the pooled plane on the wide grid (Q columns), and
// tap[r * (S+1) + s], where window-kernel tap (r, s) starts in a channel's slabs.
struct WindowSlabs {
  ConvGeom e;
  int64_t Wp, srows, phase_stride, channel_stride, PH, PW, Q;
  std::vector<int64_t> tap;

  explicit WindowSlabs(const ConvGeom& g)
      : e{g.N, g.C, g.H, g.W, g.K, g.R + 1, g.S + 1, 1, 2, 2, g.ph, g.pw, 1, 1, g.OH / 2, g.OW / 2} {
    const WideLayout lay = wide_layout(e);
    Wp = lay.Wp;
    srows = e.OH + lay.halo;
    phase_stride = srows * Wp;
    channel_stride = 4 * phase_stride;
    PH = e.OH;
    PW = e.OW;
    Q = PH > 0 ? (PH - 1) * Wp + PW : 0;
    tap.resize(e.R * e.S);
    for (int64_t r = 0; r < e.R; ++r)
      for (int64_t s = 0; s < e.S; ++s) tap[r * e.S + s] = tap_offset(e, Wp, phase_stride, r, s);
  }

  // One image's C channels, zeroed `slack` elements past the last.
  template <class T>
  void build(const T* x_image, int64_t slack, T* slab) const {
    build_slabs(e, x_image, e.C, 0, srows, Wp, slab, channel_stride, phase_stride);
    std::memset(slab + e.C * channel_stride, 0, sizeof(T) * slack);
  }
};

// For KB output channels and the L windows at wide columns q0..q0+L-1: the four pixels' conv sums
// (held in registers over all taps, in the order c, r, s), the bias, then the max in torch's window
// order; into best[k * ld + q] and won[k * ld + q].
// KS > 0: a KS x KS kernel, its tap loops unrolled (3x3, the first layers we know); 0: any.
template <class T, int KB, int KS>
inline void pooled_windows(const T* slab, int64_t channel_stride, const ConvGeom& g, const int64_t* tap,
                           const T* const* wk, const T* bias, int64_t q0, T* best, uint8_t* won, int64_t ld) {
  typedef VecOf<T> Vt;
  typedef decltype(Vt{} > Vt{}) Mask;  // the lane-wise comparison's integer vector
  constexpr int L = Vec<T>::kLanes;
  const int64_t R = KS ? KS : g.R, S = KS ? KS : g.S, S1 = S + 1;
  Vt acc[KB][4];
#pragma GCC unroll 4
  for (int k = 0; k < KB; ++k)
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) acc[k][p] = Vt{};
  for (int64_t c = 0; c < g.C; ++c) {
    const T* sc = slab + c * channel_stride + q0;
#pragma GCC unroll 8
    for (int64_t r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int64_t s = 0; s < S; ++s) {
        const int64_t t = (r * S1 + s);
        const Vt p0 = load(sc + tap[t]), p1 = load(sc + tap[t + 1]);
        const Vt p2 = load(sc + tap[t + S1]), p3 = load(sc + tap[t + S1 + 1]);
        const int64_t wi = (c * R + r) * S + s;
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
    typedef uint8_t Bytes __attribute__((vector_size(L)));
    const Bytes at_bytes = __builtin_convertvector(at, Bytes);
    std::memcpy(best + k * ld + q0, &m, sizeof(Vt));
    std::memcpy(won + k * ld + q0, &at_bytes, L);
  }
}

// The four pixels' masked copies of one (image, channel)'s pooled grad_out on the wide grid:
// masked[p * ld + i * Wp + j] = gy[i][j] where pixel p won window (i, j), else 0; zero in the
// dropped columns and up to ld.
template <class T>
void mask_by_winner(const T* gy, const uint8_t* where, int64_t PH, int64_t PW, int64_t Wp, int64_t ld, T* masked) {
  typedef VecOf<T> Vt;
  typedef decltype(Vt{} > Vt{}) Mask;
  constexpr int L = Vec<T>::kLanes;
  typedef uint8_t Bytes __attribute__((vector_size(L)));
  // Blends on vectors of L windows (a scalar loop here branched on the winner: a coin flip).
  auto put = [&](T* m, const T* g, const uint8_t* w) {
    Vt v;
    Bytes b;
    std::memcpy(&v, g, sizeof(v));
    std::memcpy(&b, w, sizeof(b));
    const Mask p = __builtin_convertvector(b, Mask) & 3;
    for (int k = 0; k < 4; ++k) {
      const Vt mk = p == k ? v : Vt{};
      std::memcpy(m + k * ld, &mk, sizeof(mk));
    }
  };
  for (int64_t i = 0; i < PH; ++i) {
    T* m = masked + i * Wp;
    int64_t j = 0;
    for (; j + L <= PW; j += L) put(m + j, gy + i * PW + j, where + i * PW + j);
    if (j < PW) {  // the row's tail through zero-padded copies: L lanes would read past the row
      T g[L] = {};
      uint8_t w[L] = {};
      for (int64_t t = j; t < PW; ++t) {
        g[t - j] = gy[i * PW + t];
        w[t - j] = where[i * PW + t];
      }
      put(m + j, g, w);  // its lanes past PW write zeros into the dropped columns (ld has room)
    }
    const int64_t end = i + 1 < PH ? (i + 1) * Wp : ld;
    for (int k = 0; k < 4; ++k)
      for (int64_t q = i * Wp + PW; q < end; ++q) masked[k * ld + q] = T(0);
  }
}

// grad_w for the 3 taps (r, 0..2) of one kernel row: out[s] += sum_q sum_pixel masked[pixel][q] *
// slab[tap(r + dh, s + e) + q]. The row's 8 distinct slab reads (rows r and r + 1 of the window
// kernel, columns 0..3) serve 12 multiply-adds (8 loads, plus the 4 masks, for 12: the per-tap
// loop reads 8 for 4).
template <class T>
void row_sums_3(const T* slab, const int64_t* tap_row, int64_t S1, const T* masked, int64_t ld, T* out) {
  typedef VecOf<T> Vt;
  constexpr int L = Vec<T>::kLanes;
  const T* a0 = slab + tap_row[0];
  const T* a1 = slab + tap_row[1];
  const T* a2 = slab + tap_row[2];
  const T* a3 = slab + tap_row[3];
  const T* b0 = slab + tap_row[S1];
  const T* b1 = slab + tap_row[S1 + 1];
  const T* b2 = slab + tap_row[S1 + 2];
  const T* b3 = slab + tap_row[S1 + 3];
  Vt acc0 = Vt{}, acc1 = Vt{}, acc2 = Vt{};
  for (int64_t q = 0; q < ld; q += L) {
    const Vt m0 = load(masked + q), m1 = load(masked + ld + q), m2 = load(masked + 2 * ld + q),
             m3 = load(masked + 3 * ld + q);
    const Vt x0 = load(a0 + q), x1 = load(a1 + q), x2 = load(a2 + q), x3 = load(a3 + q);
    const Vt y0 = load(b0 + q), y1 = load(b1 + q), y2 = load(b2 + q), y3 = load(b3 + q);
    acc0 += m0 * x0 + m1 * x1 + (m2 * y0 + m3 * y1);
    acc1 += m0 * x1 + m1 * x2 + (m2 * y1 + m3 * y2);
    acc2 += m0 * x2 + m1 * x3 + (m2 * y2 + m3 * y3);
  }
  out[0] += lane_sum<T>(acc0);
  out[1] += lane_sum<T>(acc1);
  out[2] += lane_sum<T>(acc2);
}

}  // namespace

template <class T>
void conv_max_pool_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, uint8_t* where,
                           int threads) {
  constexpr int L = Vec<T>::kLanes;
  const WindowSlabs ws(g);
  const int64_t Wp = ws.Wp, channel_stride = ws.channel_stride, PH = ws.PH, PW = ws.PW, Q = ws.Q;
  const int64_t Qr = round_up(Q, L), slab_size = g.C * channel_stride + L, CRS = g.C * g.R * g.S;
  const int64_t* tap = ws.tap.data();
  const bool k3 = g.R == 3 && g.S == 3;
  const int64_t kblocks = ceil_div(g.K, kChannelBlock);
  parallel_tasks(g.N * kblocks, threads, [&](int64_t task) {
    const int64_t n = task / kblocks, k_lo = (task % kblocks) * kChannelBlock, k_hi = min64(g.K, k_lo + kChannelBlock);
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    T* best = static_cast<T*>(thread_workspace(sizeof(T) * 2 * Qr, kSlotTile));
    uint8_t* won = static_cast<uint8_t*>(thread_workspace(2 * Qr, kSlotTile2));
    ws.build(x + n * g.C * g.H * g.W, L, slab);
    for (int64_t k0 = k_lo; k0 < k_hi;) {
      const int kb = k_hi - k0 >= 2 ? 2 : 1;
      const T* wk[2] = {w + k0 * CRS, w + (k0 + kb - 1) * CRS};
      const T* bk = bias ? bias + k0 : nullptr;
      for (int64_t q0 = 0; q0 < Q; q0 += L)
        if (kb == 2 && k3)
          pooled_windows<T, 2, 3>(slab, channel_stride, g, tap, wk, bk, q0, best, won, Qr);
        else if (kb == 2)
          pooled_windows<T, 2, 0>(slab, channel_stride, g, tap, wk, bk, q0, best, won, Qr);
        else
          pooled_windows<T, 1, 0>(slab, channel_stride, g, tap, wk, bk, q0, best, won, Qr);
      // Loops, not memcpy (rows are a few dozen bytes), over local copies of the sizes: a byte
      // store may alias anything, so captured ones were reloaded per element.
      const int64_t ph = PH, pw = PW, wp = Wp, ld = Qr;
      for (int k = 0; k < kb; ++k)
        for (int64_t i = 0; i < ph; ++i) {
          T* __restrict__ yo = y + ((n * g.K + k0 + k) * ph + i) * pw;
          uint8_t* __restrict__ wo = where + ((n * g.K + k0 + k) * ph + i) * pw;
          const T* __restrict__ bi = best + k * ld + i * wp;
          const uint8_t* __restrict__ ci = won + k * ld + i * wp;
          for (int64_t j = 0; j < pw; ++j) yo[j] = bi[j];
          for (int64_t j = 0; j < pw; ++j) wo[j] = ci[j];
        }
      k0 += kb;
    }
  });
}

template <class T>
bool conv_max_pool_backward_weight(const ConvGeom& g, const T* gy, const uint8_t* where, const T* x, T* gw,
                                   int threads) {
  typedef VecOf<T> Vt;
  constexpr int L = Vec<T>::kLanes;
  if (!all_finite(x, g.N * g.C * g.H * g.W)) return false;
  const WindowSlabs ws(g);
  const int64_t Wp = ws.Wp, channel_stride = ws.channel_stride, PH = ws.PH, PW = ws.PW, Q = ws.Q;
  // Qr: the masked planes' length, a multiple of the dot loops' 2 vectors, with room for the last
  // row's tail vector (mask_by_winner).
  const int64_t Qr = round_up(Q + L, 2 * L);
  const int64_t slack = Qr - Q, slab_size = g.C * channel_stride + slack, RS = g.R * g.S, CRS = g.C * RS;
  const int64_t S1 = g.S + 1;
  const int64_t* tap = ws.tap.data();
  const int64_t chunk = ceil_div(g.N, min64(g.N, kMaxChunks)), chunks = ceil_div(g.N, chunk);
  const int64_t kblocks = ceil_div(g.K, kChannelBlock);
  std::vector<T> partial(chunks * g.K * CRS);  // per chunk of images
  parallel_tasks(chunks * kblocks, threads, [&](int64_t task) {
    const int64_t ci = task / kblocks, k_lo = (task % kblocks) * kChannelBlock, k_hi = min64(g.K, k_lo + kChannelBlock);
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    T* masked = static_cast<T*>(thread_workspace(sizeof(T) * 4 * Qr, kSlotTile));
    T* part = partial.data() + ci * g.K * CRS;
    for (int64_t i = k_lo * CRS; i < k_hi * CRS; ++i) part[i] = T(0);
    for (int64_t n = ci * chunk; n < min64(g.N, (ci + 1) * chunk); ++n) {
      ws.build(x + n * g.C * g.H * g.W, slack, slab);
      for (int64_t k = k_lo; k < k_hi; ++k) {
        const T* gk = gy + (n * g.K + k) * PH * PW;
        const uint8_t* wk = where + (n * g.K + k) * PH * PW;
        mask_by_winner(gk, wk, PH, PW, Wp, Qr, masked);
        for (int64_t c = 0; c < g.C; ++c)
          for (int64_t r = 0; r < g.R; ++r) {
            if (g.S == 3) {
              row_sums_3(slab + c * channel_stride, tap + r * S1, S1, masked, Qr, part + k * CRS + c * RS + r * 3);
              continue;
            }
            for (int64_t s = 0; s < g.S; ++s) {
              // One tap: the four pixels' dot products over the wide grid, in two independent
              // vector sums (even and odd blocks of L) so the adds do not wait on each other.
              const int64_t t = r * S1 + s;
              const T* p0 = slab + c * channel_stride + tap[t];
              const T* p1 = slab + c * channel_stride + tap[t + 1];
              const T* p2 = slab + c * channel_stride + tap[t + S1];
              const T* p3 = slab + c * channel_stride + tap[t + S1 + 1];
              Vt even = Vt{}, odd = Vt{};
              for (int64_t q = 0; q < Qr; q += 2 * L) {
                even += load(masked + q) * load(p0 + q) + load(masked + Qr + q) * load(p1 + q) +
                        (load(masked + 2 * Qr + q) * load(p2 + q) + load(masked + 3 * Qr + q) * load(p3 + q));
                odd += load(masked + q + L) * load(p0 + q + L) + load(masked + Qr + q + L) * load(p1 + q + L) +
                       (load(masked + 2 * Qr + q + L) * load(p2 + q + L) +
                        load(masked + 3 * Qr + q + L) * load(p3 + q + L));
              }
              part[k * CRS + c * RS + r * g.S + s] += lane_sum<T>(even + odd);
            }
          }
      }
    }
  });
  for (int64_t i = 0; i < g.K * CRS; ++i) {
    T total = T(0);
    for (int64_t ci = 0; ci < chunks; ++ci) total += partial[ci * g.K * CRS + i];
    gw[i] = total;
  }
  return true;
}

#define FC_INSTANTIATE(T)                                                                                           \
  template void conv_max_pool_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, uint8_t*, int);         \
  template bool conv_max_pool_backward_weight<T>(const ConvGeom&, const T*, const uint8_t*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
