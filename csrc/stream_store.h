// Non-temporal (streaming) stores for outputs too large to stay in the cache. Compiled per ISA
// with the kernels.
//
// An ordinary store first reads its cache line from memory (a read-for-ownership), so writing a
// large output costs twice its size in memory traffic, and the lines written evict the input
// the kernel still reads. A conv whose output is tens of megabytes and whose arithmetic per
// output element is short (DCGAN's D1 writes 16 MiB for 48 multiply-adds an element) spends a
// good part of its time there. Streaming stores write whole lines past the cache. They need
// 32-byte aligned addresses, and another thread may read what they wrote only after
// stream_fence() (a task ends with one).
#pragma once
#include <cstdint>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "gemm_microkernel.h"
#include "geometry.h"

namespace fastconv {
namespace FC_ISA {

// Outputs of at least this many bytes are streamed: a quarter of the 32 MiB L3 of the machines
// we measure on. A smaller output is better left in the cache for the next layer to read (and
// was slower streamed: ResNet's 3.2 MB stem output, 1.48 -> 1.77 ms).
constexpr int64_t kStreamBytes = 8 << 20;

// Whether conv g's output is large enough to stream.
template <class T>
static inline bool streams_output(const ConvGeom& g) {
  return g.N * g.K * g.OH * g.OW * int64_t(sizeof(T)) >= kStreamBytes;
}

static inline bool stream_aligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 31) == 0; }

// One 32-byte vector of either dtype (an integer streaming store moves the same bits).
template <class T>
static inline void stream_vector(T* p, VecOf<T> v) {
#if defined(__AVX__)
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i&>(v));
#else
  store(p, v);
#endif
}

static inline void stream_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

}  // namespace FC_ISA
}  // namespace fastconv
