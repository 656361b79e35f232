// Goto/BLIS-style blocking: B is packed into KC x NR column panels (one
// panel stays in L1 while it is reused by every row panel), A into MC x KC
// blocks of MR-row panels (kept in L2), and a register-tiled micro-kernel
// computes an MR x NR tile over KC steps. The micro-kernel has an AVX2+FMA
// version chosen at run time and a portable version that any x86-64 (or
// other) CPU runs, so the binary needs nothing beyond the baseline ISA.
#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FASTCONV_X86 1
#endif

namespace fastconv {
namespace cpu {
namespace {

// Tile shapes: 6 rows x two 256-bit vectors uses 12 of the 16 ymm registers
// for accumulators, leaving room for two B vectors and an A broadcast.
template <typename T>
struct Tile;
template <>
struct Tile<float> {
  static constexpr int64_t kMr = 6, kNr = 16;
};
template <>
struct Tile<double> {
  static constexpr int64_t kMr = 6, kNr = 8;
};

// Block sizes (elements): KC x NR of B (16 KiB for float) fits L1, MC x KC of
// A (~150 KiB) fits L2, KC x NC of B (~512 KiB) fits L2/L3.
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 144;   // a multiple of kMr
constexpr int64_t kNc = 512;   // a multiple of kNr

// Packs rows [0, mc) x cols [0, kc) of A into MR-row panels, k-major inside a
// panel; rows past mc are zero so the micro-kernel never needs edge cases.
template <typename T>
void pack_a(int64_t mc, int64_t kc, const MatrixRef<const T>& a, T* packed) {
  constexpr int64_t mr = Tile<T>::kMr;
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t rows = std::min(mr, mc - i0);
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t i = 0; i < rows; ++i) packed[i] = a.at(i0 + i, p);
      for (int64_t i = rows; i < mr; ++i) packed[i] = T(0);
      packed += mr;
    }
  }
}

// Packs rows [0, kc) x cols [0, nc) of B into NR-column panels, k-major.
template <typename T>
void pack_b(int64_t kc, int64_t nc, const MatrixRef<const T>& b, T* packed) {
  constexpr int64_t nr = Tile<T>::kNr;
  for (int64_t j0 = 0; j0 < nc; j0 += nr) {
    const int64_t cols = std::min(nr, nc - j0);
    if (b.col_stride == 1 && cols == nr) {
      for (int64_t p = 0; p < kc; ++p) {
        std::memcpy(packed, &b.at(p, j0), sizeof(T) * nr);
        packed += nr;
      }
      continue;
    }
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t j = 0; j < cols; ++j) packed[j] = b.at(p, j0 + j);
      for (int64_t j = cols; j < nr; ++j) packed[j] = T(0);
      packed += nr;
    }
  }
}

// Portable micro-kernel: tile[MR][NR] = sum_p a[p][:] (outer) b[p][:]. The
// fixed-size inner loop over NR vectorises with whatever the baseline ISA has.
template <typename T>
void micro_kernel_portable(int64_t kc, const T* a, const T* b, T* tile) {
  constexpr int64_t mr = Tile<T>::kMr, nr = Tile<T>::kNr;
  T acc[mr][nr] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < mr; ++i) {
      const T ai = a[i];
      for (int64_t j = 0; j < nr; ++j) acc[i][j] += ai * b[j];
    }
    a += mr;
    b += nr;
  }
  std::memcpy(tile, acc, sizeof(acc));
}

#if defined(FASTCONV_X86)
#define FASTCONV_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

// The 256-bit operations the AVX2 micro-kernel needs, per element type.
template <typename T>
struct Avx2;
template <>
struct Avx2<float> {
  using Vec = __m256;
  static FASTCONV_AVX2 Vec zero() { return _mm256_setzero_ps(); }
  static FASTCONV_AVX2 Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static FASTCONV_AVX2 Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static FASTCONV_AVX2 Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static FASTCONV_AVX2 void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
};
template <>
struct Avx2<double> {
  using Vec = __m256d;
  static FASTCONV_AVX2 Vec zero() { return _mm256_setzero_pd(); }
  static FASTCONV_AVX2 Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static FASTCONV_AVX2 Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static FASTCONV_AVX2 Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static FASTCONV_AVX2 void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
};

