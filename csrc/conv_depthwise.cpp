// Depthwise convolution, direct: forward for one input channel per group (groups = C, any
// number of output channels per group: depthwise with a channel multiplier, or a first layer on
// one channel); backward-data and backward-weight for groups = C = K.
//
// As a GEMM a depthwise conv has one row and R*S-long sums, so the GEMM kernels spend their
// time packing and on idle register rows (MobileNet's 3x3 stride-2 layer ran at 2 GFLOP/s).
// Here each plane is copied once into its stride-phase slabs (wide.h's layout, built by
// plane_slabs), and then every tap is one vectorised multiply-add over the plane's wide rows:
// y_wide[q] += w[r][s] * slab[tap + q], taps in order, for blocks of output channels and of q
// held in registers.
//
// At stride 2 and more across, the forward with one output channel per input channel (MobileNet's)
// works on L channels at a time instead, one a vector lane (depthwise_forward_interleaved): no
// output is computed twice and none thrown away. With a channel multiplier, at stride 2 across,
// it sums at stride 1 across over the zero-padded plane (the stride-1 slab) and keeps the even
// columns: twice the multiply-adds, but no split of the input into column phases, whose shuffles
// cost more than the taps.
//
// Backward-data at stride 2 across is the sub-pixel decomposition: grad_x's even and odd columns
// each sum their own taps over zero-padded grad_out rows, interleaved into grad_x's rows. At other
// strides it is the forward of the flipped kernel at stride 1 over grad_out spread out by the
// stride (zeros between its pixels) and padded by the dilated kernel's extent less the padding;
// plane_slabs does the spreading as it lays a plane out.
//
// Backward-weight works on L channels at a time, one a vector lane, as the interleaved forward:
// R*S sums in registers over each image's interleaved planes (depthwise_backward_weight_interleaved).
// Where x's padding (a zero) meets an inf of grad_out, grad_w is not all finite and is made again
// by implicit_gemm's kernel (kernel_table.cpp's finite_or_direct), PyTorch's answer there.
//
// Tasks: forward and backward-data, runs of consecutive planes (image, channel), all output
// channels of each (the interleaved forward: blocks of L channels of an image); backward-weight,
// a block of L channels each (all images in order inside). Fixed summation orders: results do not
// depend on the thread count.
#include <cstring>
#include <utility>
#include <vector>

#include "gather.h"
#include "kernels.h"
#include "subpixel.h"
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

// The slabs of one plane (wide.h's layout, phase p at dst + p * phase_stride) for the conv g
// over a source plane of src_h x src_w pixels spread out by (uh, uw): the conv's input pixel
// (i * uh, j * uw) is source pixel (i, j), and its other pixels are zero (g.H, g.W are the
// spread sizes; uh = uw = 1 for a plain forward).
//
// wide.h's build_slabs spends tens of cycles per slab row on bounds, zero fills and scalar
// tails, which for a depthwise plane (a few hundred outputs) cost more than the taps. Here a
// source row is split into its column phases with whole vectors read straight from the source
// (at stride 2, the even and odd lanes of two loads; other strides and spreads take a scalar
// loop), stored from each phase's first slot holding an input column, with the lanes past the
// row's last column zeroed. Such a store may run on by up to 2L - 1 slots into the phase's next
// row (written after it) or its slack, and writes zeros there. So the slots no source pixel
// reaches (padding, rows outside the input, spread zeros) are the same for every plane of a
// geometry and only ever hold zeros: the caller zeros a slab buffer once per task, not per plane.
struct PlaneSlabs {
  int64_t srows, Wp, phases, phase_stride;  // phase_stride >= srows * Wp + 2L
  int64_t uw;
  std::vector<char> read_w;  // the column phases some tap reads
  // The slab rows some tap reads that hold a source row: (slab row's start, source row's start).
  // Listed once per layout, so a plane's rows cost no index arithmetic (the division by uh was
  // an eighth of a stride-2 layer's time).
  std::vector<std::pair<int64_t, int64_t>> rows;
  // Input column parity pi (sw = 2: 0, 1; else 0) goes to the slab row's slots from at[pi], for
  // count[pi] input columns (at = -1: no tap reads it); `longest` of them.
  int64_t at[2], count[2], longest;
};

