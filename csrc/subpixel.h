// The sub-pixel decomposition of a strided convolution's backward-data: input pixels fall
// into `stride` residues a = ih mod stride; residue a is reached only by the kernel taps r
// with (a + pad - r*dil) divisible by stride, each reading grad_out at row
// u + (a + pad - r*dil) / stride for the residue's u-th row.
#pragma once
#include <cstdint>

namespace fastconv {
namespace FC_ISA {

// For each residue a: ntap[a] taps; their grad_out offsets off[a*kernel + i] and kernel
// indices tap[a*kernel + i].
static inline void subpixel_taps(int64_t stride, int64_t pad, int64_t dil, int64_t kernel, int64_t* ntap,
                                 int64_t* off, int64_t* tap) {
  for (int64_t a = 0; a < stride; ++a) {
    ntap[a] = 0;
    for (int64_t r = 0; r < kernel; ++r) {
      const int64_t v = a + pad - r * dil;
      if (((v % stride) + stride) % stride == 0) {
        off[a * kernel + ntap[a]] = v / stride;  // exact, so truncation is fine
        tap[a * kernel + ntap[a]++] = r;
      }
    }
  }
}

}  // namespace FC_ISA
}  // namespace fastconv
