// Picks the kernels for this CPU once, at import: AVX2+FMA where cpuid reports both, the
// baseline x86-64 build otherwise. FASTCONV_ISA=generic forces the baseline (tests use it
// to run the whole suite on the fallback).
#include <cstdlib>
#include <cstring>

#include "geometry.h"

namespace fastconv {
namespace {

bool use_avx2() {
#if defined(FC_HAVE_avx2)
  const char* forced = std::getenv("FASTCONV_ISA");
  if (forced && std::strcmp(forced, "generic") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const bool kAvx2 = use_avx2();

}  // namespace

const char* isa_name() { return kAvx2 ? "avx2+fma" : "generic"; }

const KernelTable<float>& kernels(float) {
#if defined(FC_HAVE_avx2)
  if (kAvx2) return avx2::kernels_f32();
#endif
  return generic::kernels_f32();
}

const KernelTable<double>& kernels(double) {
#if defined(FC_HAVE_avx2)
  if (kAvx2) return avx2::kernels_f64();
#endif
  return generic::kernels_f64();
}

}  // namespace fastconv
