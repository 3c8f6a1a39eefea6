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
// Taps on the zero padding are skipped where that saves work: the output plane is cut into regions
// whose pixels all meet the input at the same taps (on ResNet's 7x7 layer4 a fifth of all taps
// meet padding; oneDNN skips them too), and a region's pixels take only its taps. Only zero terms
// are left out and the rest keep their order (the bits differ only where the reduction's KC blocks
// then fall elsewhere). Backward-weight skips them the same way, over the pixels in region order.
//
// Backward-data at stride 1 is this forward of grad_out with the kernel rotated and its channel
// axes swapped (conv_backward_data_nhwc); B is laid out from w as it lies.
//
// Tasks: blocks of a region's pixels x blocks of output channels, channel-block-major (or, with B
// packed per task, whole channel blocks); each output is summed by one task in a fixed order
// (segment by segment, KC rows at a time), whichever: thread-count independent.
#include <cstdint>
#include <cstring>
#include <vector>

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
constexpr int64_t kChannelBlock = 32;      // output channels per task
constexpr int64_t kChunkBytes = 16 << 20;  // x_t per chunk of images
// A reduction of up to kFusedRows rows over at most kMaxSegments segments is summed in registers in
// one go: with few channels (a 3-channel first layer has 4-7 segments of 12-21) storing and
// reloading the C tile after each segment cost more than the segment's multiply-adds.
constexpr int64_t kFusedRows = 512;
constexpr int64_t kMaxSegments = 64;

struct Layout {
  int64_t Hp, Wp;          // x_t's padded plane; input (ih, iw) at (ih + ph, iw + pw)
  int64_t seg_len, nseg;   // reduction segments: contiguous runs of x_t (and of B's rows)
  bool merged_width;       // a segment is a whole kernel row (dilation 1 along the width)
  bool fused;              // the whole reduction is short: all segments summed in registers at once
};