// MR (6) rows x two vectors: 12 accumulators held in registers over kc
// steps. They are named variables, not an array: GCC keeps an array in
// memory too and stores it on every step, which halves the speed.
template <typename T>
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const T* a, const T* b, T* tile) {
  using V = Avx2<T>;
  using Vec = typename V::Vec;
  constexpr int64_t mr = Tile<T>::kMr, nr = Tile<T>::kNr, lanes = nr / 2;
  static_assert(mr == 6, "the AVX2 micro-kernel is unrolled for 6 rows");
  Vec c00 = V::zero(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  Vec c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const Vec b0 = V::load(b), b1 = V::load(b + lanes);
    Vec ai = V::broadcast(a + 0);
    c00 = V::fma(ai, b0, c00), c01 = V::fma(ai, b1, c01);
    ai = V::broadcast(a + 1);
    c10 = V::fma(ai, b0, c10), c11 = V::fma(ai, b1, c11);
    ai = V::broadcast(a + 2);
    c20 = V::fma(ai, b0, c20), c21 = V::fma(ai, b1, c21);
    ai = V::broadcast(a + 3);
    c30 = V::fma(ai, b0, c30), c31 = V::fma(ai, b1, c31);
    ai = V::broadcast(a + 4);
    c40 = V::fma(ai, b0, c40), c41 = V::fma(ai, b1, c41);
    ai = V::broadcast(a + 5);
    c50 = V::fma(ai, b0, c50), c51 = V::fma(ai, b1, c51);
    a += mr;
    b += nr;
  }
  const Vec rows[2 * mr] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int64_t r = 0; r < 2 * mr; ++r) V::store(tile + lanes * r, rows[r]);
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename T>
void micro_kernel(int64_t kc, const T* a, const T* b, T* tile) {
#if defined(FASTCONV_X86)
  if (cpu_has_avx2_fma()) return micro_kernel_avx2(kc, a, b, tile);
#endif
  micro_kernel_portable(kc, a, b, tile);
}

// torch's ReLU (NaN passes) when kRelu, else the identity.
template <bool kRelu, typename T>
inline T epilogue(T v) {
  return kRelu && v < T(0) ? T(0) : v;
}

// Adds (or writes) the valid rows x cols corner of a tile into C; with kRelu
// (the tile's last reduction block of conv2d_relu) it clamps as it stores.
template <bool kRelu, typename T>
void store_tile(const T* tile, int64_t rows, int64_t cols, T* c, int64_t rs, int64_t cs, bool add) {
  constexpr int64_t nr = Tile<T>::kNr;
  for (int64_t i = 0; i < rows; ++i) {
    T* row = c + i * rs;
    const T* t = tile + i * nr;
    if (cs == 1) {
      if (add) {
        for (int64_t j = 0; j < cols; ++j) row[j] = epilogue<kRelu>(row[j] + t[j]);
      } else {
        for (int64_t j = 0; j < cols; ++j) row[j] = epilogue<kRelu>(t[j]);
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) row[j * cs] = epilogue<kRelu>(add ? row[j * cs] + t[j] : t[j]);
    }
  }
}

}  // namespace

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c,
          bool accumulate, bool relu) {
  constexpr int64_t mr = Tile<T>::kMr, nr = Tile<T>::kNr;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c.at(i, j) = T(0);
    if (relu)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c.at(i, j) = epilogue<true>(c.at(i, j));
    return;
  }
  // Per-thread scratch, reused across calls (callers run gemm inside parallel_for).
  thread_local std::vector<T> packed_a, packed_b;
  packed_a.resize(kMc * kKc);
  packed_b.resize(kKc * kNc);
  alignas(64) T tile[mr * nr];

  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = std::min(kKc, k - pc);
      const bool add = accumulate || pc > 0;
      const bool last = pc + kc == k;  // the tiles stored now are final
      pack_b(kc, nc, MatrixRef<const T>{&b.at(pc, jc), b.row_stride, b.col_stride}, packed_b.data());
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int64_t mc = std::min(kMc, m - ic);
        pack_a(mc, kc, MatrixRef<const T>{&a.at(ic, pc), a.row_stride, a.col_stride}, packed_a.data());
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const T* b_panel = packed_b.data() + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            micro_kernel(kc, packed_a.data() + ir * kc, b_panel, tile);
            const int64_t rows = std::min(mr, mc - ir), cols = std::min(nr, nc - jr);
            T* dst = &c.at(ic + ir, jc + jr);
            if (relu && last) {
              store_tile<true>(tile, rows, cols, dst, c.row_stride, c.col_stride, add);
            } else {
              store_tile<false>(tile, rows, cols, dst, c.row_stride, c.col_stride, add);
            }
          }
        }
      }
    }
  }
}

template void gemm<float>(int64_t, int64_t, int64_t, MatrixRef<const float>, MatrixRef<const float>,
                          MatrixRef<float>, bool, bool);
template void gemm<double>(int64_t, int64_t, int64_t, MatrixRef<const double>, MatrixRef<const double>,
                           MatrixRef<double>, bool, bool);

}  // namespace cpu
}  // namespace fastconv
