#include "kernels.h"

namespace fastconv {
namespace FC_ISA {

template <class T>
static KernelTable<T> make_table() {
  // By name: most entries share a signature, so a positional initialiser could swap two silently.
  KernelTable<T> t{};
  t.conv_forward = conv_forward<T>;
  t.conv_forward_wide = conv_forward_wide<T>;
  t.conv_forward_winograd_f23 = conv_forward_winograd_f23<T>;
  t.conv_forward_winograd_f43 = conv_forward_winograd_f43<T>;
  t.conv_forward_1x1 = conv_forward_1x1<T>;
  t.conv_forward_nhwc = conv_forward_nhwc<T>;
  t.conv_forward_depthwise = conv_forward_depthwise<T>;
  t.conv_backward_data_depthwise = conv_backward_data_depthwise<T>;
  t.conv_backward_weight_depthwise = conv_backward_weight_depthwise<T>;
  t.conv_backward_data = conv_backward_data<T>;
  t.conv_backward_data_col2im = conv_backward_data_col2im<T>;
  t.conv_backward_data_narrow = conv_backward_data_narrow<T>;
  t.conv_backward_weight = conv_backward_weight<T>;
  t.conv_backward_weight_nhwc = conv_backward_weight_nhwc<T>;
  t.conv_backward_data_winograd_f23 = conv_backward_data_winograd_f23<T>;
  t.conv_backward_data_winograd_f43 = conv_backward_data_winograd_f43<T>;
  t.conv_backward_weight_winograd_f23 = conv_backward_weight_winograd_f23<T>;
  t.conv_backward_weight_winograd_f43 = conv_backward_weight_winograd_f43<T>;
  t.conv_forward_winograd_s2 = conv_forward_winograd_s2<T>;
  t.conv_backward_data_winograd_s2 = conv_backward_data_winograd_s2<T>;
  t.conv_backward_weight_winograd_s2 = conv_backward_weight_winograd_s2<T>;
  t.conv_backward_weight_wide = conv_backward_weight_wide<T>;
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