Layout layout(const ConvGeom& g) {
  Layout l;
  l.Hp = max64(g.H + g.ph, (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1);
  l.Wp = max64(g.W + g.pw, (g.OW - 1) * g.sw + (g.S - 1) * g.dw + 1);
  l.merged_width = g.dw == 1;
  l.seg_len = l.merged_width ? g.S * g.C : g.C;
  l.nseg = l.merged_width ? g.R : g.R * g.S;
  l.fused = l.nseg > 1 && l.nseg <= kMaxSegments && l.nseg * l.seg_len <= kFusedRows;
  return l;
}

// A rectangle of the output plane (rows oh0 .. oh1 - 1, columns ow0 .. ow1 - 1) in every image of a
// chunk, whose pixels read the input only at taps (i, j) with i0 <= i < i1 and j0 <= j < j1: the
// others fall on padding. Its pixels are ordered image, row, column.
struct Region {
  int64_t oh0, oh1, ow0, ow1, i0, i1, j0, j1;
  int64_t area() const { return (oh1 - oh0) * (ow1 - ow0); }
  int64_t taps() const { return (i1 - i0) * (j1 - j0); }
  // Pixel e's image (of the chunk), row and column, and how many pixels from it on lie contiguous
  // in an NCHW plane of width OW: to the end of its row of the region, or of its image when the
  // region spans the width.
  struct Pixel {
    int64_t n, oh, ow, run;
  };
  Pixel pixel(int64_t e, int64_t OW) const {
    const int64_t width = ow1 - ow0, ow = ow0 + e % width;
    return {e / area(), oh0 + e % area() / width, ow, width == OW ? area() - e % area() : ow1 - ow};
  }
};

// A run of output positions [o0, o1) along one axis that read the input at the same taps [t0, t1):
// position o, tap t reads o stride - pad + t dil, inside [0, in) or padding.
struct Band {
  int64_t o0, o1, t0, t1;
};

std::vector<Band> bands(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t dil, int64_t taps) {
  std::vector<Band> b;
  for (int64_t o = 0; o < out; ++o) {
    int64_t t0 = 0, t1 = taps;
    while (t0 < t1 && o * stride - pad + t0 * dil < 0) ++t0;
    while (t1 > t0 && o * stride - pad + (t1 - 1) * dil >= in) --t1;
    if (t0 == t1) t0 = t1 = 0;
    if (!b.empty() && b.back().t0 == t0 && b.back().t1 == t1)
      b.back().o1 = o + 1;
    else
      b.push_back({o, o + 1, t0, t1});
  }
  return b;
}

// The whole plane as one region with all taps (padding read as zeros), or the regions that skip
// the padding where they take at most `percent` of its micro-kernel calls x taps on a chunk of
// `images`: cut into many small regions, a plane pays for their part-filled MR-pixel tiles and
// shorter runs.
std::vector<Region> regions(const ConvGeom& g, int64_t images, int64_t MR, int64_t percent) {
  std::vector<Region> whole{{0, g.OH, 0, g.OW, 0, g.R, 0, g.S}}, split;
  for (const Band& r : bands(g.OH, g.H, g.sh, g.ph, g.dh, g.R))
    for (const Band& c : bands(g.OW, g.W, g.sw, g.pw, g.dw, g.S)) split.push_back({r.o0, r.o1, c.o0, c.o1, r.t0, r.t1, c.t0, c.t1});
  auto work = [&](const std::vector<Region>& rs) {
    int64_t sum = 0;
    for (const Region& r : rs) sum += ceil_div(images * r.area(), MR) * r.taps();
    return sum;
  };
  return work(split) * 100 <= work(whole) * percent ? split : whole;
}

// A run of one pixel's reduction: B's rows [row, row + len), read from x_t at the pixel's first
// input element + offset.
struct Span {
  int64_t offset, row, len;
};

std::vector<Span> spans(const ConvGeom& g, const Layout& l, const Region& r) {
  std::vector<Span> out;
  for (int64_t i = r.i0; i < r.i1; ++i) {
    if (l.merged_width) {  // the kernel row's taps j0 .. j1 - 1: contiguous in x_t and in B
      out.push_back({(i * g.dh * l.Wp + r.j0) * g.C, (i * g.S + r.j0) * g.C, (r.j1 - r.j0) * g.C});
      continue;
    }
    for (int64_t j = r.j0; j < r.j1; ++j) out.push_back({(i * g.dh * l.Wp + j * g.dw) * g.C, (i * g.S + j) * g.C, g.C});
  }
  return out;
}

// out[t] = where pixel e0 + t of region r reads its first input element (tap 0, 0; channel 0) in
// x_t, for t < count. Counted, not divided out: a division each was as slow as packing gy.
void pixel_offsets(const ConvGeom& g, const Layout& l, const Region& r, int64_t e0, int64_t count, int64_t* out) {
  const Region::Pixel first = r.pixel(e0, g.OW);
  int64_t n = first.n, oh = first.oh, ow = first.ow;
  for (int64_t t = 0; t < count; ++t) {
    out[t] = ((n * l.Hp + oh * g.sh) * l.Wp + ow * g.sw) * g.C;
    if (++ow == r.ow1 && (ow = r.ow0, ++oh == r.oh1)) oh = r.oh0, ++n;
  }
}

// Where segment s of a pixel's reduction starts in x_t, from the pixel's base.
int64_t segment_offset(const ConvGeom& g, const Layout& l, int64_t s) {
  const int64_t i = l.merged_width ? s : s / g.S, j = l.merged_width ? 0 : s % g.S;
  return (i * g.dh * l.Wp + j * g.dw) * g.C;
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

// Panel jp of B, at `panel`: B[(i S + j) C + c][k] = w[k][c][i][j], columns past K zero, stored as
// NR-wide column panels (panel k / NR at b + k / NR * rows * NR, row-major NR wide): each
// micro-kernel call then streams its panel from contiguous memory. w is a K x (C R S) matrix whose
// column r = c RS + tap is B's row tap C + c: L x L blocks of it transposed in registers, loaded
// and stored whole.
template <class T>
void weights_tap_major(const ConvGeom& g, const T* w, int64_t jp, T* panel) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t RS = g.R * g.S, cols = g.C * RS, full = cols / L * L;
  constexpr int64_t NR = MicroTile<T>::NR;
  for (int64_t k0 = jp * NR; k0 < (jp + 1) * NR; k0 += L) {
    int64_t tap = 0, c = 0;  // of column r0, by counting (a division each was most of this loop's time)
    for (int64_t r0 = 0; r0 < full; r0 += L) {
      V v[L];
      for (int a = 0; a < L; ++a) {
        if (k0 + a >= g.K) {
          v[a] = V{};
          continue;
        }
        __builtin_prefetch(w + (k0 + a) * cols + r0 + 64);
        v[a] = load(w + (k0 + a) * cols + r0);
      }
      transpose(v);
      for (int e = 0; e < L; ++e) {
        store(panel + (tap * g.C + c) * NR + k0 - jp * NR, v[e]);
        if (++tap == RS) tap = 0, ++c;
      }
    }
  }
  for (int64_t r = full; r < cols; ++r)
    for (int64_t k = jp * NR; k < (jp + 1) * NR; ++k)
      panel[((r % RS) * g.C + r / RS) * NR + k - jp * NR] = k < g.K ? w[k * cols + r] : T(0);
}

// The same B for backward-data run as a forward (f its geometry, made by conv_backward_data_nhwc):
// that forward's kernel is w with its channel axes swapped and each kernel rotated 180 degrees, so
// B[(i S + j) C + c][k] = w[c][k][R - 1 - i][S - 1 - j] (f.C is w's output channels). Built from w
// as it lies, where a copy of the rotated kernel first cost a quarter of ResNet layer4's
// backward-data: for each c, rows k .. k + L - 1 of w[c] hold their taps contiguously, so L of
// their taps are an L x L block transposed in registers; the taps past a multiple of L go one by one.
template <class T>
void weights_tap_major_adjoint(const ConvGeom& f, const T* w, int64_t jp, T* panel) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t RS = f.R * f.S, full = RS / L * L;
  for (int64_t c = 0; c < f.C; ++c) {
    const T* wc = w + c * f.K * RS;  // w[c][k][tap] at wc[k RS + tap]
    auto at = [&](int64_t tap) { return panel + ((RS - 1 - tap) * f.C + c) * NR - jp * NR; };  // B's row, from k 0
    for (int64_t k0 = jp * NR; k0 < (jp + 1) * NR; k0 += L) {
      for (int64_t t0 = 0; t0 < full; t0 += L) {
        V v[L];
        for (int a = 0; a < L; ++a) v[a] = k0 + a < f.K ? load(wc + (k0 + a) * RS + t0) : V{};
        transpose(v);
        for (int e = 0; e < L; ++e) store(at(t0 + e) + k0, v[e]);
      }
      for (int64_t tap = full; tap < RS; ++tap)
        for (int64_t k = k0; k < k0 + L; ++k) at(tap)[k] = k < f.K ? wc[k * RS + tap] : T(0);
    }
  }
}