template <class T>
PlaneSlabs plane_slabs_layout(const ConvGeom& g, int64_t src_w, int64_t uh, int64_t uw) {
  constexpr int L = Vec<T>::kLanes;
  const WideLayout lay = wide_layout(g);
  const int64_t srows = g.OH + lay.halo;
  PlaneSlabs p{srows, lay.Wp, lay.phases, round_up(srows * lay.Wp + 2 * L, L), uw,
               {}, {}, {-1, -1}, {0, 0}, 0};
  std::vector<char> read_h(g.sh, 0);
  p.read_w.assign(g.sw, 0);
  for (int64_t r = 0; r < g.R; ++r) read_h[r * g.dh % g.sh] = 1;
  for (int64_t s = 0; s < g.S; ++s) p.read_w[s * g.dw % g.sw] = 1;
  for (int64_t hr = 0; hr < srows; ++hr)
    for (int64_t a = 0; a < g.sh; ++a) {  // input rows in order
      const int64_t ih = hr * g.sh + a - g.ph;
      if (read_h[a] && ih >= 0 && ih < g.H && ih % uh == 0)  // the other rows stay zero
        p.rows.emplace_back(a * g.sw * p.phase_stride + hr * p.Wp, ih / uh * src_w);
    }
  if (g.sw <= 2)
    for (int64_t b = 0; b < g.sw; ++b) {  // slot j of phase b holds input column j * sw + b - pw
      const auto [lo, hi] = slab_columns(g, p.Wp, b);
      const int64_t pi = lo * g.sw + b - g.pw;  // the column parity slot lo holds
      if (!p.read_w[b] || hi == lo) continue;
      p.at[pi] = b * p.phase_stride + lo;
      p.count[pi] = hi - lo;
      p.longest = max64(p.longest, hi - lo);
    }
  return p;
}

// v with lanes l >= n zeroed.
template <class T>
inline VecOf<T> keep_below(VecOf<T> v, int64_t n) {
  typedef typename IntVec<T>::type M;
  typedef decltype(M{}[0] + 0) Lane;
  M idx;
  for (int l = 0; l < Vec<T>::kLanes; ++l) idx[l] = l;
  return idx < static_cast<Lane>(min64(n, Vec<T>::kLanes)) ? v : VecOf<T>{};
}

// x: the source plane; x_end: the end of the array it lies in (how far a vector may read).
template <class T>
void plane_slabs(const ConvGeom& g, const PlaneSlabs& p, const T* x, const T* x_end, T* dst) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t Wp = p.Wp, ps = p.phase_stride, n = p.longest, n0 = p.count[0], n1 = p.count[1];
  for (const auto& [slab_row, src_row] : p.rows) {
    const T* src = x + src_row;
    T* d = dst + slab_row;  // phase (a, 0)
    if (g.sw == 1 && p.uw == 1) {
      T* out = d + p.at[0];
      int64_t i = 0;
      for (; i < n && src + i + L <= x_end; i += L) store(out + i, keep_below<T>(load(src + i), n - i));
      for (; i < n; ++i) out[i] = src[i];
    } else if (g.sw == 2 && p.uw == 1) {
      T* out0 = p.at[0] >= 0 ? d + p.at[0] : nullptr;
      T* out1 = p.at[1] >= 0 ? d + p.at[1] : nullptr;
      int64_t i = 0;
      for (; i + L <= min64(n0, n1) && src + 2 * i + 2 * L <= x_end; i += L) {  // no lane past the row
        const V v0 = load(src + 2 * i), v1 = load(src + 2 * i + L);
        if (out0) store(out0 + i, deinterleave_even(v0, v1));
        if (out1) store(out1 + i, deinterleave_odd(v0, v1));
      }
      for (; i < n && src + 2 * i + 2 * L <= x_end; i += L) {
        const V v0 = load(src + 2 * i), v1 = load(src + 2 * i + L);
        if (out0) store(out0 + i, keep_below<T>(deinterleave_even(v0, v1), n0 - i));
        if (out1) store(out1 + i, keep_below<T>(deinterleave_odd(v0, v1), n1 - i));
      }
      for (int64_t j = i; j < n0 && out0; ++j) out0[j] = src[2 * j];
      for (int64_t j = i; j < n1 && out1; ++j) out1[j] = src[2 * j + 1];
    } else {  // the general case, scalar: input column c = j * sw + b - pw
      for (int64_t b = 0; b < g.sw; ++b) {
        if (!p.read_w[b]) continue;
        const auto [lo, hi] = slab_columns(g, Wp, b);
        for (int64_t j = lo; j < hi; ++j) {
          const int64_t c = j * g.sw + b - g.pw;
          if (c % p.uw == 0) d[b * ps + j] = src[c / p.uw];
        }
      }
    }
  }
}

