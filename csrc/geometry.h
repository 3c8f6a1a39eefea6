// Problem descriptions shared by the bindings and every ISA's kernels. Plain structs of
// int64 so that no index arithmetic can overflow on large tensors.
#pragma once
#include <cstdint>

namespace fastconv {

// y = conv(x, w): x (N, C, H, W), w (K, C/groups, R, S), y (N, K, OH, OW).
// ph / pw are the top / left padding; bottom / right are implied by OH / OW.
struct ConvGeom {
  int64_t N, C, H, W, K, R, S, groups, sh, sw, ph, pw, dh, dw, OH, OW;
};

struct PoolGeom {
  int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  int64_t count_include_pad;  // avg only
  int64_t divisor_override;   // avg only; 0 = none
};

// One ISA's kernels for one dtype. Every pointer is a C-contiguous NCHW array; outputs are
// fully written (never read first).
template <class T>
struct KernelTable {
  void (*conv_forward)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  // A GEMM over wide output rows (conv_wide.cpp).
  void (*conv_forward_wide)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  // 1x1 kernels at stride 1 without padding only: a GEMM on the NCHW arrays (conv_1x1.cpp).
  void (*conv_forward_1x1)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  // One group only: a GEMM over channel-last pixels (conv_nhwc.cpp).
  void (*conv_forward_nhwc)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  // Its backward-data, at stride 1 with the padding within the dilated kernel.
  void (*conv_backward_data_nhwc)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  // Depthwise (groups = C = K) only, direct (conv_depthwise.cpp).
  void (*conv_forward_depthwise)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  void (*conv_backward_data_depthwise)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  void (*conv_backward_weight_depthwise)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // Winograd F(2x2, 3x3); only for 3x3 kernels at stride 1, dilation 1.
  void (*conv_forward_winograd_f23)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  void (*conv_forward_winograd_f43)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  void (*conv_backward_data)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  // GEMM with W^T, then col2im (conv_col2im.cpp).
  void (*conv_backward_data_col2im)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  // Direct sub-pixel kernel for 1-3 grad_x channels per group.
  void (*conv_backward_data_narrow)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  void (*conv_backward_weight)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // One group only: a GEMM over channel-last pixels, the pixels its reduction (conv_nhwc.cpp).
  void (*conv_backward_weight_nhwc)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // Without padding: a GEMM per tap, gy's rows in place times x gathered (conv_taps_weight.cpp).
  void (*conv_backward_weight_taps)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  void (*conv_backward_data_winograd_f23)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  void (*conv_backward_data_winograd_f43)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  void (*conv_backward_weight_winograd_f23)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  void (*conv_backward_weight_winograd_f43)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // Winograd F(2x2, 2x2) over the phases of a 4x4 kernel at stride 2, dilation 1.
  void (*conv_forward_winograd_s2)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, int threads);
  void (*conv_backward_data_winograd_s2)(const ConvGeom&, const T* gy, const T* w, const T* bias, T* gx, int threads);
  void (*conv_backward_weight_winograd_s2)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // Dot products over wide output rows (conv_wide_weight.cpp).
  void (*conv_backward_weight_wide)(const ConvGeom&, const T* gy, const T* x, T* gw, int threads);
  // Conv (stride 1, dilation 1, one group) then 2x2 stride-2 max pool, fused (conv_max_pool.cpp):
  // y is the pooled output, where[n][k][i][j] the winning pixel of window (i, j), dh * 2 + dw.
  // The backward returns false, computing nothing, when x is not all finite.
  void (*conv_max_pool_forward)(const ConvGeom&, const T* x, const T* w, const T* bias, T* y, uint8_t* where,
                                int threads);
  bool (*conv_max_pool_backward_weight)(const ConvGeom&, const T* gy, const uint8_t* where, const T* x, T* gw,
                                        int threads);
  void (*max_pool_forward)(const PoolGeom&, const T* x, T* y, int64_t* indices, int threads);
  void (*max_pool_backward)(const PoolGeom&, const T* gy, const int64_t* indices, T* gx, int threads);
  void (*avg_pool_forward)(const PoolGeom&, const T* x, T* y, int threads);
  void (*avg_pool_backward)(const PoolGeom&, const T* gy, T* gx, int threads);
};

// Defined in conv.cpp / pool.cpp once per ISA namespace (generic, avx2).
#define FC_DECLARE_ISA(isa)                          \
  namespace isa {                                    \
  const KernelTable<float>& kernels_f32();           \
  const KernelTable<double>& kernels_f64();          \
  }
FC_DECLARE_ISA(generic)
FC_DECLARE_ISA(avx2)
#undef FC_DECLARE_ISA

// Selected at import time (isa.cpp).
const KernelTable<float>& kernels(float);
const KernelTable<double>& kernels(double);
const char* isa_name();

}  // namespace fastconv
