#include "kernels.h"

namespace fastconv {
namespace FC_ISA {

template <class T>
static KernelTable<T> make_table() {
  return {conv_forward<T>,         conv_forward_wide<T>,         conv_forward_winograd_f23<T>, conv_backward_data<T>,
          conv_backward_data_narrow<T>, conv_backward_weight<T>, conv_backward_weight_wide<T>, max_pool_forward<T>,
          max_pool_backward<T>,    avg_pool_forward<T>,          avg_pool_backward<T>};
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