// Runs of consecutive planes as tasks, so that each thread streams through x (one plane per task,
// the two threads' planes interleaved, ran at half the bandwidth), and the next plane is fetched
// while this one is computed. per_plane(plane, slab) for each plane, slab a buffer of slab_size
// elements zeroed once per task (see plane_slabs).
template <class T, class F>
void plane_runs(int64_t planes, int64_t plane_size, const T* x, int64_t slab_size, int threads, F per_plane) {
  const int64_t per_task =
      max64(1, min64(planes / (8 * int64_t(threads)), ceil_div(int64_t(32) << 10, sizeof(T) * plane_size)));
  parallel_tasks(ceil_div(planes, per_task), threads, [&](int64_t task) {
    T* slab = static_cast<T*>(thread_workspace(sizeof(T) * slab_size, kSlotPackA));
    std::memset(slab, 0, sizeof(T) * slab_size);
    for (int64_t plane = task * per_task; plane < min64(planes, (task + 1) * per_task); ++plane) {
      if (plane + 1 < planes)
        for (int64_t e = 0; e < plane_size; e += 64 / sizeof(T)) __builtin_prefetch(x + (plane + 1) * plane_size + e);
      per_plane(plane, slab);
    }
  });
}

// The forward over `planes` source planes of src_h x src_w pixels spread by (uh, uw) (see
// plane_slabs), with weights w (K, 1, R, S) and optional bias.
template <class T>
void depthwise_forward(const ConvGeom& g, const T* x, int64_t src_h, int64_t src_w, int64_t uh, int64_t uw,
                       const T* w, const T* bias, T* y, int threads) {
  constexpr int L = Vec<T>::kLanes;
  constexpr int KB = 4, NV4 = 2, NV1 = 8;  // 4 channels x 2 vectors, or 1 channel x 8 vectors (8 sums in flight)
  constexpr int64_t kSlack = NV1 * L;      // elements a block may read or write past Q
  const PlaneSlabs lay = plane_slabs_layout<T>(g, src_w, uh, uw);
  const int64_t Wp = lay.Wp, RS = g.R * g.S;
  const int64_t Q = g.OH > 0 ? (g.OH - 1) * Wp + g.OW : 0, Kg = g.K / g.groups;
  const int64_t slab_size = lay.phases * lay.phase_stride + kSlack, wide = round_up(Q, kSlack) + kSlack;
  std::vector<int64_t> tap(RS);  // each tap's start within a plane's slabs
  for (int64_t t = 0; t < RS; ++t) tap[t] = tap_offset(g, Wp, lay.phase_stride, t / g.S, t % g.S);
  const int64_t planes = g.N * g.groups, plane_size = src_h * src_w;
  plane_runs(planes, plane_size, x, slab_size, threads, [&](int64_t plane, T* slab) {
    T* acc = static_cast<T*>(thread_workspace(sizeof(T) * KB * wide, kSlotTile));
    const int64_t n = plane / g.groups, gi = plane % g.groups;  // plane = (image, input channel = group)
    plane_slabs(g, lay, x + plane * plane_size, x + planes * plane_size, slab);
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

// RB output rows x VB vectors of outputs from ow0 of a stride-2 (across) conv: the sums at stride
// 1 across over the padded plane (p at the block's first row and column 2 * ow0, rows row_step
// apart), in 2 * VB vectors a row, then their even lanes; y at the block's first row.
template <class T, int RB, int VB>
inline void stride2_block(const T* p, int64_t row_step, const int64_t* taps, int64_t RS, const T* wk, T bias, T* y,
                          int64_t OW, int64_t ow0) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  V acc[RB][2 * VB];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < 2 * VB; ++v) acc[i][v] = V{};
  for (int64_t t = 0; t < RS; ++t) {
    const T wv = wk[t];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < 2 * VB; ++v) acc[i][v] += load(p + i * row_step + taps[t] + v * L) * wv;
  }
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < VB; ++v) {
      const V out = deinterleave_even(acc[i][2 * v], acc[i][2 * v + 1]) + bias;
      T* dst = y + i * OW + ow0 + v * L;
      const int64_t n = OW - ow0 - v * L;
      if (n >= L)
        store(dst, out);
      else
        for (int64_t l = 0; l < n; ++l) dst[l] = out[l];
    }
}

