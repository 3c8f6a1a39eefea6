// The kernel templates of one ISA namespace (FC_ISA), explicitly instantiated for float and
// double in conv.cpp and pool.cpp and gathered into a KernelTable in kernel_table.cpp.
#pragma once
#include "geometry.h"

namespace fastconv {
namespace FC_ISA {

template <class T> void conv_forward(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_forward_wide(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_forward_1x1(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_forward_nhwc(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_backward_data_nhwc(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_forward_depthwise(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_backward_data_depthwise(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_weight_depthwise(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_forward_winograd_f23(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_forward_winograd_f43(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_backward_data(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_data_col2im(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> bool narrow_backward_data_accepts(const ConvGeom&);
template <class T> void conv_backward_data_narrow(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_weight(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_backward_data_winograd_f23(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_data_winograd_f43(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_weight_winograd_f23(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_backward_weight_winograd_f43(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_forward_winograd_s2(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
template <class T> void conv_backward_data_winograd_s2(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
template <class T> void conv_backward_weight_winograd_s2(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_backward_weight_nhwc(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_backward_weight_taps(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_backward_weight_wide(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
template <class T> void conv_max_pool_forward(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, uint8_t* where, int threads);
template <class T> bool conv_max_pool_backward_weight(const ConvGeom&, const T* gy, const uint8_t* where, const T* x, T* gw, int threads);
template <class T> void max_pool_forward(const PoolGeom&, const T* x, T* y, int64_t* indices, int threads);
template <class T> void max_pool_backward(const PoolGeom&, const T* gy, const int64_t* indices, T* gx, int threads);
template <class T> void avg_pool_forward(const PoolGeom&, const T* x, T* y, int threads);
template <class T> void avg_pool_backward(const PoolGeom&, const T* gy, T* gx, int threads);

}  // namespace FC_ISA
}  // namespace fastconv
