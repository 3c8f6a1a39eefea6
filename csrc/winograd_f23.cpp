// Winograd F(2x2, 3x3) convolution forward for 3x3 kernels at stride 1, dilation 1
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//
// Each 2x2 output tile needs 16 multiplies per (k, c) instead of 36: with U = G g G^T
// (the 4x4 transformed kernel) and V = B^T d B (the transformed 4x4 input tile), the tile is
// A^T [sum_c U[k,c] (.) V[c]] A. The sums over c are 16 independent GEMMs (one per position
// xi of the 4x4 transform), run with the same packed micro-kernel as everything else.
// Transforms have coefficients 0, +-1, +-1/2 only, so the error stays within a few units of
// roundoff of the direct sum (the differential tests hold it to the same bound).
//
// The transforms subtract inputs, so an infinite input would give inf - inf = NaN where the
// direct sum gives +-inf (PyTorch's answer): when any input or weight is not finite, the
// result is recomputed with the implicit GEMM, which sums products as PyTorch does.
//
// Tasks: (group, block of tiles) over the flattened (image, tile_row, tile_col) space; each
// output element is produced by one task in a fixed order (thread-count independent).
#include <omp.h>

#include <new>

#include "gather.h"
#include "gemm_microkernel.h"
#include "kernels.h"
#include "workspace.h"

namespace fastconv {
namespace FC_ISA {

template <class T>
bool winograd_f23_accepts(const ConvGeom& g) {
  return g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

template <class T>
void conv_forward_winograd_f23(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, int threads) {
  constexpr int64_t NR = MicroTile<T>::NR;
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, HW = g.H * g.W, P = g.OH * g.OW;
  const int64_t tiles_h = ceil_div(g.OH, 2), tiles_w = ceil_div(g.OW, 2), per_image = tiles_h * tiles_w;
  const int64_t tiles = g.N * per_image;
  if (tiles == 0) return;

  // U[group][xi] = (G g G^T)[xi] for all (k, c): a Kg x Cg matrix, packed into MR panels.
  const int64_t per_xi = packed_a_size<T>(Kg, Cg);
  T* packed_u = static_cast<T*>(thread_workspace(sizeof(T) * (16 * per_xi * g.groups + Kg * Cg), kSlotShared));
  T* u_plain = packed_u + 16 * per_xi * g.groups;  // scratch: one Kg x Cg matrix
  int nonfinite = 0;
  for (int64_t i = 0; i < g.K * Cg * 9; ++i)
    if (!(w[i] - w[i] == T(0))) nonfinite = 1;
  if (nonfinite) return conv_forward<T>(g, x, w, bias, y, threads);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    for (int xi = 0; xi < 16; ++xi) {
      const int a = xi / 4, b = xi % 4;
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c) {
          const T* f = w + ((gi * Kg + k) * Cg + c) * 9;
          // Rows of G: (1,0,0), (1/2,1/2,1/2), (1/2,-1/2,1/2), (0,0,1).
          auto gmul = [](int row, T v0, T v1, T v2) -> T {
            switch (row) {
              case 0: return v0;
              case 1: return T(0.5) * (v0 + v1 + v2);
              case 2: return T(0.5) * (v0 - v1 + v2);
              default: return v2;
            }
          };
          T col[3];
          for (int s = 0; s < 3; ++s) col[s] = gmul(a, f[0 * 3 + s], f[1 * 3 + s], f[2 * 3 + s]);
          u_plain[k * Cg + c] = gmul(b, col[0], col[1], col[2]);
        }
      pack_a<T>(Kg, Cg, u_plain, Cg, 1, packed_u + (gi * 16 + xi) * per_xi);
    }
  }

  // A block of tiles keeps its 16 transformed inputs (Cg rows) and 16 products (Kg rows)
  // under ~1 MiB; blocks shrink until there are 8 tasks.
  int64_t block = (1 << 20) / (16 * (Cg + Kg) * int64_t(sizeof(T)));
  block = min64(max64(block / NR * NR, NR), 256);
  block = min64(block, round_up(tiles, NR));
  while (g.groups * ceil_div(tiles, block) < 8 && block > NR) block = max64(NR, round_up(block / 2, NR));
  const int64_t nblocks = ceil_div(tiles, block);