// The plain forward at stride 2 across: the stride-1 (padded) layout of each plane, no column
// phases. Summing every column (the odd ones are dropped) doubles the multiply-adds, but splitting
// the input into column phases took half of MobileNet's stride-2 layer's time; here one shuffle
// pair per output vector picks the even sums. Written straight into y, rows in blocks of 2.
template <class T>
void depthwise_forward_stride2(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int L = Vec<T>::kLanes, VB = 2;
  ConvGeom g1 = g;  // the same conv at stride 1: its slab is the zero-padded plane
  g1.sh = g1.sw = 1;
  g1.OH = g.H + 2 * g.ph - (g.R - 1) * g.dh;
  g1.OW = g.W + 2 * g.pw - (g.S - 1) * g.dw;
  const PlaneSlabs lay = plane_slabs_layout<T>(g1, g.W, 1, 1);
  const int64_t Wp = lay.Wp, RS = g.R * g.S, Kg = g.K / g.groups, OW = g.OW, row_step = g.sh * Wp;
  // a block reads up to 2 * VB * L - 1 + (S - 1) * dw columns on from a row's start at 2 * ow0
  const int64_t slab_size = lay.phase_stride + 2 * VB * L + (g.S - 1) * g.dw;
  std::vector<int64_t> tap(RS);
  for (int64_t t = 0; t < RS; ++t) tap[t] = (t / g.S) * g.dh * Wp + (t % g.S) * g.dw;
  const int64_t planes = g.N * g.groups, plane_size = g.H * g.W;
  plane_runs(planes, plane_size, x, slab_size, threads, [&](int64_t plane, T* slab) {
    plane_slabs(g1, lay, x + plane * plane_size, x + planes * plane_size, slab);
    const int64_t n = plane / g.groups, gi = plane % g.groups;
    for (int64_t ko = gi * Kg; ko < (gi + 1) * Kg; ++ko) {
      const T* wk = w + ko * RS;
      const T b = bias ? bias[ko] : T(0);
      T* dst = y + (n * g.K + ko) * g.OH * OW;
      int64_t oh = 0;
      for (; oh + 2 <= g.OH; oh += 2) {
        int64_t ow0 = 0;
        for (; ow0 + L < OW; ow0 += VB * L)  // more than one vector left
          stride2_block<T, 2, VB>(slab + oh * row_step + 2 * ow0, row_step, tap.data(), RS, wk, b, dst + oh * OW, OW, ow0);
        if (ow0 < OW)
          stride2_block<T, 2, 1>(slab + oh * row_step + 2 * ow0, row_step, tap.data(), RS, wk, b, dst + oh * OW, OW, ow0);
      }
      for (; oh < g.OH; ++oh)
        for (int64_t ow0 = 0; ow0 < OW; ow0 += L)
          stride2_block<T, 1, 1>(slab + oh * row_step + 2 * ow0, row_step, tap.data(), RS, wk, b, dst + oh * OW, OW, ow0);
    }
  });
}

// acc[o] = the sum over taps t in order of in[tap[t] + o * sw * L] * wv[t * L], o < OB. SW and RS are
// the stride and the tap count where fixed at compile time (0: sw and rs at run time): with them
// the loads' offsets are constants and the taps unrolled; at run time each load's address waited
// on the one before's add (8 FMAs took 8 cycles).
template <class T, int OB, int SW, int RS>
inline void interleaved_sums(const T* in, const T* wv, const int64_t* tap, int64_t sw, int64_t rs, VecOf<T>* acc) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t step = (SW ? SW : sw) * L;
#pragma GCC unroll 16
  for (int o = 0; o < OB; ++o) acc[o] = VecOf<T>{};
#pragma GCC unroll 9
  for (int64_t t = 0; t < (RS ? RS : rs); ++t) {
    const VecOf<T> wt = load(wv + t * L);
    const T* p = in + tap[t];
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o) acc[o] += load(p + o * step) * wt;
  }
}

