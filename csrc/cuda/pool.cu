// Max and average pooling, forward and backward: one thread per output (forward) or per input
// pixel (backward), grid-stride loops over i64 flat indices.
//
// The window arithmetic is csrc/pool.cpp's (PyTorch's CPU kernels) line for line: the NaN
// rule, the index of an all -inf window, the avg-pool divisor and the empty ceil-mode window.
//
// Both backward passes are gathers, never scatters: each input pixel sums, in a fixed order,
// the outputs whose window covers it (PyTorch's CUDA max_pool_backward_nchw does the same), so
// overlapping windows need no atomics and every run gives the same bits. Max-pool sums in the
// input dtype in PyTorch's CPU order (its bits); avg-pool sums in double, in the reference's
// order (backends/reference.py), and rounds once (the reference's bits). A max-pool gradient is
// routed only through outputs whose window covers the pixel their index names; indices from
// max_pool2d always do, and out-of-plane indices get no gradient.
#include "common.cuh"

// --------------------------------------------------------------------------- max pool

template <class T>
__global__ void fc_max_pool_forward(const T* __restrict__ x, T* __restrict__ y, i64* __restrict__ indices,
                                    PoolGeom g) {
  const i64 total = g.N * g.C * g.OH * g.OW;
  for (i64 o = global_thread_index(); o < total; o += global_thread_count()) {
    const i64 ow = o % g.OW, oh = (o / g.OW) % g.OH, plane = o / (g.OW * g.OH);
    const T* in = x + plane * g.H * g.W;
    i64 h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const i64 h1 = min64(h0 + (g.kh - 1) * g.dh + 1, g.H), w1 = min64(w0 + (g.kw - 1) * g.dw + 1, g.W);
    while (h0 < 0) h0 += g.dh;
    while (w0 < 0) w0 += g.dw;
    T best = DType<T>::neg_inf();
    i64 best_at = h0 * g.W + w0;  // torch: an all -inf window reports its first in-bounds tap
    for (i64 ih = h0; ih < h1; ih += g.dh)
      for (i64 iw = w0; iw < w1; iw += g.dw) {
        const T v = in[ih * g.W + iw];
        if (v > best || v != v) {  // a NaN always wins (torch's `val > max || isnan(val)`)
          best = v;
          best_at = ih * g.W + iw;
        }
      }
    y[o] = best;
    indices[o] = best_at;
  }
}

template <class T>
__global__ void fc_max_pool_backward(const T* __restrict__ gy, const i64* __restrict__ indices, T* __restrict__ gx,
                                     PoolGeom g) {
  const i64 total = g.N * g.C * g.H * g.W, out_plane = g.OH * g.OW;
  const i64 span_h = (g.kh - 1) * g.dh + 1, span_w = (g.kw - 1) * g.dw + 1;
  for (i64 i = global_thread_index(); i < total; i += global_thread_count()) {
    const i64 iw = i % g.W, ih = (i / g.W) % g.H, plane = i / (g.W * g.H), here = ih * g.W + iw;
    // Outputs whose (dilated) window span covers row ih: oh*sh - ph <= ih <= oh*sh - ph + span - 1.
    const i64 oh0 = ih + g.ph < span_h ? 0 : (ih + g.ph - span_h) / g.sh + 1;
    const i64 oh1 = min64((ih + g.ph) / g.sh + 1, g.OH);
    const i64 ow0 = iw + g.pw < span_w ? 0 : (iw + g.pw - span_w) / g.sw + 1;
    const i64 ow1 = min64((iw + g.pw) / g.sw + 1, g.OW);
    const i64* idx = indices + plane * out_plane;
    const T* grad = gy + plane * out_plane;
    // Summed in T in output order: the order and rounding of PyTorch's CPU scatter
    // (grad_x[index] += grad_out, output by output), so the bits match it.
    T sum = T(0);
    for (i64 oh = oh0; oh < oh1; ++oh)
      for (i64 ow = ow0; ow < ow1; ++ow)
        if (idx[oh * g.OW + ow] == here) sum += grad[oh * g.OW + ow];
    gx[i] = sum;
  }
}

// --------------------------------------------------------------------------- average pool

// torch's avg-pool window: the divisor counts padding up to H + pad (not beyond); an empty
// window (possible in ceil mode) yields 0 and takes no gradient.
struct AvgWindow {
  i64 h0, h1, w0, w1, divisor;
  __device__ bool empty() const { return h0 >= h1 || w0 >= w1; }
};

__device__ inline AvgWindow avg_window(const PoolGeom& g, i64 oh, i64 ow) {
  i64 h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  i64 h1 = min64(h0 + g.kh, g.H + g.ph), w1 = min64(w0 + g.kw, g.W + g.pw);
  const i64 with_pad = (h1 - h0) * (w1 - w0);
  h0 = max64(h0, 0);
  w0 = max64(w0, 0);
  h1 = min64(h1, g.H);
  w1 = min64(w1, g.W);
  const i64 divisor = g.divisor_override ? g.divisor_override : (g.count_include_pad ? with_pad : (h1 - h0) * (w1 - w0));
  return {h0, h1, w0, w1, divisor};
}

template <class T>
__global__ void fc_avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, PoolGeom g) {
  const i64 total = g.N * g.C * g.OH * g.OW;
  for (i64 o = global_thread_index(); o < total; o += global_thread_count()) {
    const i64 ow = o % g.OW, oh = (o / g.OW) % g.OH, plane = o / (g.OW * g.OH);
    const AvgWindow win = avg_window(g, oh, ow);
    if (win.empty()) {
      y[o] = T(0);
      continue;
    }
    const T* in = x + plane * g.H * g.W;
    double sum = 0.0;
    for (i64 ih = win.h0; ih < win.h1; ++ih)
      for (i64 iw = win.w0; iw < win.w1; ++iw) sum += double(in[ih * g.W + iw]);
    y[o] = T(sum / double(win.divisor));
  }
}

template <class T>
__global__ void fc_avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx, PoolGeom g) {
  const i64 total = g.N * g.C * g.H * g.W, out_plane = g.OH * g.OW;
  for (i64 i = global_thread_index(); i < total; i += global_thread_count()) {
    const i64 iw = i % g.W, ih = (i / g.W) % g.H, plane = i / (g.W * g.H);
    // Outputs whose window [oh*sh - ph, oh*sh - ph + kh) contains ih.
    const i64 oh0 = ih + g.ph < g.kh ? 0 : (ih + g.ph - g.kh) / g.sh + 1;
    const i64 oh1 = min64((ih + g.ph) / g.sh + 1, g.OH);
    const i64 ow0 = iw + g.pw < g.kw ? 0 : (iw + g.pw - g.kw) / g.sw + 1;
    const i64 ow1 = min64((iw + g.pw) / g.sw + 1, g.OW);
    const T* grad = gy + plane * out_plane;
    // The reference adds tap by tap (window row i, then column j), which for one pixel visits
    // the outputs from the last to the first: the same order here gives the same float64 sum.
    double sum = 0.0;
    for (i64 oh = oh1 - 1; oh >= oh0; --oh)
      for (i64 ow = ow1 - 1; ow >= ow0; --ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        if (win.empty() || ih < win.h0 || ih >= win.h1 || iw < win.w0 || iw >= win.w1) continue;
        sum += double(grad[oh * g.OW + ow]) / double(win.divisor);
      }
    gx[i] = T(sum);
  }
}