// B's panels [p0, p1) at `b`, one after another (brows x NR each): w as it lies, or (adjoint) the
// kernel of backward-data's forward.
template <class T>
void pack_b(const ConvGeom& g, const T* w, bool adjoint, int64_t p0, int64_t p1, T* b) {
  const int64_t brows = g.R * g.S * g.C;
  for (int64_t jp = p0; jp < p1; ++jp) {
    T* panel = b + (jp - p0) * brows * MicroTile<T>::NR;
    if (adjoint)
      weights_tap_major_adjoint(g, w, jp, panel);
    else
      weights_tap_major(g, w, jp, panel);
  }
}

// dst[k * ld_dst + e] = src[e * ld_src + k] + bias[k] (bias may be null) for e < m, k < n: L x L
// blocks transposed in registers (one element at a time, the strided reads were a third of a
// 3-channel layer's time), the edges one by one.
template <class T>
void store_transposed(const T* src, int64_t ld_src, int64_t m, int64_t n, const T* bias, T* dst, int64_t ld_dst) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t mf = m / L * L, nf = n / L * L;
  for (int64_t k0 = 0; k0 < nf; k0 += L)
    for (int64_t e0 = 0; e0 < mf; e0 += L) {
      V v[L];
      for (int a = 0; a < L; ++a) v[a] = load(src + (e0 + a) * ld_src + k0);
      transpose(v);
      for (int b = 0; b < L; ++b) store(dst + (k0 + b) * ld_dst + e0, v[b] + (bias ? bias[k0 + b] : T(0)));
    }
  for (int64_t k = 0; k < n; ++k) {
    const T bk = bias ? bias[k] : T(0);
    for (int64_t e = k < nf ? mf : 0; e < m; ++e) dst[k * ld_dst + e] = src[e * ld_src + k] + bk;
  }
}

