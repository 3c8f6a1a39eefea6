// The memory-bound helpers of a training step: ReLU forward/backward, the Adam update, the
// bias gradient, and the phase copies of dilated convs. Compiled once, without ISA flags (the
// baseline has no FMA, so nothing is contracted: Adam rounds exactly as the NumPy expression it
// replaces). Elementwise work is split into fixed stretches, so results do not depend on the
// thread count.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <omp.h>
#include <string>
#include <vector>

namespace py = pybind11;

namespace fastconv {
namespace {

template <class T>
using Arr = py::array_t<T, py::array::c_style>;

constexpr int64_t kStretch = 1 << 14;

void same_size(const char* what, std::initializer_list<py::ssize_t> sizes) {
  for (py::ssize_t s : sizes)
    if (s != *sizes.begin()) throw py::value_error(std::string(what) + ": arrays of different sizes");
}

// Runs body(begin, end) over [0, n) in stretches of kStretch.
template <class Body>
void stretches(int64_t n, int threads, const Body& body) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t s = 0; s < n; s += kStretch) body(s, s + kStretch < n ? s + kStretch : n);
}

// y = 0 where x <= 0, else x (torch.relu: NaN stays NaN).
template <class T>
void relu_forward(Arr<T> x, Arr<T> y, int threads) {
  same_size("relu", {x.size(), y.size()});
  const T* __restrict a = x.data();
  T* __restrict b = y.mutable_data();
  py::gil_scoped_release release;
  stretches(x.size(), threads, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) b[e] = a[e] <= T(0) ? T(0) : a[e];
  });
}

// grad_x = 0 where y <= 0, else grad_y (torch's threshold_backward: a NaN passes the gradient).
template <class T>
void relu_backward(Arr<T> gy, Arr<T> y, Arr<T> gx, int threads) {
  same_size("relu_backward", {gy.size(), y.size(), gx.size()});
  const T* __restrict g = gy.data();
  const T* __restrict a = y.data();
  T* __restrict out = gx.mutable_data();
  py::gil_scoped_release release;
  stretches(gy.size(), threads, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      const T ge = g[e];  // loaded unconditionally, so the loop vectorises as a select
      out[e] = a[e] <= T(0) ? T(0) : ge;
    }
  });
}

// One Adam step over [lo, hi), in the order of optim._adam_update's NumPy expression:
// m += (1 - b1)(g - m); v += (1 - b2)(g^2 - v); p -= m / (sqrt(v) v_scale + eps) * step_size.
template <class T>
void adam_stretch(int64_t lo, int64_t hi, T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                  T c1, T c2, T v_scale, T step_size, T eps) {
  for (int64_t e = lo; e < hi; ++e) {
    const T ge = g[e], me = m[e] + c1 * (ge - m[e]), ve = v[e] + c2 * (ge * ge - v[e]);
    m[e] = me;
    v[e] = ve;
    p[e] -= me / (std::sqrt(ve) * v_scale + eps) * step_size;
  }
}

template <class T>
void adam_update(Arr<T> p, Arr<T> g, Arr<T> m, Arr<T> v, double b1, double b2, double step_size, double v_scale,
                 double eps, int threads) {
  same_size("adam_update", {p.size(), g.size(), m.size(), v.size()});
  T* pp = p.mutable_data();
  const T* gg = g.data();
  T* mm = m.mutable_data();
  T* vv = v.mutable_data();
  py::gil_scoped_release release;
  stretches(p.size(), threads, [&](int64_t lo, int64_t hi) {
    adam_stretch<T>(lo, hi, pp, gg, mm, vv, T(1 - b1), T(1 - b2), T(v_scale), T(step_size), T(eps));
  });
}

// grad_bias[k] = sum over n and p of gy[n][k][p] for float32 gy, accumulated in double in a
// fixed order (each plane's sum, then planes in image order) and rounded once. A plane of 32 or
// more pixels is summed as sixteen interleaved sums, added pairwise: with four the adds' latency
// held a thread to ~15 GB/s (0.86 ms for decoder.tconv1's 12.8 MB grad_out at 2 threads, twice
// torch's float32 sum). A smaller plane is summed as two vectors of pairs (converted whole: a
// scalar conversion waits on its register's last writer, which chained all the planes' sums):
// on MNIST conv3's 3x3 planes the sixteen sums and their reduction took 105 us where torch took
// 24. Each thread takes a range of channels and goes through the images in order, so the sums
// of consecutive planes, independent of each other, overlap.
static double plane_sum(const float* plane, int64_t P) {
  constexpr int U = 16;
  if (P < 2 * U) {  // two sums of pairs, then the last pixels in order
    typedef float F2 __attribute__((vector_size(8)));
    typedef double D2 __attribute__((vector_size(16)));
    D2 a = {0, 0}, b = {0, 0};
    int64_t p = 0;
    for (; p + 4 <= P; p += 4) {
      F2 u, v;
      std::memcpy(&u, plane + p, sizeof(u));
      std::memcpy(&v, plane + p + 2, sizeof(v));
      a += __builtin_convertvector(u, D2);
      b += __builtin_convertvector(v, D2);
    }
    double s = (a[0] + a[1]) + (b[0] + b[1]);
    for (; p < P; ++p) s += plane[p];
    return s;
  }
  double s[U] = {};
  int64_t p = 0;
  for (; p + U <= P; p += U)
    for (int u = 0; u < U; ++u) s[u] += plane[p + u];
  for (; p < P; ++p) s[p % U] += plane[p];
  for (int width = U / 2; width > 0; width /= 2)  // pairwise: s[u] += s[u + width]
    for (int u = 0; u < width; ++u) s[u] += s[u + width];
  return s[0];
}

