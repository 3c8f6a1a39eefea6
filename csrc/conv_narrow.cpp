// Backward-data (and so the transposed convolution's forward) for 1-3 channels of grad_x per
// group: the last layer of a decoder or generator (64 -> 3), the first layer's grad_x (1 or 3).
//
// The implicit GEMM gathers a patch of Kg*taps rows per pixel and then does only 2*Cg flops
// per gathered element, so with Cg <= 3 the gather costs more than the arithmetic. This
// kernel skips the patch: per sub-pixel phase (see conv_backward_data) it is a stride-1
// correlation of grad_out with a small kernel, computed directly with a row strip of
// grad_x held in registers (Cg x NV vectors) while every (k, tap) streams past it.
// grad_out rows are first copied into a zero-padded block so that no load needs a bounds
// check; each copied row serves every tap row and column that reads it.
//
// Tasks: (image, group, phase, block of phase rows); each grad_x element is written by one
// task in a fixed order, so results do not depend on the thread count.
#include <omp.h>

#include <new>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "subpixel.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {
namespace {

constexpr int64_t kRowsPerTask = 8;

template <class T, int CG, int NV>
void narrow_phase_rows(const T* block, int64_t block_row0, int64_t row_len, int64_t left, int64_t rows_in_block,
                       int64_t Kg, int64_t Th, int64_t Tw, const int64_t* off_h, const int64_t* off_w,
                       const T* weights, int64_t u0, int64_t nu, int64_t cols, T* out[CG], int64_t out_row_stride,
                       int64_t out_col_stride, const T* bias) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::kLanes, CH = NV * L;
  for (int64_t u = u0; u < u0 + nu; ++u) {
    for (int64_t v0 = 0; v0 < cols; v0 += CH) {
      V acc[CG][NV];
#pragma GCC unroll 16
      for (int c = 0; c < CG; ++c)
#pragma GCC unroll 16
        for (int q = 0; q < NV; ++q) acc[c][q] = V{};
      for (int64_t k = 0; k < Kg; ++k) {
        for (int64_t i = 0; i < Th; ++i) {
          const T* row = block + (k * rows_in_block + (u + off_h[i] - block_row0)) * row_len + left + v0;
          const T* wk = weights + (k * Th + i) * Tw * CG;
          for (int64_t j = 0; j < Tw; ++j) {
            V src[NV];
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) std::memcpy(&src[q], row + off_w[j] + q * L, sizeof(V));
#pragma GCC unroll 16
            for (int c = 0; c < CG; ++c) {
              const T a = wk[j * CG + c];
#pragma GCC unroll 16
              for (int q = 0; q < NV; ++q) acc[c][q] += src[q] * a;
            }
          }
        }
      }
      const int64_t valid = min64(CH, cols - v0);
      for (int c = 0; c < CG; ++c) {
        T lanes[CH];
        std::memcpy(lanes, acc[c], sizeof(lanes));
        T* o = out[c] + u * out_row_stride + v0 * out_col_stride;
        const T b = bias ? bias[c] : T(0);
        for (int64_t t = 0; t < valid; ++t) o[t * out_col_stride] = lanes[t] + b;
      }
    }
  }
}

}  // namespace

template <class T>
bool narrow_backward_data_accepts(const ConvGeom& g) {
  return g.C / g.groups <= 3;
}

