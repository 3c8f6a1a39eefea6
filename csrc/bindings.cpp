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
  m.def("conv_forward_depthwise", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                     std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (!(g.groups == g.C && g.groups == g.K)) throw py::value_error("depthwise_direct needs groups == C == K");
    py::gil_scoped_release release;
    kernels(T()).conv_forward_depthwise(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
  });
  m.def("conv_backward_weight_depthwise", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                             int threads) {
    const ConvGeom g = conv_geom(geom);
    if (!(g.groups == g.C && g.groups == g.K)) throw py::value_error("depthwise_direct needs groups == C == K");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_depthwise(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_forward_winograd_f23", [](const std::array<int64_t, 16>& geom, Arr<T> x, Arr<T> w,
                                        std::optional<Arr<T>> bias, Arr<T> y, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (!(g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1))
      throw py::value_error("winograd_f23 needs a 3x3 kernel at stride 1 and dilation 1");
    py::gil_scoped_release release;
    kernels(T()).conv_forward_winograd_f23(g, x.data(), w.data(), opt_ptr(bias), y.mutable_data(), threads);
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
  m.def("conv_backward_weight_wide", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x, Arr<T> gw,
                                        int threads) {
    const ConvGeom g = conv_geom(geom);
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_wide(g, gy.data(), x.data(), gw.mutable_data(), threads);
  });
  m.def("conv_backward_weight_winograd_f23", [](const std::array<int64_t, 16>& geom, Arr<T> gy, Arr<T> x,
                                                Arr<T> gw, int threads) {
    const ConvGeom g = conv_geom(geom);
    if (!(g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1))
      throw py::value_error("winograd_f23 needs a 3x3 kernel at stride 1 and dilation 1");
    py::gil_scoped_release release;
    kernels(T()).conv_backward_weight_winograd_f23(g, gy.data(), x.data(), gw.mutable_data(), threads);
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

// grad_bias[k] = sum over n and p of gy[n][k][p] for float32 gy, accumulated in double in a
// fixed order (per plane four interleaved sums, planes in image order) and rounded once.
// Memory-bound, so it lives here without ISA flags; parallel over channels.
void bias_grad_f32(Arr<float> gy, Arr<float> out, int threads) {
  if (gy.ndim() != 4 || out.ndim() != 1 || out.shape(0) != gy.shape(1))
    throw py::value_error("bias_grad: gy must be (N, K, H, W) and out (K,)");
  const int64_t N = gy.shape(0), K = gy.shape(1), P = gy.shape(2) * gy.shape(3);
  const float* g = gy.data();
  float* o = out.mutable_data();
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t k = 0; k < K; ++k) {
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* plane = g + (n * K + k) * P;
      double s[4] = {0, 0, 0, 0};
      int64_t p = 0;
      for (; p + 4 <= P; p += 4)
        for (int u = 0; u < 4; ++u) s[u] += plane[p + u];
      for (; p < P; ++p) s[0] += plane[p];
      total += (s[0] + s[1]) + (s[2] + s[3]);
    }
    o[k] = static_cast<float>(total);
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv C++/OpenMP kernels";
  bind_dtype<float>(m);
  bind_dtype<double>(m);
  m.def("bias_grad_f32", &bias_grad_f32, "Sum of a float32 (N, K, H, W) array over N, H, W (double accumulation).");
  m.def("isa", &fastconv::isa_name, "The instruction set the kernels were selected for at import.");
}