// The forward; `adjoint`: w is the kernel of the conv whose backward-data this forward computes.
template <class T>
void forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads, bool adjoint) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t P = g.OH * g.OW;
  if (g.N * g.K * P == 0) return;
  const Layout l = layout(g);
  const int64_t panels = ceil_div(g.K, NR), brows = g.R * g.S * g.C;
  const int64_t image_elems = l.Hp * l.Wp * g.C;
  const int64_t chunk = max64(1, min64(g.N, kChunkBytes / int64_t(sizeof(T)) / image_elems));
  const int64_t kblocks = ceil_div(panels * NR, kChannelBlock), block_panels = kChannelBlock / NR;
  // B packed once and shared by all tasks; or, where one chunk holds every image and the threads
  // get equal numbers of channel blocks, a task is a whole channel block: it packs that block's
  // panels itself (590 KB on layer4: they stay in its L2) and sums every pixel with them. Shared,
  // each pixel block's tasks read B back from L3 (layer4: a tenth of the time). Same bits.
  const bool own_b = g.N <= chunk && kblocks >= 2 * threads && kblocks % threads == 0;
  T* b = nullptr;
  if (!own_b) {
    b = static_cast<T*>(thread_workspace(sizeof(T) * (brows * panels * NR + kBSlack<T>), kSlotShared));
    parallel_tasks(panels, threads, [&](int64_t jp) { pack_b(g, w, adjoint, jp, jp + 1, b + jp * brows * NR); });
  }

  // x_t after B in the shared slot would move B; it gets its own buffer (kSlotTile2 is per thread,
  // so the calling thread's, sized for a chunk, is used by all tasks: read-only inside them).
  T* xt = static_cast<T*>(thread_workspace(sizeof(T) * (chunk * image_elems + MicroTile<T>::NR), kSlotTile2));
  const std::vector<Region> rs = regions(g, chunk, MR, 93);  // 7 %: the cost of more, shorter stores
  std::vector<std::vector<Span>> reductions;
  for (const Region& r : rs) reductions.push_back(spans(g, l, r));
  const int64_t most = brows * panels * NR * int64_t(sizeof(T)) > kLargeB ? kMaxPixels : kMaxPixels / 2;
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t n1 = min64(n0 + chunk, g.N);
    to_nhwc(g, l, x, n0, n1, xt, threads);
    // Region ri's pixels in even blocks of pblock[ri], its blocks from first[ri].
    std::vector<int64_t> pblock, first{0};
    for (const Region& r : rs) {
      const int64_t pixels = (n1 - n0) * r.area();
      pblock.push_back(round_up(ceil_div(pixels, max64(1, ceil_div(pixels, most))), MR));
      first.push_back(first.back() + ceil_div(pixels, pblock.back()));
    }
    const int64_t pixel_tasks = first.back();
    // Pixel block q's outputs in channel block kb, with that block's B panels at bk.
    auto pixel_block = [&](int64_t q, int64_t kb, const T* bk) {
      int64_t ri = 0;
      while (q >= first[ri + 1]) ++ri;
      const Region& r = rs[ri];
      const std::vector<Span>& reduction = reductions[ri];
      const int64_t e0 = (q - first[ri]) * pblock[ri], np = min64(pblock[ri], (n1 - n0) * r.area() - e0);
      const int64_t j0 = kb * kChannelBlock, nj = min64(kChannelBlock, g.K - j0);
      T* out = static_cast<T*>(thread_workspace(sizeof(T) * (kMaxPixels + MR) * kChannelBlock, kSlotTile));
      int64_t pixel[kMaxPixels + MR];  // each pixel's first input element (tap 0, 0; channel 0) in x_t
      pixel_offsets(g, l, r, e0, np, pixel);
      if (l.fused || reduction.empty()) {  // all spans summed in registers: one store per output
        for (int64_t jj = 0; jj < nj; jj += NR) {
          const T* bp = bk + jj / NR * brows * NR;
          for (int64_t t = 0; t < np; t += MR) {
            VecOf<T> acc[MR][2];
            tile_zero<T, MR, 2>(acc);
            for (const Span& sp : reduction) {
              RowPointers<T, MR> a;
              for (int i = 0; i < MR; ++i) a.rows[i] = xt + pixel[min64(t + i, np - 1)] + sp.offset;
              tile_accumulate<T, MR, 2>(acc, sp.len, a, StridedRows<T>{bp + sp.row * NR, NR});
            }
            tile_store<T, MR, 2>(acc, out + t * kChannelBlock + jj, kChannelBlock, static_cast<int>(min64(MR, np - t)),
                                 static_cast<int>(min64(NR, nj - jj)), false);
          }
        }
      } else {
        for (const Span& sp : reduction) {
          // Up to 512 rows a call: the C tile is loaded and stored once per block (at 128 that was a
          // fifth of the time on layer4); B's block, 32 KiB a panel, is read from L2.
          const int64_t kc_most = ceil_div(sp.len, ceil_div(sp.len, 512));
          for (int64_t k0 = 0; k0 < sp.len; k0 += kc_most) {
            const int64_t kc = min64(kc_most, sp.len - k0);
            const bool acc = &sp != &reduction[0] || k0 > 0;
            for (int64_t jj = 0; jj < nj; jj += NR)
              for (int64_t t = 0; t < np; t += MR) {
                RowPointers<T, MR> a;
                for (int i = 0; i < MR; ++i) a.rows[i] = xt + pixel[min64(t + i, np - 1)] + sp.offset + k0;
                microkernel_with<T, MR, 2>(kc, a, bk + (jj / NR * brows + sp.row + k0) * NR, NR,
                                           out + t * kChannelBlock + jj, kChannelBlock,
                                           static_cast<int>(min64(MR, np - t)), static_cast<int>(min64(NR, nj - jj)), acc);
              }
          }
        }
      }
      // Y^T's block back to NCHW, plus the bias: a run of pixels contiguous in y at a time (a row
      // of the region, or all of an image's rows when the region spans the width), along each
      // output channel's pixels.
      for (int64_t t = 0, e = e0; t < np;) {
        const Region::Pixel px = r.pixel(e, g.OW);
        const int64_t run = min64(np - t, px.run);
        store_transposed(out + t * kChannelBlock, kChannelBlock, run, nj, bias ? bias + j0 : nullptr,
                         y + ((n0 + px.n) * g.K + j0) * P + px.oh * g.OW + px.ow, P);
        t += run, e += run;
      }
    };
    if (own_b) {
      parallel_tasks(kblocks, threads, [&](int64_t kb) {
        const int64_t p0 = kb * block_panels, p1 = min64(p0 + block_panels, panels);
        T* bk = static_cast<T*>(thread_workspace(sizeof(T) * ((p1 - p0) * brows * NR + kBSlack<T>), kSlotPackA));
        pack_b(g, w, adjoint, p0, p1, bk);
        for (int64_t q = 0; q < pixel_tasks; ++q) pixel_block(q, kb, bk);
      });
    } else {
      parallel_tasks(pixel_tasks * kblocks, threads, [&](int64_t task) {
        const int64_t kb = task / pixel_tasks;
        pixel_block(task % pixel_tasks, kb, b + kb * block_panels * brows * NR);
      });
    }
  }
}

}  // namespace

