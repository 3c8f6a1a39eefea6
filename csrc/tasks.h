// The task loop every conv driver uses. Compiled per ISA with the kernels.
#pragma once
#include <omp.h>

#include <cstdint>
#include <new>

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

}  // namespace FC_ISA
}  // namespace fastconv