// L planes of H x W from src (plane e at src + e * H * W; lanes e >= nc zero) interleaved into
// dst[hp][wp][e] = plane e's pixel (hp - ph, wp - pw), zero outside it, for hp < Hp, wp < Wp
// (Wp >= pw + W rounded up to L): one register transpose per L x L block of pixels.
template <class T>
void interleave_planes(const T* src, int64_t H, int64_t W, int64_t nc, int64_t ph, int64_t pw, int64_t Hp,
                       int64_t Wp, T* dst) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  const int64_t plane = H * W;
  for (int64_t hp = 0; hp < Hp; ++hp) {
    T* row = dst + hp * Wp * L;
    const int64_t ih = hp - ph;
    if (ih < 0 || ih >= H) {
      std::memset(row, 0, sizeof(T) * Wp * L);
      continue;
    }
    std::memset(row, 0, sizeof(T) * pw * L);
    const int64_t tail = pw + round_up(W, L);  // the columns past the last vector's
    std::memset(row + tail * L, 0, sizeof(T) * (Wp - tail) * L);
    const T* s = src + ih * W;
    for (int64_t iw = 0; iw < W; iw += L) {  // the last vector's lanes past the row are zero
      V v[L];
      for (int e = 0; e < L; ++e) {
        v[e] = V{};
        if (e >= nc) continue;
        if (iw + L <= W)
          v[e] = load(s + e * plane + iw);
        else
          masked_row_load(s + e * plane, iw, W, v[e]);
      }
      transpose(v);
      for (int e = 0; e < L; ++e) store(row + (pw + iw + e) * L, v[e]);
    }
  }
}

