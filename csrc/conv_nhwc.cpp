// Forward convolution on channel-last copies (one group): the output pixels are the GEMM's rows
// and the output channels its vector columns, as oneDNN's blocked-layout kernels have them.
//
// Y^T[p][k] = sum over taps (i, j) and channels c of x_t[pixel p's input at tap (i, j)][c] *
// B[(i S + j) C + c][k], with x_t the input made channel-last and zero-padded ([n][Hp][Wp][C])
// and B the kernel laid out tap-major with k contiguous. A pixel's C channels at one tap are
// contiguous in x_t (and, at dilation 1 along the width, its S taps of one kernel row are too), so
// the micro-kernel reads each of its MR pixels' rows in place (RowPointers): no patch matrix is
// gathered. That gather, one element at a time, cost as much as the GEMM on small planes (MNIST's
// 5x5 conv3, ResNet's 7x7 layer4), where whole-row tricks waste most of each row.
//
// Tasks: blocks of pixels x blocks of output channels; each output is summed by one task in a
// fixed order (segment by segment, KC rows at a time): thread-count independent.
#include <cstdint>
#include <cstring>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "tasks.h"
#include "winograd.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

namespace {

// A task: up to kMaxPixels pixels x kChannelBlock output channels. Each task streams its columns
// of B once, so large kernels (ResNet layer4's 9.4 MB) take blocks of 192 pixels, small ones 96
// (more tasks; MNIST conv3 has 576 pixels).
constexpr int64_t kMaxPixels = 192;
constexpr int64_t kLargeB = 2 << 20;       // bytes of B above which a task takes kMaxPixels
constexpr int64_t kChannelBlock = 64;      // output channels per task
constexpr int64_t kChunkBytes = 16 << 20;  // x_t per chunk of images

struct Layout {
  int64_t Hp, Wp;          // x_t's padded plane; input (ih, iw) at (ih + ph, iw + pw)
  int64_t seg_len, nseg;   // reduction segments: contiguous runs of x_t (and of B's rows)
  bool merged_width;       // a segment is a whole kernel row (dilation 1 along the width)
  int64_t kc;              // rows of B per micro-kernel call: a segment cut into equal blocks
};

Layout layout(const ConvGeom& g) {
  Layout l;
  l.Hp = max64(g.H + g.ph, (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1);
  l.Wp = max64(g.W + g.pw, (g.OW - 1) * g.sw + (g.S - 1) * g.dw + 1);
  l.merged_width = g.dw == 1;
  l.seg_len = l.merged_width ? g.S * g.C : g.C;
  l.nseg = l.merged_width ? g.R : g.R * g.S;
  // Up to 512: the C tile is loaded and stored once per block (at 128 that was a fifth of the time
  // on layer4); B's block, 32 KiB a panel, is read from L2.
  l.kc = ceil_div(l.seg_len, ceil_div(l.seg_len, 512));
  return l;
}

// Images [n0, n1) of x into x_t (padding zero).
template <class T>
void to_nhwc(const ConvGeom& g, const Layout& l, const T* x, int64_t n0, int64_t n1, T* xt, int threads) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t Wd = round_up(g.W, L);  // rows_channel_last writes whole vectors of pixels
  parallel_tasks((n1 - n0) * l.Hp, threads, [&](int64_t task) {
    const int64_t n = n0 + task / l.Hp, hp = task % l.Hp, ih = hp - g.ph;
    T* dst = xt + ((n - n0) * l.Hp + hp) * l.Wp * g.C;
    if (ih < 0 || ih >= g.H) {
      std::memset(dst, 0, sizeof(T) * l.Wp * g.C);
      return;
    }
    std::memset(dst, 0, sizeof(T) * g.pw * g.C);
    T* tmp = static_cast<T*>(thread_workspace(sizeof(T) * Wd * g.C, kSlotPackA));
    rows_channel_last(x + (n * g.C * g.H + ih) * g.W, g.H * g.W, g.C, g.W, Wd, tmp, g.C);
    std::memcpy(dst + g.pw * g.C, tmp, sizeof(T) * g.W * g.C);
    std::memset(dst + (g.pw + g.W) * g.C, 0, sizeof(T) * (l.Wp - g.pw - g.W) * g.C);
  });
}

// B[(i S + j) C + c][k] = w[k][c][i][j], columns past K zero, stored as NR-wide column panels
// (panel k / NR at b + k / NR * rows * NR, row-major NR wide): each micro-kernel call then
// streams its panel from contiguous memory. w is a K x (C R S) matrix whose column
// r = c RS + tap is B's row tap C + c: L x L blocks of it transposed in registers, loaded and
// stored whole.
template <class T>
void weights_tap_major(const ConvGeom& g, const T* w, T* b, int64_t panels, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t RS = g.R * g.S, cols = g.C * RS, full = cols / L * L;
  constexpr int64_t NR = MicroTile<T>::NR;
  auto row_of = [&](int64_t r) { return (r % RS) * g.C + r / RS; };
  parallel_tasks(panels, threads, [&](int64_t jp) {  // a task per panel
    T* panel = b + jp * cols * NR;
    for (int64_t r0 = 0; r0 < full; r0 += L) {
      int64_t rows[L];  // B's rows of w's columns r0 .. r0 + L - 1, by counting (a division each was
      int64_t tap = r0 % RS, c = r0 / RS;  // most of this loop's time)
      for (int e = 0; e < L; ++e) {
        rows[e] = tap * g.C + c;
        if (++tap == RS) tap = 0, ++c;
      }
      for (int64_t k0 = jp * NR; k0 < (jp + 1) * NR; k0 += L) {
        V v[L];
        for (int a = 0; a < L; ++a) v[a] = k0 + a < g.K ? load(w + (k0 + a) * cols + r0) : V{};
        transpose(v);
        for (int e = 0; e < L; ++e) store(panel + rows[e] * NR + k0 - jp * NR, v[e]);
      }
    }
    for (int64_t r = full; r < cols; ++r)
      for (int64_t k = jp * NR; k < (jp + 1) * NR; ++k) panel[row_of(r) * NR + k - jp * NR] = k < g.K ? w[k * cols + r] : T(0);
  });
}

}  // namespace

