#include "kernels.h"
#include "wide.h"

namespace fastconv {
namespace FC_ISA {

// A backward-weight kernel that meets values the direct sum does not (the zeros of grad_out laid
// out wide meet x in the dropped columns) or combines inputs in transforms (inf - inf): an inf or
// NaN in x or grad_out, or a transform's overflow, is then an inf or NaN in its grad_w (0 * inf
// and inf - inf are NaN, and nothing turns them finite again), and the direct kernel's grad_w,
// the reference's, is taken instead. grad_w is checked after (K x C/groups x R x S elements)
// rather than x and grad_out before: that scan of both inputs, on one thread, was 5 % of
// winograd_s2's backward-weight on decoder.tconv1.
template <class T, void (*Fast)(const ConvGeom&, const T*, const T*, T*, int)>
static void finite_or_direct(const ConvGeom& g, const T* gy, const T* x, T* gw, int threads) {
  Fast(g, gy, x, gw, threads);
  if (!all_finite(gw, g.K * (g.C / g.groups) * g.R * g.S)) conv_backward_weight<T>(g, gy, x, gw, threads);
}

// Winograd's transforms subtract inputs, so an inf would give inf - inf = NaN where the direct sum
// has +-inf (PyTorch's answer); and they scale inputs up (F(4,3)'s input and output transforms by
// up to 100 and 361), so finite inputs near T's limit can overflow where the direct sum's plain
// products do not. A forward or backward-data (kAdjoint) whose weights or input hold an inf or
// NaN, or whose largest |input| x |weight| x reduction length x kGrowth passes T's range, is the
// direct kernel's. (Their outputs can be far larger than their inputs, so the inputs are scanned
// first, not the result as above.)
template <class T, bool kAdjoint, void (*Fast)(const ConvGeom&, const T*, const T*, const T*, T*, int)>
static void finite_inputs_or_direct(const ConvGeom& g, const T* in, const T* w, const T* bias, T* out, int threads) {
  constexpr double kGrowth = 1e6;  // over F(4,3)'s 100 x 361, whatever the transforms' scaling
  const int64_t in_size = kAdjoint ? g.N * g.K * g.OH * g.OW : g.N * g.C * g.H * g.W;
  const double reduction = double((kAdjoint ? g.K : g.C) / g.groups) * double(g.R * g.S);
  const double bound = double(finite_max_abs(w, g.K * (g.C / g.groups) * g.R * g.S)) *
                       double(finite_max_abs(in, in_size)) * reduction * kGrowth;
  if (bound <= double(std::numeric_limits<T>::max())) return Fast(g, in, w, bias, out, threads);
  if (kAdjoint) return conv_backward_data<T>(g, in, w, bias, out, threads);
  conv_forward<T>(g, in, w, bias, out, threads);
}

template <class T>
static KernelTable<T> make_table() {
  // By name: most entries share a signature, so a positional initialiser could swap two silently.
  KernelTable<T> t{};
  t.conv_forward = conv_forward<T>;
  t.conv_forward_wide = conv_forward_wide<T>;
  t.conv_forward_winograd_f23 = finite_inputs_or_direct<T, false, conv_forward_winograd_f23<T>>;
  t.conv_forward_winograd_f43 = finite_inputs_or_direct<T, false, conv_forward_winograd_f43<T>>;
  t.conv_forward_1x1 = conv_forward_1x1<T>;
  t.conv_forward_nhwc = conv_forward_nhwc<T>;
  t.conv_backward_data_nhwc = conv_backward_data_nhwc<T>;
  t.conv_forward_depthwise = conv_forward_depthwise<T>;
  t.conv_backward_data_depthwise = conv_backward_data_depthwise<T>;
  t.conv_backward_weight_depthwise = finite_or_direct<T, conv_backward_weight_depthwise<T>>;
  t.conv_backward_data = conv_backward_data<T>;
  t.conv_backward_data_col2im = conv_backward_data_col2im<T>;
  t.conv_backward_data_narrow = conv_backward_data_narrow<T>;
  t.conv_backward_weight = conv_backward_weight<T>;
  t.conv_backward_weight_nhwc = conv_backward_weight_nhwc<T>;
  t.conv_backward_weight_taps = conv_backward_weight_taps<T>;
  t.conv_backward_data_winograd_f23 = finite_inputs_or_direct<T, true, conv_backward_data_winograd_f23<T>>;
  t.conv_backward_data_winograd_f43 = finite_inputs_or_direct<T, true, conv_backward_data_winograd_f43<T>>;
  t.conv_backward_weight_winograd_f23 = finite_or_direct<T, conv_backward_weight_winograd_f23<T>>;
  t.conv_backward_weight_winograd_f43 = finite_or_direct<T, conv_backward_weight_winograd_f43<T>>;
  t.conv_forward_winograd_s2 = finite_inputs_or_direct<T, false, conv_forward_winograd_s2<T>>;
  t.conv_backward_data_winograd_s2 = finite_inputs_or_direct<T, true, conv_backward_data_winograd_s2<T>>;
  t.conv_backward_weight_winograd_s2 = finite_or_direct<T, conv_backward_weight_winograd_s2<T>>;
  t.conv_backward_weight_wide = finite_or_direct<T, conv_backward_weight_wide<T>>;
  t.conv_max_pool_forward = conv_max_pool_forward<T>;
  t.conv_max_pool_backward_weight = conv_max_pool_backward_weight<T>;
  t.max_pool_forward = max_pool_forward<T>;
  t.max_pool_backward = max_pool_backward<T>;
  t.avg_pool_forward = avg_pool_forward<T>;
  t.avg_pool_backward = avg_pool_backward<T>;
  return t;
}

const KernelTable<float>& kernels_f32() {
  static const KernelTable<float> table = make_table<float>();
  return table;
}

const KernelTable<double>& kernels_f64() {
  static const KernelTable<double> table = make_table<double>();
  return table;
}

}  // namespace FC_ISA
}  // namespace fastconv