template <class T>
void conv_forward_nhwc(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  forward(g, x, w, bias, y, threads, false);
}

// Backward-data at stride 1 (padding within the dilated kernel): grad_x is the forward of gy,
// padded by the kernel's extent less the padding, with the kernel rotated and its channel axes
// swapped.
template <class T>
void conv_backward_data_nhwc(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  const ConvGeom f{g.N, g.K, g.OH, g.OW, g.C, g.R, g.S, 1, 1, 1, (g.R - 1) * g.dh - g.ph, (g.S - 1) * g.dw - g.pw,
                   g.dh, g.dw, g.H, g.W};
  forward(f, gy, w, bias, gx, threads, true);
}

// Backward-weight on the same channel-last copy: the output channels are the GEMM's rows, the
// columns (tap, channel) its vector columns and the pixels its reduction.
//
// gw^T[k][(i S + j) C + c] = sum over pixels p of gy[k][p] * x_t[pixel p's input at tap (i, j)][c].
// Pixel p's row of that B operand, a segment at a time, is contiguous in x_t, so the micro-kernel
// reads it in place through a table of the pixels' offsets (RowTable); gy, already pixel-major,
// is packed into MR-channel panels once per slab of pixels. On small planes this sums over all
// images' pixels in long runs, where per-image GEMMs (a 3x3 plane has 9 pixels) would mostly pay
// the C tile's load and store.
//
// Tasks: column panels (x groups of output channels when there are few panels); each element of
// gw is summed by one task over the pixels in order, kPixelBlock at a time: thread-count independent.
constexpr int64_t kPixelBlock = 128;        // reduction rows per micro-kernel call: a B panel of 8 KiB
constexpr int64_t kSlabBytes = 8 << 20;     // packed gy per slab of pixels
// B panels are read in place (pixel rows of x_t) unless they meet this many channel panels: then
// copied first into a contiguous block, which stays in L1 (x_t's rows, at power-of-two strides
// when C is one, fall into few L1 sets and evict each other), the copy paid once for them all.
constexpr int64_t kPackPanels = 12;

