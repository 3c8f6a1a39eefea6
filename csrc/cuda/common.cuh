// Shared by every CUDA source: geometry records passed by value, index helpers, dtype traits.
//
// These sources are compiled at run time by NVRTC (through cupy.RawModule), which has no host
// headers: nothing here may include <cmath>, <cstdint>, <limits> or the CUDA runtime headers.
// Only language built-ins and CUDA device intrinsics are used. The backend (fastconv/backends/
// cupy.py) pastes this file into the including source before compiling, so the program text
// that CuPy hashes for its kernel cache covers the headers too.
#pragma once

typedef long long i64;

// Kernel arguments, passed by value as size-1 numpy structured arrays built in backends/cupy.py
// (_conv_geom / _pool_geom): every field is a 64-bit integer, so the layout is the same on the
// host and the device with no padding. Field order = ConvGeometry / PoolGeometry in _params.py.
struct ConvGeom {
  i64 N, C, H, W, K, R, S, groups, sh, sw, ph, pw, dh, dw, OH, OW;
};

struct PoolGeom {
  i64 N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  i64 count_include_pad;  // avg only
  i64 divisor_override;   // avg only; 0 = none
};

__device__ __forceinline__ i64 min64(i64 a, i64 b) { return a < b ? a : b; }
__device__ __forceinline__ i64 max64(i64 a, i64 b) { return a > b ? a : b; }
__device__ __forceinline__ int min32(int a, int b) { return a < b ? a : b; }

// Grid-stride loops index with i64: N*C*H*W may exceed 2^31 elements.
__device__ __forceinline__ i64 global_thread_index() { return i64(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 global_thread_count() { return i64(gridDim.x) * blockDim.x; }

template <class T>
struct DType;

template <>
struct DType<float> {
  // -inf from its bit pattern: NVRTC has no INFINITY / <limits>.
  __device__ static float neg_inf() { return -__int_as_float(0x7f800000); }
};

template <>
struct DType<double> {
  __device__ static double neg_inf() { return -__longlong_as_double(0x7ff0000000000000LL); }
};