void bias_grad_f32(Arr<float> gy, Arr<float> out, int threads) {
  if (gy.ndim() != 4 || out.ndim() != 1 || out.shape(0) != gy.shape(1))
    throw py::value_error("bias_grad: gy must be (N, K, H, W) and out (K,)");
  const int64_t N = gy.shape(0), K = gy.shape(1), P = gy.shape(2) * gy.shape(3);
  const float* g = gy.data();
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  std::vector<double> total(K, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t k0 = K * t / nt, k1 = K * (t + 1) / nt;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = k0; k < k1; ++k) total[k] += plane_sum(g + (n * K + k) * P, P);
  }
  for (int64_t k = 0; k < K; ++k) o[k] = static_cast<float>(total[k]);
}

// Space-to-batch for a dilated conv (dilation dh x dw): phase (a, b) of image n, its rows a, a + dh,
// ... and columns b, b + dw, ..., is image (a dw + b) N + n of the stack; a stride-1 conv with
// dilation d over the planes is then one without dilation over the stack (cpp_algorithms'
// dilated_phases). split: planes (N, C, H, W) -> stack (dh dw N, C, H / dh, W / dw); else back.
template <class T, int DW>
void phase_rows(T* planes, T* stack, int64_t N, int64_t C, int64_t H, int64_t W, int64_t dh, int64_t dw,
                bool split, int64_t plane) {
  const int64_t n = plane / C, c = plane % C, Hs = H / dh, Ws = W / dw, d = DW ? DW : dw;
  for (int64_t r = 0; r < H; ++r) {
    T* row = planes + (plane * H + r) * W;
    for (int64_t b = 0; b < d; ++b) {
      T* s = stack + (((((r % dh) * d + b) * N + n) * C + c) * Hs + r / dh) * Ws;
      if (split)
        for (int64_t j = 0; j < Ws; ++j) s[j] = row[j * d + b];
      else
        for (int64_t j = 0; j < Ws; ++j) row[j * d + b] = s[j];
    }
  }
}

template <class T>
void dilation_phases(Arr<T> planes, Arr<T> stack, int64_t dh, int64_t dw, bool split, int threads) {
  if (planes.ndim() != 4 || stack.ndim() != 4 || dh < 1 || dw < 1)
    throw py::value_error("dilation_phases: 4-D arrays and positive dilations");
  const int64_t N = planes.shape(0), C = planes.shape(1), H = planes.shape(2), W = planes.shape(3);
  if (H % dh || W % dw || stack.shape(0) != dh * dw * N || stack.shape(1) != C || stack.shape(2) != H / dh ||
      stack.shape(3) != W / dw)
    throw py::value_error(
        "dilation_phases: the stack must be (dh dw N, C, H / dh, W / dw), H and W multiples of dh, dw");
  T* p = split ? const_cast<T*>(planes.data()) : planes.mutable_data();
  T* st = split ? stack.mutable_data() : const_cast<T*>(stack.data());
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t plane = 0; plane < N * C; ++plane) {
    if (dw == 2)  // a fixed stride: the copies vectorise (even and odd lanes)
      phase_rows<T, 2>(p, st, N, C, H, W, dh, dw, split, plane);
    else
      phase_rows<T, 0>(p, st, N, C, H, W, dh, dw, split, plane);
  }
}

template <class T>
void bind_elementwise_dtype(py::module_& m) {
  m.def("relu_forward", &relu_forward<T>, py::arg("x"), py::arg("y"), py::arg("threads"));
  m.def("relu_backward", &relu_backward<T>, py::arg("gy"), py::arg("y"), py::arg("gx"), py::arg("threads"));
  m.def("adam_update", &adam_update<T>, py::arg("p"), py::arg("g"), py::arg("m"), py::arg("v"), py::arg("b1"),
        py::arg("b2"), py::arg("step_size"), py::arg("v_scale"), py::arg("eps"), py::arg("threads"));
  m.def("dilation_phases", &dilation_phases<T>, py::arg("planes"), py::arg("stack"), py::arg("dh"), py::arg("dw"),
        py::arg("split"), py::arg("threads"));
}

}  // namespace

void bind_elementwise(py::module_& m) {
  bind_elementwise_dtype<float>(m);
  bind_elementwise_dtype<double>(m);
  m.def("bias_grad_f32", &bias_grad_f32, "Sum of a float32 (N, K, H, W) array over N, H, W (double accumulation).");
}

}  // namespace fastconv
