// The task loop every conv driver uses. Compiled per ISA with the kernels.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <utility>

#include "gemm_microkernel.h"

namespace fastconv {
namespace FC_ISA {

// Runs body(task) for task in [0, n) on `threads` OpenMP threads. An exception inside a
// parallel region would terminate the process, so it is caught there and rethrown here.
template <class Body>
static void parallel_tasks(int64_t n, int threads, const Body& body) {
  int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t task = 0; task < n; ++task) {
    try {
      body(task);
    } catch (...) {
#pragma omp atomic write
      failed = 1;
    }
  }
  if (failed) throw std::bad_alloc();
}

// pack_a of `count` matrices, one MR-row panel a task: source(b) gives matrix b's first element and
// its rows (row i at + i * lda, column p at + p * col_stride), and it packs to packed +
// b * packed_step. Packing a layer's weights on one thread while the other waited was a fifth of
// UNet's 512-channel transposed conv (col2im's W^T, 2 MB read with a stride); small matrices
// stay on the calling thread.
template <class T, class Source>
static void pack_a_parallel(int64_t count, int64_t kd, int64_t lda, int64_t col_stride, const Source& source,
                            T* packed, int64_t packed_step, int threads) {
  constexpr int64_t MR = MicroTile<T>::MR;
  int64_t most = 0;
  for (int64_t b = 0; b < count; ++b) most = std::max(most, source(b).second);
  const int64_t panels = (most + MR - 1) / MR;
  if (count * panels * MR * kd < (int64_t(1) << 16)) threads = 1;
  parallel_tasks(count * panels, threads, [&](int64_t task) {
    const int64_t b = task / panels, i0 = task % panels * MR;
    const std::pair<const T*, int64_t> matrix = source(b);
    if (i0 < matrix.second)
      pack_a<T>(matrix.second - i0 < MR ? matrix.second - i0 : MR, kd, matrix.first + i0 * lda, lda, col_stride,
                packed + b * packed_step + i0 * kd);
  });
}

}  // namespace FC_ISA
}  // namespace fastconv