// The forward with one output channel per input channel (K = C), L channels at a time, each a
// vector lane: a block of L planes is interleaved (transposed in registers) into a zero-padded
// [row][column][L] copy, every output pixel is then its taps' multiply-adds over whole vectors,
// and L x L blocks of outputs go back to the planes through register transposes. Nothing is
// computed twice or thrown away, at any stride: the plane-at-a-time kernels above sum stride 2 at
// stride 1 (twice the multiply-adds) and, on MobileNet's 14x14 stride-2 layer, spend most of
// their time on per-plane set-up and part-filled vectors (0.22 ms where torch took 0.17).
//
// Tasks: (image, block of L channels); each output is one task's sum over its taps in order.
template <class T>
void depthwise_forward_interleaved(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes, G = 8 / L;  // G groups of L outputs a block: 8 sums in flight
  constexpr int OB = G * L;
  const int64_t RS = g.R * g.S, blocks = ceil_div(g.C, L), plane = g.H * g.W;
  const int64_t Hp = max64(g.H + g.ph, (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1);
  // Whole blocks of outputs, and whole vectors of input columns, stay inside a row.
  const int64_t Wp = max64(g.pw + round_up(g.W, L), (round_up(g.OW, OB) - 1) * g.sw + (g.S - 1) * g.dw + 1);
  std::vector<int64_t> tap(RS);  // tap t's start from an output's first input element, in elements
  for (int64_t t = 0; t < RS; ++t) tap[t] = ((t / g.S) * g.dh * Wp + (t % g.S) * g.dw) * L;
  parallel_tasks(g.N * blocks, threads, [&](int64_t task) {
    const int64_t n = task / blocks, c0 = task % blocks * L, nc = min64(L, g.C - c0);
    T* xi = static_cast<T*>(thread_workspace(sizeof(T) * (Hp * Wp + RS) * L, kSlotPackA));
    T* wv = xi + Hp * Wp * L;  // tap t's weights for the L channels at wv + t L
    for (int64_t t = 0; t < RS; ++t)
      for (int e = 0; e < L; ++e) wv[t * L + e] = e < nc ? w[(c0 + e) * RS + t] : T(0);
    interleave_planes(x + (n * g.C + c0) * plane, g.H, g.W, nc, g.ph, g.pw, Hp, Wp, xi);
    // Locals, not g's fields: the stores to y made the compiler reload those after each one.
    const int64_t OH = g.OH, OW = g.OW, sw = g.sw, row_step = g.sh * Wp * L;
    T b[L];
    for (int e = 0; e < L; ++e) b[e] = bias && e < nc ? bias[c0 + e] : T(0);
    T* const dst = y + (n * g.C + c0) * OH * OW;  // channel c0 + e's plane at dst + e * OH * OW
    for (int64_t oh = 0; oh < OH; ++oh) {
      const T* in = xi + oh * row_step;
      for (int64_t next = 0; next < OW;) {
        // A row's last block ends at the row's end, overlapping the one before (its outputs are
        // summed again, the same way): every store is a whole vector (masked stores are slow on
        // AMD: a fifth of the time on MobileNet's 14-wide rows).
        const int64_t ow0 = next + OB <= OW || OW < OB ? next : OW - OB;
        next = ow0 + OB;
        V acc[OB];
        const T* p = in + ow0 * sw * L;
        if (sw == 2 && RS == 9)
          interleaved_sums<T, OB, 2, 9>(p, wv, tap.data(), 2, 9, acc);
        else if (sw == 2)
          interleaved_sums<T, OB, 2, 0>(p, wv, tap.data(), 2, RS, acc);
        else
          interleaved_sums<T, OB, 0, 0>(p, wv, tap.data(), sw, RS, acc);
        for (int q = 0; q < G; ++q) {  // outputs ow0 + q L .. + L - 1: lane e is channel c0 + e
          V v[L];
          for (int e = 0; e < L; ++e) v[e] = acc[q * L + e];
          transpose(v);
          const int64_t o0 = ow0 + q * L, m = min64(L, OW - o0);
          if (m <= 0) break;
          T* out = dst + oh * OW + o0;
          for (int e = 0; e < nc; ++e, out += OH * OW) store_lanes(out, v[e] + b[e], m);
        }
      }
    }
  });
}

// acc[t] += sum over the grid's pixels (oh, ow) in order of gyi[oh][ow] * xi[oh row_step + ow col_step
// + tap[t]], NT taps, all in registers over the pass (gyi rows gy_row apart).
template <class T, int NT>
inline void interleaved_weight_sums(const T* xi, const T* gyi, int64_t OH, int64_t OW, int64_t gy_row,
                                    int64_t row_step, int64_t col_step, const int64_t* tap, VecOf<T>* acc) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  V a[NT];
  int64_t off[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) a[t] = acc[t], off[t] = tap[t];
  for (int64_t oh = 0; oh < OH; ++oh) {
    const T* in = xi + oh * row_step;
    const T* g = gyi + oh * gy_row;
    for (int64_t ow = 0; ow < OW; ++ow, in += col_step, g += L) {
      const V gv = load(g);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) a[t] += gv * load(in + off[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc[t] = a[t];
}

// Backward-weight with L channels at a time, each a vector lane (as depthwise_forward_interleaved):
// for each image in order, the L planes of x are interleaved into a zero-padded [row][column][L]
// copy and those of grad_out into [row][column][L], and every tap's sum is then whole-vector
// multiply-adds, no lane wasted, no horizontal sum. The plane kernel it replaced (slabs of each
// plane, then R*S dot products over them) spent ~1300 cycles a plane of MobileNet's 28x28 stride-2
// layer on per-row set-up and part-filled vectors, for 9 x 196 multiply-adds: this takes 0.54 of its
// time there and 0.64 at stride 1 (56x56).
//
// Tasks: a block of L channels, all images inside in order: each weight is one task's sum over
// (image, oh, ow) in order, at any thread count.
template <class T>
void depthwise_backward_weight_interleaved(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes, TB = 9;  // taps per pass: a 3x3 kernel in one
  const int64_t RS = g.R * g.S, blocks = ceil_div(g.C, L), HW = g.H * g.W, OHW = g.OH * g.OW;
  const int64_t Hp = max64(g.H + g.ph, (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1);
  const int64_t Wp = max64(g.pw + round_up(g.W, L), (g.OW - 1) * g.sw + (g.S - 1) * g.dw + 1);
  const int64_t Wg = round_up(g.OW, L);  // grad_out's interleaved rows
  const int64_t gy_row = Wg * L, row_step = g.sh * Wp * L, col_step = g.sw * L;
  std::vector<int64_t> tap(RS);
  for (int64_t t = 0; t < RS; ++t) tap[t] = ((t / g.S) * g.dh * Wp + (t % g.S) * g.dw) * L;
  parallel_tasks(blocks, threads, [&](int64_t block) {
    const int64_t c0 = block * L, nc = min64(L, g.C - c0);
    T* xi = static_cast<T*>(thread_workspace(sizeof(T) * Hp * Wp * L, kSlotPackA));
    T* gyi = static_cast<T*>(thread_workspace(sizeof(T) * g.OH * Wg * L, kSlotTile));
    std::vector<V> acc(RS, V{});
    for (int64_t n = 0; n < g.N; ++n) {
      interleave_planes(x + (n * g.C + c0) * HW, g.H, g.W, nc, g.ph, g.pw, Hp, Wp, xi);
      interleave_planes(gy + (n * g.C + c0) * OHW, g.OH, g.OW, nc, 0, 0, g.OH, Wg, gyi);
      for (int64_t t0 = 0; t0 < RS; t0 += TB) {  // taps [t0, t0 + TB) in one pass
        V* a = acc.data() + t0;
        const int64_t* tp = tap.data() + t0;
        switch (min64(TB, RS - t0)) {
#define FC_CASE(NT) \
  case NT: interleaved_weight_sums<T, NT>(xi, gyi, g.OH, g.OW, gy_row, row_step, col_step, tp, a); break;
          FC_CASE(1) FC_CASE(2) FC_CASE(3) FC_CASE(4) FC_CASE(5) FC_CASE(6) FC_CASE(7) FC_CASE(8) FC_CASE(9)
#undef FC_CASE
        }
      }
    }
    for (int64_t t = 0; t < RS; ++t)
      for (int64_t e = 0; e < nc; ++e) gw[(c0 + e) * RS + t] = acc[t][e];
  });
}

// A tap of a sub-pixel sum: where it reads the padded grad_out plane, and its weight's index.
struct SubpixelTap {
  int64_t at, weight;
};

// NV vectors from column j0 of grad_x's even and odd columns, each the sum of its taps in order
// plus the bias, interleaved into dst's 2 * NV * L columns.
template <class T, int NV>
inline void subpixel_block(const T* pad, const T* w, const SubpixelTap* even_taps, int64_t n_even,
                           const SubpixelTap* odd_taps, int64_t n_odd, int64_t j0, T bias, T* dst) {
  typedef VecOf<T> V;
  constexpr int L = Vec<T>::kLanes;
  V even[NV], odd[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) even[v] = odd[v] = V{};
  for (int64_t k = 0; k < n_even; ++k)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) even[v] += load(pad + even_taps[k].at + j0 + v * L) * w[even_taps[k].weight];
  for (int64_t k = 0; k < n_odd; ++k)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) odd[v] += load(pad + odd_taps[k].at + j0 + v * L) * w[odd_taps[k].weight];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    V lo, hi;
    interleave(even[v] + bias, odd[v] + bias, lo, hi);
    store(dst + 2 * v * L, lo);
    store(dst + 2 * v * L + L, hi);
  }
}

// Backward-data at stride 2 across, by the sub-pixel decomposition (subpixel.h): grad_x's even
// and odd columns each sum their own taps over grad_out rows (read from a zero-padded copy), and
// the two sums are interleaved into grad_x's row. The spread path below multiplies zeros in three
// taps of four; this does the same sums without them, taps in its order (r, then s, descending),
// so the bits are the same up to the sign of a zero.
template <class T>
void depthwise_backward_data_stride2(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  constexpr int L = Vec<T>::kLanes, NV = 2;
  const int64_t S = g.S, RS = g.R * g.S, OW = g.OW, J = ceil_div(g.W, 2), Jv = round_up(J, NV * L);
  int64_t ntap[2];  // column phase b: its taps s, grad_out column j + off
  std::vector<int64_t> off(2 * S), tap(2 * S);
  subpixel_taps(2, g.pw, g.dw, S, ntap, off.data(), tap.data());
  int64_t lo = 0, hi = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < ntap[b]; ++i) lo = min64(lo, off[b * S + i]), hi = max64(hi, off[b * S + i]);
  // A grad_out row at column M of a row of Wg, zeros around it: column j + off of a phase is read
  // as whole vectors for j < Jv.
  const int64_t M = -lo, Wg = M + max64(OW, Jv + hi), planes = g.N * g.C, HW = g.H * g.W;
  // The taps of grad_x row ih's column phase q: taps[first[2 * ih + q], first[2 * ih + q + 1]).
  std::vector<SubpixelTap> taps;
  std::vector<int64_t> first{0};
  for (int64_t ih = 0; ih < g.H; ++ih)
    for (int64_t q = 0; q < 2; ++q) {
      for (int64_t r = g.R - 1; r >= 0; --r) {
        const int64_t v = ih + g.ph - r * g.dh;
        if (v % g.sh || v < 0 || v / g.sh >= g.OH) continue;
        for (int64_t i = ntap[q] - 1; i >= 0; --i)
          taps.push_back({v / g.sh * Wg + M + off[q * S + i], r * S + tap[q * S + i]});
      }
      first.push_back(int64_t(taps.size()));
    }
  plane_runs(planes, g.OH * OW, gy, g.OH * Wg, threads, [&](int64_t plane, T* pad) {
    const T* src = gy + plane * g.OH * OW;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      T* d = pad + oh * Wg + M;
      int64_t i = 0;
      for (; i + L <= OW; i += L) store(d + i, load(src + oh * OW + i));
      for (; i < OW; ++i) d[i] = src[oh * OW + i];
    }
    const T* wc = w + plane % g.C * RS;
    const T b = bias ? bias[plane % g.C] : T(0);
    T* const plane_end = gx + (plane + 1) * HW;
    for (int64_t ih = 0; ih < g.H; ++ih) {
      const SubpixelTap* even = taps.data() + first[2 * ih];
      const SubpixelTap* odd = taps.data() + first[2 * ih + 1];
      const int64_t n_even = first[2 * ih + 1] - first[2 * ih], n_odd = first[2 * ih + 2] - first[2 * ih + 1];
      T* dst = gx + plane * HW + ih * g.W;
      for (int64_t j0 = 0; j0 < J; j0 += NV * L) {
        T* o = dst + 2 * j0;
        T tmp[2 * NV * L];
        // lanes past the row go into later rows, stored after this one, or else into tmp
        T* out = o + 2 * NV * L <= plane_end ? o : tmp;
        if (J - j0 > L)
          subpixel_block<T, NV>(pad, wc, even, n_even, odd, n_odd, j0, b, out);
        else
          subpixel_block<T, 1>(pad, wc, even, n_even, odd, n_odd, j0, b, out);
        if (out == tmp)
          for (int64_t e = 0; e < g.W - 2 * j0; ++e) o[e] = tmp[e];
      }
    }
  });
}

}  // namespace