template <class T>
void conv_backward_weight_nhwc(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR, NR = MicroTile<T>::NR;
  const int64_t P = g.OH * g.OW, RS = g.R * g.S, brows = RS * g.C;
  if (g.K * brows == 0) return;
  if (g.N * P == 0) {
    std::memset(gw, 0, sizeof(T) * g.K * brows);
    return;
  }
  const Layout l = layout(g);
  const int64_t seg_panels = ceil_div(l.seg_len, NR), panels = l.nseg * seg_panels;
  const int64_t kpanels = ceil_div(g.K, MR);
  const int64_t image_elems = l.Hp * l.Wp * g.C;
  const int64_t chunk = max64(1, min64(g.N, kChunkBytes / int64_t(sizeof(T)) / image_elems));
  const int64_t slab = min64(chunk * P, max64(kPixelBlock, kSlabBytes / int64_t(sizeof(T)) / (kpanels * MR)));
  // The pixels in region order (regions as the forward's: a column panel of gw^T, one tap's
  // channels, sums only the pixels of the regions that meet the input at that tap).
  // Split where that skips 15 % of the multiply-adds or more: at 12 % (a 16x16 plane) the shorter
  // pixel runs cost more than they saved (1.22 -> 1.31 ms); at 18 % (layer4's 7x7) 11.0 -> 10.1 ms.
  const std::vector<Region> rs = regions(g, chunk, 1, 85);
  const int64_t nreg = static_cast<int64_t>(rs.size());
  std::vector<char> reads(panels * nreg);  // panel jp sums region r's pixels
  for (int64_t jp = 0; jp < panels; ++jp) {
    const int64_t s = jp / seg_panels, col = jp % seg_panels * NR, last = min64(col + NR, l.seg_len) - 1;
    const int64_t i = l.merged_width ? s : s / g.S;
    const int64_t j_lo = l.merged_width ? col / g.C : s % g.S, j_hi = l.merged_width ? last / g.C : s % g.S;
    for (int64_t r = 0; r < nreg; ++r)
      reads[jp * nreg + r] = rs[r].i0 <= i && i < rs[r].i1 && rs[r].j0 <= j_hi && j_lo < rs[r].j1;
  }
  // gw^T in the shared slot; x_t (with a panel's slack: the last panel of a segment reads past it)
  // in the calling thread's kSlotTile2; packed gy and the pixels' offsets in x_t in its kSlotTile. Tasks only read them (to_nhwc's tasks use kSlotPackA).
  T* gwt = static_cast<T*>(thread_workspace(sizeof(T) * g.K * brows, kSlotShared));
  T* xt = static_cast<T*>(thread_workspace(sizeof(T) * (chunk * image_elems + NR), kSlotTile2));
  char* scratch = static_cast<char*>(thread_workspace((sizeof(T) * kpanels * MR + sizeof(int64_t)) * slab, kSlotTile));
  T* a = reinterpret_cast<T*>(scratch);
  int64_t* offsets = reinterpret_cast<int64_t*>(scratch + sizeof(T) * kpanels * MR * slab);
  // A task's block: up to 8 column panels x 16 channel panels. Per pixel block, its gy panels stay
  // in L2 while each B panel (from L1) meets all of them; halved while there are few tasks.
  int64_t cgroup = min64(panels, 8), kgroup = min64(kpanels, 16);
  while (ceil_div(panels, cgroup) * ceil_div(kpanels, kgroup) < 3 * threads && (cgroup > 1 || kgroup > 1)) {
    int64_t& larger = cgroup >= kgroup ? cgroup : kgroup;
    larger = ceil_div(larger, 2);
  }
  // Group g of n over `count` panels: [g count / n, (g + 1) count / n), sizes differing by one at
  // most (43 channel panels in 6 groups of 8 and a last of 3 kept one thread waiting a fifth of
  // the time on MobileNet's 1x1).
  const int64_t cgroups = ceil_div(panels, cgroup), kgroups = ceil_div(kpanels, kgroup);
  auto group_start = [](int64_t g, int64_t n, int64_t count) { return g * count / n; };
  std::vector<char> started(panels * kgroups, 0);  // (panel, channel group) has summed a block
  struct Run {
    int64_t t, gy, len;  // slab pixels t .. t + len - 1 are gy's (channel 0) gy .. gy + len - 1
  };
  std::vector<Run> runs;

  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t n1 = min64(n0 + chunk, g.N), images = n1 - n0;
    to_nhwc(g, l, x, n0, n1, xt, threads);
    std::vector<int64_t> first{0};  // region r's pixels at [first[r], first[r + 1]) of the chunk
    for (const Region& r : rs) first.push_back(first.back() + images * r.area());
    for (int64_t q0 = 0; q0 < first.back(); q0 += slab) {
      const int64_t ps = min64(slab, first.back() - q0);
      runs.clear();
      for (int64_t r = 0; r < nreg; ++r) {  // the slab's pixels of region r
        const int64_t lo = max64(first[r], q0), hi = min64(first[r + 1], q0 + ps);
        if (lo >= hi) continue;
        const Region& rg = rs[r];
        pixel_offsets(g, l, rg, lo - first[r], hi - lo, offsets + lo - q0);
        for (int64_t e = lo - first[r], t = lo - q0; t < hi - q0;) {  // runs contiguous in gy, as the forward's stores
          const Region::Pixel px = rg.pixel(e, g.OW);
          const int64_t len = min64(hi - q0 - t, px.run);
          runs.push_back({t, (n0 + px.n) * g.K * P + px.oh * g.OW + px.ow, len});
          t += len, e += len;
        }
      }
      parallel_tasks(kpanels, threads, [&](int64_t kp) {  // gy's channels kp MR .. + MR - 1 as [pixel][MR]
        T* panel = a + kp * MR * ps;
        const bool whole = (kp + 1) * MR <= g.K;  // else rows past K are zero
        for (const Run& run : runs) {
          // whole vectors of pixels as L x L register transposes (one element at a time, a sixth
          // of MobileNet's 1x1 backward-weight), the rest one by one
          const int64_t done = whole ? pack_rows_transposed<T, MR>(run.len, gy + run.gy + kp * MR * P, P,
                                                                    panel + run.t * MR) : 0;
          for (int64_t i = 0; i < MR; ++i) {
            const int64_t k = kp * MR + i;
            for (int64_t e = done; e < run.len; ++e)
              panel[(run.t + e) * MR + i] = k < g.K ? gy[run.gy + k * P + e] : T(0);
          }
        }
      });
      parallel_tasks(cgroups * kgroups, threads, [&](int64_t task) {
        const int64_t cgi = task / kgroups, kgi = task % kgroups;
        const int64_t jp0 = group_start(cgi, cgroups, panels), jp1 = group_start(cgi + 1, cgroups, panels);
        const int64_t kp0 = group_start(kgi, kgroups, kpanels), kp1 = group_start(kgi + 1, kgroups, kpanels);
        T* panel = static_cast<T*>(thread_workspace(sizeof(T) * kPixelBlock * NR, kSlotPackA));
        for (int64_t r = 0; r < nreg; ++r) {
          const int64_t lo = max64(first[r], q0) - q0, hi = min64(first[r + 1], q0 + ps) - q0;
          for (int64_t t0 = lo; t0 < hi; t0 += kPixelBlock) {
            const int64_t kc = min64(kPixelBlock, hi - t0);
            for (int64_t jp = jp0; jp < jp1; ++jp) {
              if (!reads[jp * nreg + r]) continue;
              const int64_t s = jp / seg_panels, col = jp % seg_panels * NR;
              const T* seg = xt + segment_offset(g, l, s) + col;  // from a pixel's offset
              const int nv = static_cast<int>(min64(NR, l.seg_len - col));
              T* c = gwt + s * l.seg_len + col;
              const bool acc = started[jp * kgroups + kgi];
              if (!acc) started[jp * kgroups + kgi] = 1;  // once: the flags share cache lines across threads
              auto channel_panels = [&](auto b_rows) {
                for (int64_t kp = kp0; kp < kp1; ++kp)
                  microkernel_ab<T, MR, 2>(kc, PackedPanel<T, MR>{a + (kp * ps + t0) * MR}, b_rows, c + kp * MR * brows,
                                           brows, static_cast<int>(min64(MR, g.K - kp * MR)), nv, acc);
              };
              if (kp1 - kp0 >= kPackPanels) {
                for (int64_t t = 0; t < kc; ++t) std::memcpy(panel + t * NR, seg + offsets[t0 + t], sizeof(T) * NR);
                channel_panels(StridedRows<T>{panel, NR});
              } else {
                channel_panels(RowTable<T>{seg, offsets + t0});
              }
            }
          }
        }
      });
    }
  }
  // Columns no pixel's input reaches (taps only ever on padding) are zero.
  for (int64_t jp = 0; jp < panels; ++jp) {
    const int64_t col = jp / seg_panels * l.seg_len + jp % seg_panels * NR, nv = min64(NR, l.seg_len - jp % seg_panels * NR);
    for (int64_t kgi = 0; kgi < kgroups; ++kgi) {
      if (started[jp * kgroups + kgi]) continue;
      const int64_t k1 = min64(group_start(kgi + 1, kgroups, kpanels) * MR, g.K);
      for (int64_t k = group_start(kgi, kgroups, kpanels) * MR; k < k1; ++k)
        std::memset(gwt + k * brows + col, 0, sizeof(T) * nv);
    }
  }
  // gw^T[k][tap C + c] -> gw[k][c][tap].
  parallel_tasks(g.K, threads, [&](int64_t k) {
    const T* src = gwt + k * brows;
    T* dst = gw + k * brows;
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t tap = 0; tap < RS; ++tap) dst[c * RS + tap] = src[tap * g.C + c];
  });
}

#define FC_INSTANTIATE(T) \
  template void conv_forward_nhwc<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_data_nhwc<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_nhwc<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