  int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t task = 0; task < g.groups * nblocks; ++task) {
    try {
      const int64_t gi = task / nblocks, t0 = (task % nblocks) * block, nt = min64(block, tiles - t0);
      const int64_t ldb = round_up(nt, NR);
      T* v = static_cast<T*>(thread_workspace(sizeof(T) * 16 * Cg * ldb, kSlotTile));
      T* m = static_cast<T*>(thread_workspace(sizeof(T) * 16 * Kg * ldb, kSlotTile2));
      bool finite = true;

      // V[xi][c][t] = (B^T d B)[xi], B^T rows: (1,0,-1,0), (0,1,1,0), (0,-1,1,0), (0,1,0,-1).
      for (int64_t c = 0; c < Cg; ++c) {
        for (int64_t t = 0; t < ldb; ++t) {
          T d[4][4];
          if (t < nt) {
            const int64_t tile = t0 + t, n = tile / per_image, th = (tile % per_image) / tiles_w, tw = tile % tiles_w;
            const T* plane = x + (n * g.C + gi * Cg + c) * HW;
            const int64_t h0 = 2 * th - g.ph, w0 = 2 * tw - g.pw;
            for (int i = 0; i < 4; ++i)
              for (int j = 0; j < 4; ++j) {
                const int64_t ih = h0 + i, iw = w0 + j;
                d[i][j] = (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) ? plane[ih * g.W + iw] : T(0);
                finite &= (d[i][j] - d[i][j] == T(0));
              }
          } else {
            for (int i = 0; i < 4; ++i)
              for (int j = 0; j < 4; ++j) d[i][j] = T(0);
          }
          T r[4][4];  // B^T d
          for (int j = 0; j < 4; ++j) {
            r[0][j] = d[0][j] - d[2][j];
            r[1][j] = d[1][j] + d[2][j];
            r[2][j] = d[2][j] - d[1][j];
            r[3][j] = d[1][j] - d[3][j];
          }
          for (int i = 0; i < 4; ++i) {  // (B^T d) B
            T* out = v + (i * 4 * Cg + c) * ldb + t;
            out[0 * Cg * ldb] = r[i][0] - r[i][2];
            out[1 * Cg * ldb] = r[i][1] + r[i][2];
            out[2 * Cg * ldb] = r[i][2] - r[i][1];
            out[3 * Cg * ldb] = r[i][1] - r[i][3];
          }
        }
      }
      if (!finite) {
#pragma omp atomic write
        nonfinite = 1;
        continue;
      }
      for (int xi = 0; xi < 16; ++xi)
        gemm_packed<T>(Kg, nt, Cg, packed_u + (gi * 16 + xi) * per_xi, v + xi * Cg * ldb, ldb, m + xi * Kg * ldb,
                       ldb, false);
      // Y = A^T M A, A^T rows: (1,1,1,0), (0,1,-1,-1); clipped at the bottom/right edges.
      for (int64_t k = 0; k < Kg; ++k) {
        const T b = bias ? bias[gi * Kg + k] : T(0);
        for (int64_t t = 0; t < nt; ++t) {
          T mm[4][4];
          for (int xi = 0; xi < 16; ++xi) mm[xi / 4][xi % 4] = m[(xi * Kg + k) * ldb + t];
          T q[2][4];
          for (int j = 0; j < 4; ++j) {
            q[0][j] = mm[0][j] + mm[1][j] + mm[2][j];
            q[1][j] = mm[1][j] - mm[2][j] - mm[3][j];
          }
          const int64_t tile = t0 + t, n = tile / per_image, th = (tile % per_image) / tiles_w, tw = tile % tiles_w;
          T* out = y + (n * g.K + gi * Kg + k) * P;
          for (int i = 0; i < 2; ++i) {
            const int64_t oh = 2 * th + i;
            if (oh >= g.OH) break;
            const T o0 = q[i][0] + q[i][1] + q[i][2], o1 = q[i][1] - q[i][2] - q[i][3];
            out[oh * g.OW + 2 * tw] = o0 + b;
            if (2 * tw + 1 < g.OW) out[oh * g.OW + 2 * tw + 1] = o1 + b;
          }
        }
      }
    } catch (...) {
#pragma omp atomic write
      failed = 1;
    }
  }
  if (failed) throw std::bad_alloc();
  if (nonfinite) conv_forward<T>(g, x, w, bias, y, threads);
}

#define FC_INSTANTIATE(T)                                                                           \
  template bool winograd_f23_accepts<T>(const ConvGeom&);                                           \
  template void conv_forward_winograd_f23<T>(const ConvGeom&, const T*, const T*, const T*, T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fastconv