template <class T>
void conv_forward_depthwise(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  // Interleaved at stride 2 and more: 15-30 % faster than the plane kernels on MobileNet's
  // stride-2 layers; at stride 1 the plane kernel, with no transposes, is 5-15 % faster.
  if (g.K == g.C && g.sw >= 2) return depthwise_forward_interleaved(g, x, w, bias, y, threads);
  if (g.sw == 2) return depthwise_forward_stride2(g, x, w, bias, y, threads);
  depthwise_forward(g, x, g.H, g.W, 1, 1, w, bias, y, threads);
}

template <class T>
void conv_backward_data_depthwise(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  if (g.sw == 2) return depthwise_backward_data_stride2(g, gy, w, bias, gx, threads);
  // The stride-1 forward over grad_out spread by the stride, with the flipped kernel. Its input is
  // (OH - 1) * sh + 1 rows; grad_x's last rows, which no output reaches (up to sh - 1 of them),
  // read only the zero rows below it.
  ConvGeom f = g;
  f.H = g.OH > 0 ? (g.OH - 1) * g.sh + 1 : 0;
  f.W = g.OW > 0 ? (g.OW - 1) * g.sw + 1 : 0;
  f.sh = f.sw = 1;
  f.ph = (g.R - 1) * g.dh - g.ph;
  f.pw = (g.S - 1) * g.dw - g.pw;
  f.OH = g.H;
  f.OW = g.W;
  const int64_t RS = g.R * g.S;
  std::vector<T> flipped(g.C * RS);
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t t = 0; t < RS; ++t) flipped[c * RS + t] = w[c * RS + RS - 1 - t];
  depthwise_forward(f, gy, g.OH, g.OW, g.sh, g.sw, flipped.data(), bias, gx, threads);
}

template <class T>
void conv_backward_weight_depthwise(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  depthwise_backward_weight_interleaved(g, gy, x, gw, threads);
}

#define FC_INSTANTIATE(T)                                                                          \
  template void conv_forward_depthwise<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_data_depthwise<T>(const ConvGeom&, const T*, const T*, const T*, T*, int); \
  template void conv_backward_weight_depthwise<T>(const ConvGeom&, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