template <class T>
void conv_forward_nhwc(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t P = g.OH * g.OW;
  if (g.N * g.K * P == 0) return;
  const Layout l = layout(g);
  const int64_t panels = ceil_div(g.K, NR), brows = g.R * g.S * g.C;
  T* b = static_cast<T*>(thread_workspace(sizeof(T) * (brows * panels * NR + kBSlack<T>), kSlotShared));
  weights_tap_major(g, w, b, panels, threads);

  const int64_t image_elems = l.Hp * l.Wp * g.C;
  const int64_t chunk = max64(1, min64(g.N, kChunkBytes / int64_t(sizeof(T)) / image_elems));
  // x_t after B in the shared slot would move B; it gets its own buffer (kSlotTile2 is per thread,
  // so the calling thread's, sized for a chunk, is used by all tasks: read-only inside them).
  T* xt = static_cast<T*>(thread_workspace(sizeof(T) * (chunk * image_elems + MicroTile<T>::NR), kSlotTile2));
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t n1 = min64(n0 + chunk, g.N), pixels = (n1 - n0) * P;
    to_nhwc(g, l, x, n0, n1, xt, threads);
    const int64_t most = brows * panels * NR * int64_t(sizeof(T)) > kLargeB ? kMaxPixels : kMaxPixels / 2;
    const int64_t pblock = round_up(ceil_div(pixels, ceil_div(pixels, most)), MR);  // even blocks
    const int64_t pblocks = ceil_div(pixels, pblock), kblocks = ceil_div(panels * NR, kChannelBlock);
    parallel_tasks(pblocks * kblocks, threads, [&](int64_t task) {
      const int64_t p0 = task / kblocks * pblock, np = min64(pblock, pixels - p0);
      const int64_t j0 = task % kblocks * kChannelBlock, nj = min64(kChannelBlock, g.K - j0);
      T* out = static_cast<T*>(thread_workspace(sizeof(T) * (kMaxPixels + MR) * kChannelBlock, kSlotTile));
      const T* base[kMaxPixels + MR];  // each pixel's first input element (tap 0, 0; channel 0) in x_t
      for (int64_t t = 0; t < np; ++t) {
        const int64_t p = p0 + t, n = p / P, oh = p % P / g.OW, ow = p % g.OW;
        base[t] = xt + ((n * l.Hp + oh * g.sh) * l.Wp + ow * g.sw) * g.C;
      }
      for (int64_t s = 0; s < l.nseg; ++s) {
        const int64_t i = l.merged_width ? s : s / g.S, j = l.merged_width ? 0 : s % g.S;
        const int64_t offset = (i * g.dh * l.Wp + j * g.dw) * g.C;  // in x_t, from a pixel's base
        const T* bs = b + s * l.seg_len * NR;  // the segment's rows, in panel 0
        for (int64_t k0 = 0; k0 < l.seg_len; k0 += l.kc) {
          const int64_t kc = min64(l.kc, l.seg_len - k0);
          const bool acc = s > 0 || k0 > 0;
          for (int64_t jj = 0; jj < nj; jj += NR)
            for (int64_t t = 0; t < np; t += MR) {
              RowPointers<T, MR> a;
              for (int r = 0; r < MR; ++r) a.rows[r] = base[min64(t + r, np - 1)] + offset + k0;
              microkernel_with<T, MR, 2>(kc, a, bs + ((j0 + jj) / NR * brows + k0) * NR, NR, out + t * kChannelBlock + jj,
                                         kChannelBlock, static_cast<int>(min64(MR, np - t)),
                                         static_cast<int>(min64(NR, nj - jj)), acc);
            }
        }
      }
      // Y^T's block back to NCHW, plus the bias: along each output channel's pixels.
      for (int64_t k = j0; k < j0 + nj; ++k) {
        const T bk = bias ? bias[k] : T(0);
        const T* src = out + (k - j0);
        for (int64_t t = 0; t < np; ++t) {
          const int64_t p = p0 + t, n = n0 + p / P;
          y[(n * g.K + k) * P + p % P] = src[t * kChannelBlock] + bk;
        }
      }
    });
  }
}

#define FC_INSTANTIATE(T) \
  template void conv_forward_nhwc<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
