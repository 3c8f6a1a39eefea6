// pybind11 bindings of the C++ kernels: fastconv._C.
//
// Arguments arrive validated and C-contiguous from fastconv/_params.py; outputs are allocated
// by the caller. Each function still checks dtype and contiguity through its py::array_t
// signature (no conversion), so a wrong call raises TypeError instead of reading bad memory.
// The GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <optional>

#include "geometry.h"

namespace py = pybind11;
using fastconv::ConvGeom;

namespace fastconv {
void bind_elementwise(py::module_& m);  // elementwise.cpp
}
using fastconv::PoolGeom;

namespace {

template <class T>
using Arr = py::array_t<T, py::array::c_style>;

ConvGeom conv_geom(const std::array<int64_t, 16>& v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}

PoolGeom pool_geom(const std::array<int64_t, 16>& v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}

// The Winograd kernels tile a 3x3 stride-1 kernel; anything else would read out of bounds.
void require_winograd_geometry(const ConvGeom& g) {
  if (!(g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1))
    throw py::value_error("the Winograd kernels need a 3x3 kernel at stride 1 and dilation 1");
}

void require_winograd_s2_geometry(const ConvGeom& g) {
  if (!(g.R == 4 && g.S == 4 && g.sh == 2 && g.sw == 2 && g.dh == 1 && g.dw == 1))
    throw py::value_error("winograd_s2 needs a 4x4 kernel at stride 2 and dilation 1");
}

void require_depthwise(const ConvGeom& g) {
  if (!(g.groups == g.C && g.groups == g.K)) throw py::value_error("depthwise_direct needs groups == C == K");
}

// The fused conv + max pool walks stride-1, undilated, ungrouped conv windows in pairs of rows
// and columns; anything else would read out of bounds.
void require_conv_max_pool_geometry(const ConvGeom& g) {
  if (!(g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 && g.OH >= 2 && g.OW >= 2))
    throw py::value_error("conv_max_pool needs a stride-1, dilation-1, one-group conv with an output of 2x2 or more");
}

template <class T>
const T* opt_ptr(const std::optional<Arr<T>>& a) {
  return a ? a->data() : nullptr;
}

template <class T>
void bind_dtype(py::module_& m) {
  using fastconv::kernels;
  m.def("conv_forward", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w, std::optional<Arr<T>> bias,
                           Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_forward(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_forward_wide", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w, std::optional<Arr<T>> bias,
                                Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_forward_wide(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_forward_1x1", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w, std::optional<Arr<T>> bias,
                               Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_forward_1x1(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_forward_depthwise", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                     std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.groups != g.C) throw py::value_error("depthwise_direct forward needs groups == C");
    py::gil_scoped_release release;
    kernels(T()).conv_forward_depthwise(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_backward_data_depthwise", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                           std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_depthwise(g);
    if (g.ph > (g.R - 1) * g.dh || g.pw > (g.S - 1) * g.dw)
      throw py::value_error("depthwise_direct backward-data needs padding within the dilated kernel");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_depthwise(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_weight_depthwise", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                             int threads) {
    const ConvGeom g = conv_geom(geom);
    require_depthwise(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_depthwise(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_forward_nhwc", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w, std::optional<Arr<T>> bias,
                                Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.groups != 1) throw py::value_error("gemm_nhwc needs groups == 1");
    py::gil_scoped_release release;
    kernels(T()).conv_forward_nhwc(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_backward_data_nhwc", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                      std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.groups != 1) throw py::value_error("gemm_nhwc needs groups == 1");
    if (g.sh != 1 || g.sw != 1 || g.ph > (g.R - 1) * g.dh || g.pw > (g.S - 1) * g.dw)
      throw py::value_error("gemm_nhwc backward-data needs stride 1 and padding within the dilated kernel");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_nhwc(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_forward_winograd_f23", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                        std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_forward_winograd_f23(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_forward_winograd_f43", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                        std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_forward_winograd_f43(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_forward_winograd_s2", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                       std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_s2_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_forward_winograd_s2(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_backward_data_winograd_s2", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                             std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_s2_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_winograd_s2(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_weight_winograd_s2", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x,
                                               Arr<T> gw, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_s2_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_winograd_s2(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_data", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                 std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_data_col2im", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                        std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_col2im(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_data_narrow", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                        std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.C / g.groups > 3) throw py::value_error("direct_narrow needs at most 3 grad_x channels per group");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_narrow(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_weight", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                   int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_weight_nhwc", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                        int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.groups != 1) throw py::value_error("gemm_nhwc needs groups == 1");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_nhwc(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_weight_taps", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                       int threads) {
    const ConvGeom g = conv_geom(geom);
    if (g.ph != 0 || g.pw != 0) throw py::value_error("gemm_taps needs a conv without padding");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_taps(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_weight_wide", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                        int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_wide(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_data_winograd_f23", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                              std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_winograd_f23(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_data_winograd_f43", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> w,
                                              std::optional<Arr<T>> bias, Arr<T> gx, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_data_winograd_f43(g, gy.data(), w.data(), opt_ptr(bias), gx.mutable_data(), threads);
  });
  m.def("conv_backward_weight_winograd_f23", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x,
                                                Arr<T> gw, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_winograd_f23(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_weight_winograd_f43", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x,
                                                Arr<T> gw, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_winograd_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_winograd_f43(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_max_pool_forward", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                    std::optional<Arr<T>> bias, Arr<T> y, Arr<uint8_t> where, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_conv_max_pool_geometry(g);
    py::gil_scoped_release release;
    kernels(T()).conv_max_pool_forward(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), where.mutable_data(),
                                       threads);
  });
  m.def("conv_max_pool_backward_weight", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<uint8_t> where,
                                            Arr<T> x, Arr<T> gw, int threads) {
    const ConvGeom g = conv_geom(geom);
    require_conv_max_pool_geometry(g);
    py::gil_scoped_release release;
    return kernels(T()).conv_max_pool_backward_weight(g, gy.data(), where.data(), x.data(), gw.mutable_data(),
                                                      threads);
  });
  m.def("max_pool_forward", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> y, Arr<int64_t> idx,
                               int threads) {
    const PoolGeom g = pool_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).max_pool_forward(g, x.data(), y.mutable_data(), idx.mutable_data(), threads);
  });
  m.def("max_pool_backward", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<int64_t> idx, Arr<T> gx,
                                int threads) {
    const PoolGeom g = pool_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).max_pool_backward(g, gy.data(), idx.data(), gx.mutable_data(), threads);
  });
  m.def("avg_pool_forward", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> y, int threads) {
    const PoolGeom g = pool_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).avg_pool_forward(g, x.data(), y.mutable_data(), threads);
  });
  m.def("avg_pool_backward", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> gx, int threads) {
    const PoolGeom g = pool_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).avg_pool_backward(g, gy.data(), gx.mutable_data(), threads);
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv C++/OpenMP kernels";
  bind_dtype<float>(m);
  bind_dtype<double>(m);
  fastconv::bind_elementwise(m);
  m.def("isa", &fastconv::isa_name, "The instruction set the kernels were selected for at import.");
}