template <class T>
void conv_backward_data_narrow(const ConvGeom& g, const T* gy, const T* w, const T* bias, T* gx, int threads) {
  constexpr int64_t L = Vec<T>::kLanes;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t phases = g.sh * g.sw;
  // Shared: tap tables, then per (phase, group) the weights as [k][i][j][c].
  const int64_t table_ints = g.sh + g.sw + 2 * g.sh * g.R + 2 * g.sw * g.S + phases;
  const int64_t table_bytes = round_up(sizeof(int64_t) * table_ints, 64);
  const int64_t weight_elems = g.groups * Cg * Kg * g.R * g.S;
  char* shared = static_cast<char*>(thread_workspace(table_bytes + sizeof(T) * weight_elems, kSlotShared));
  int64_t* ntap_h = reinterpret_cast<int64_t*>(shared);
  int64_t* ntap_w = ntap_h + g.sh;
  int64_t* off_h = ntap_w + g.sw;
  int64_t* tap_h = off_h + g.sh * g.R;
  int64_t* off_w = tap_h + g.sh * g.R;
  int64_t* tap_w = off_w + g.sw * g.S;
  int64_t* phase_base = tap_w + g.sw * g.S;
  T* packed = reinterpret_cast<T*>(shared + table_bytes);
  subpixel_taps(g.sh, g.ph, g.dh, g.R, ntap_h, off_h, tap_h);
  subpixel_taps(g.sw, g.pw, g.dw, g.S, ntap_w, off_w, tap_w);
  int64_t base = 0;
  for (int64_t ph = 0; ph < phases; ++ph) {
    const int64_t ah = ph / g.sw, aw = ph % g.sw, Th = ntap_h[ah], Tw = ntap_w[aw];
    phase_base[ph] = base;
    for (int64_t gi = 0; gi < g.groups; ++gi)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t i = 0; i < Th; ++i)
          for (int64_t j = 0; j < Tw; ++j)
            for (int64_t c = 0; c < Cg; ++c)
              packed[base + gi * Kg * Th * Tw * Cg + ((k * Th + i) * Tw + j) * Cg + c] =
                  w[(((gi * Kg + k) * Cg + c) * g.R + tap_h[ah * g.R + i]) * g.S + tap_w[aw * g.S + j]];
    base += g.groups * Kg * Th * Tw * Cg;
  }

  const int64_t max_rows = ceil_div(g.H, g.sh), row_blocks = ceil_div(max_rows, kRowsPerTask);
  int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t task = 0; task < g.N * g.groups * phases * row_blocks; ++task) {
    try {
      const int64_t n = task / (g.groups * phases * row_blocks), gi = (task / (phases * row_blocks)) % g.groups;
      const int64_t ph = (task / row_blocks) % phases, ah = ph / g.sw, aw = ph % g.sw;
      const int64_t rows_here = ah < g.H ? ceil_div(g.H - ah, g.sh) : 0;
      const int64_t cols_here = aw < g.W ? ceil_div(g.W - aw, g.sw) : 0;
      const int64_t u0 = (task % row_blocks) * kRowsPerTask, nu = min64(kRowsPerTask, rows_here - u0);
      if (nu <= 0 || cols_here == 0) continue;
      const int64_t Th = ntap_h[ah], Tw = ntap_w[aw];
      const int64_t* oh = off_h + ah * g.R;
      const int64_t* ow = off_w + aw * g.S;
      T* out[3];
      for (int64_t c = 0; c < Cg; ++c) out[c] = gx + (n * g.C + gi * Cg + c) * HW + ah * g.W + aw;
      const T* b = bias ? bias + gi * Cg : nullptr;
      if (Th == 0 || Tw == 0) {  // no tap reaches this phase: grad_x is the bias
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t u = u0; u < u0 + nu; ++u)
            for (int64_t v = 0; v < cols_here; ++v) out[c][u * g.sh * g.W + v * g.sw] = b ? b[c] : T(0);
        continue;
      }
      // The zero-padded block of grad_out rows [u0 + min off, u0 + nu - 1 + max off] x all
      // columns, for the group's Kg channels.
      int64_t min_h = oh[0], max_h = oh[0], min_w = ow[0], max_w = ow[0];
      for (int64_t i = 1; i < Th; ++i) min_h = min64(min_h, oh[i]), max_h = max64(max_h, oh[i]);
      for (int64_t j = 1; j < Tw; ++j) min_w = min64(min_w, ow[j]), max_w = max64(max_w, ow[j]);
      constexpr int64_t CH = 6 * L;  // widest strip of the variants below (1 channel x 6 vectors)
      const int64_t left = max64(0, -min_w), block_row0 = u0 + min_h, block_rows = nu + max_h - min_h;
      const int64_t row_len = left + round_up(cols_here, CH) + max64(0, max_w);
      T* block = static_cast<T*>(thread_workspace(sizeof(T) * Kg * block_rows * row_len, kSlotTile));
      // grad_out column x sits at left + x; columns [first, last) are copied, the rest zeroed.
      const int64_t first = 0, last = min64(g.OW, row_len - left);
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t r = 0; r < block_rows; ++r) {
          T* dst = block + (k * block_rows + r) * row_len;
          const int64_t src_row = block_row0 + r;
          if (src_row < 0 || src_row >= g.OH || last <= first) {
            for (int64_t e = 0; e < row_len; ++e) dst[e] = T(0);
            continue;
          }
          const T* src = gy + ((n * g.K + gi * Kg + k) * g.OH + src_row) * g.OW;
          for (int64_t e = 0; e < left + first; ++e) dst[e] = T(0);
          for (int64_t x = first; x < last; ++x) dst[left + x] = src[x];
          for (int64_t e = left + last; e < row_len; ++e) dst[e] = T(0);
        }
      const T* wts = packed + phase_base[ph] + gi * Kg * Th * Tw * Cg;
      const int64_t rs = g.sh * g.W, cs = g.sw;
      switch (Cg) {
        case 1: narrow_phase_rows<T, 1, 6>(block, block_row0, row_len, left, block_rows, Kg, Th, Tw, oh, ow, wts, u0,
                                            nu, cols_here, out, rs, cs, b); break;
        case 2: narrow_phase_rows<T, 2, 4>(block, block_row0, row_len, left, block_rows, Kg, Th, Tw, oh, ow, wts, u0,
                                            nu, cols_here, out, rs, cs, b); break;
        default: narrow_phase_rows<T, 3, 3>(block, block_row0, row_len, left, block_rows, Kg, Th, Tw, oh, ow, wts,
                                             u0, nu, cols_here, out, rs, cs, b); break;
      }
    } catch (...) {
#pragma omp atomic write
      failed = 1;
    }
  }
  if (failed) throw std::bad_alloc();
}

#define FC_INSTANTIATE(T)                                                                            \
  template bool narrow_backward_data_accepts<T>(const ConvGeom&);                                    \
  template void conv_backward_data_narrow<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
