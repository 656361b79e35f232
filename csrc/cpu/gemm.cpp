// Goto/BLIS-style blocking: B is packed into KC x NR column panels (one
// panel stays in L1 while it is reused by every row panel), A into MC x KC
// blocks of MR-row panels (kept in L2), and a register-tiled micro-kernel
// computes an MR x NR tile over KC steps and adds it straight into C. The
// micro-kernel has an AVX2+FMA version chosen at run time and a portable
// version that any CPU runs, so the binary needs nothing beyond the baseline
// ISA.
#include "gemm.h"

#include "../common/index_math.h"
#include "cpu_isa.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
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
static_assert(kGemmColumnAlignment % Tile<float>::kNr == 0 && kGemmColumnAlignment % Tile<double>::kNr == 0,
              "column blocks aligned to kGemmColumnAlignment must hold whole tiles");

// Block sizes (elements): KC x NR of B (16 KiB for float) fits L1, MC x KC of
// A (~150 KiB) fits L2, KC x NC of B (~512 KiB) fits L2/L3. K is cut into
// equal blocks of at most kKc (288 = 256 + 32 would waste a pass over C on a
// 32-step block).
constexpr int64_t kKc = 320;
constexpr int64_t kMc = 144;  // a multiple of kMr
constexpr int64_t kNc = 512;  // a multiple of kNr
// A is packed whole, once for every column block, up to this many elements.
constexpr int64_t kPackAllAMax = int64_t(1) << 20;

// Elements of slack after each packed buffer, for transpose_8x8's wide stores.
constexpr int64_t kPackSlack = 8;


// The K block: K cut into equal blocks of at most kKc. pack_whole_a and
// gemm_blocks must cut K alike, so both ask here.
int64_t k_block(int64_t k) { return ceil_div(k, ceil_div(k, kKc)); }

// m rounded up to whole MR-row panels.
template <typename T>
int64_t padded_rows(int64_t m) {
  return ceil_div(m, Tile<T>::kMr) * Tile<T>::kMr;
}

// ------------------------------------------------------------------ packing

#if defined(FASTCONV_X86)
#define FASTCONV_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

// The AVX2 paths run when the CPU has AVX2 and FMA, unless
// FASTCONV_CPU_ISA=baseline asks for the portable ones (cpu_isa.h).
bool cpu_has_avx2_fma() { return cpu_isa() >= CpuIsa::kAvx2; }

// Transposes an 8 x 8 float block: src row r (8 floats at src + r * stride)
// becomes dst column r, dst row q being 8 floats at dst + q * dst_stride.
// Rows past `rows` read as zero. Stores are 8 wide even when the caller only
// needs fewer lanes per row (pack_a's 6-row panels): each row's spare lanes
// are overwritten by the next row, and the buffers keep 8 floats of slack.
__attribute__((target("avx2,fma"))) void transpose_8x8(const float* src, int64_t stride, int64_t rows,
                                                       float* dst, int64_t dst_stride) {
  __m256 r[8];
  for (int64_t i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(src + i * stride) : _mm256_setzero_ps();
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  const __m256 out[8] = {
      _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
      _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
      _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
      _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
  for (int64_t q = 0; q < 8; ++q) _mm256_storeu_ps(dst + q * dst_stride, out[q]);
}
#endif

// Copies `lanes` (<= width) elements of each of `count` steps into panels
// `width` wide: panel[p][j] = src[p * step + j * lane], zero for j >= lanes.
// When the lanes are contiguous (lane == 1) each step is one short copy;
// when the steps are (step == 1, a transposed operand), float uses 8 x 8
// register transposes instead of a gather per element.
template <typename T>
void pack_panel(const T* src, int64_t step, int64_t lane, int64_t count, int64_t lanes, int64_t width,
                T* panel) {
  int64_t p = 0;
#if defined(FASTCONV_X86)
  if constexpr (std::is_same_v<T, float>) {
    if (step == 1 && lane != 1 && cpu_has_avx2_fma()) {
      for (; p + 8 <= count; p += 8) {
        for (int64_t j0 = 0; j0 < width; j0 += 8) {
          // A block past the last lane reads nothing and stores zeros.
          const int64_t rows = std::max<int64_t>(0, lanes - j0);
          transpose_8x8(rows > 0 ? src + p + j0 * lane : src, lane, rows, panel + p * width + j0, width);
        }
      }
    }
  }
#endif
  for (; p < count; ++p) {
    const T* from = src + p * step;
    T* to = panel + p * width;
    if (lane == 1 && lanes == width) {
      std::copy_n(from, width, to);
      continue;
    }
    for (int64_t j = 0; j < lanes; ++j) to[j] = from[j * lane];
    for (int64_t j = lanes; j < width; ++j) to[j] = T(0);
  }
}

// Packs rows [0, mc) x cols [0, kc) of A into MR-row panels, k-major inside a
// panel; rows past mc are zero so the micro-kernel never needs edge cases.
template <typename T>
void pack_a(int64_t mc, int64_t kc, const MatrixRef<const T>& a, T* packed) {
  constexpr int64_t mr = Tile<T>::kMr;
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    pack_panel(&a.at(i0, 0), a.col_stride, a.row_stride, kc, std::min(mr, mc - i0), mr, packed + i0 * kc);
  }
}

// Packs rows [0, kc) x cols [0, nc) of B into NR-column panels, k-major.
template <typename T>
void pack_b(int64_t kc, int64_t nc, const MatrixRef<const T>& b, T* packed) {
  constexpr int64_t nr = Tile<T>::kNr;
  for (int64_t j0 = 0; j0 < nc; j0 += nr) {
    pack_panel(&b.at(0, j0), b.row_stride, b.col_stride, kc, std::min(nr, nc - j0), nr, packed + j0 * kc);
  }
}

// ------------------------------------------------------------ micro-kernels

// torch's ReLU (NaN passes) when `relu`, else the identity.
template <typename T>
inline T epilogue(T v, bool relu) {
  return relu && v < T(0) ? T(0) : v;
}

// A full MR x NR tile of C: row r at c + r * rs, unit column stride.
// tile = A panel * B panel over kc steps; C = (add ? C : 0) + tile, clamped
// by ReLU when `relu`.
template <typename T>
void micro_kernel_portable(int64_t kc, const T* a, const T* b, T* c, int64_t rs, bool add, bool relu) {
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
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * rs + j] = epilogue((add ? c[i * rs + j] : T(0)) + acc[i][j], relu);
}

#if defined(FASTCONV_X86)
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
  static FASTCONV_AVX2 Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  // max(0, v) returns v when v is NaN, as torch's ReLU does.
  static FASTCONV_AVX2 Vec relu(Vec v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static FASTCONV_AVX2 void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
};
template <>
struct Avx2<double> {
  using Vec = __m256d;
  static FASTCONV_AVX2 Vec zero() { return _mm256_setzero_pd(); }
  static FASTCONV_AVX2 Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static FASTCONV_AVX2 Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static FASTCONV_AVX2 Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static FASTCONV_AVX2 Vec add(Vec a, Vec b) { return _mm256_add_pd(a, b); }
  static FASTCONV_AVX2 Vec relu(Vec v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
  static FASTCONV_AVX2 void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
};

template <typename T>
FASTCONV_AVX2 void store_vec(typename Avx2<T>::Vec v, T* c, bool add, bool relu) {
  using V = Avx2<T>;
  if (add) v = V::add(V::load(c), v);
  if (relu) v = V::relu(v);
  V::store(c, v);
}

// MR (6) rows x two vectors: 12 accumulators held in registers over kc
// steps. They are named variables, not an array: GCC keeps an array in
// memory too and stores it on every step, which halves the speed.
template <typename T>
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const T* a, const T* b, T* c, int64_t rs,
                                                           bool add, bool relu) {
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
  store_vec(c00, c + 0 * rs, add, relu), store_vec(c01, c + 0 * rs + lanes, add, relu);
  store_vec(c10, c + 1 * rs, add, relu), store_vec(c11, c + 1 * rs + lanes, add, relu);
  store_vec(c20, c + 2 * rs, add, relu), store_vec(c21, c + 2 * rs + lanes, add, relu);
  store_vec(c30, c + 3 * rs, add, relu), store_vec(c31, c + 3 * rs + lanes, add, relu);
  store_vec(c40, c + 4 * rs, add, relu), store_vec(c41, c + 4 * rs + lanes, add, relu);
  store_vec(c50, c + 5 * rs, add, relu), store_vec(c51, c + 5 * rs + lanes, add, relu);
}
#endif

template <typename T>
void micro_kernel(int64_t kc, const T* a, const T* b, T* c, int64_t rs, bool add, bool relu) {
#if defined(FASTCONV_X86)
  if (cpu_has_avx2_fma()) return micro_kernel_avx2(kc, a, b, c, rs, add, relu);
#endif
  micro_kernel_portable(kc, a, b, c, rs, add, relu);
}

// An edge tile (or one of a C with non-unit column stride): computed into a
// scratch tile, then its valid rows x cols corner goes into C.
template <typename T>
void edge_tile(int64_t kc, const T* a, const T* b, int64_t rows, int64_t cols, const MatrixRef<T>& c, bool add,
               bool relu) {
  constexpr int64_t mr = Tile<T>::kMr, nr = Tile<T>::kNr;
  alignas(64) T tile[mr * nr];
  micro_kernel(kc, a, b, tile, nr, false, false);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      T& out = c.at(i, j);
      out = epilogue((add ? out : T(0)) + tile[i * nr + j], relu);
    }
}

// Packs all of A for gemm_blocks: K block by K block (the same blocks for
// any n), each as the m_padded / MR panels of kc steps that pack_a writes.
template <typename T>
void pack_whole_a(int64_t m, int64_t k, const MatrixRef<const T>& a, T* packed) {
  if (m <= 0 || k <= 0) return;
  const int64_t kc_max = k_block(k), m_padded = padded_rows<T>(m);
  for (int64_t pc = 0; pc < k; pc += kc_max) {
    pack_a(m, std::min(kc_max, k - pc), MatrixRef<const T>{&a.at(0, pc), a.row_stride, a.col_stride},
           packed + pc * m_padded);
  }
}

// The blocked loops. A comes either packed whole (`packed_whole_a`, from
// pack_whole_a) or from `a`, packed one MC x KC block at a time.
template <typename T>
void gemm_blocks(int64_t m, int64_t n, int64_t k, const T* packed_whole_a, const MatrixRef<const T>& a,
                 const MatrixRef<const T>& b, const MatrixRef<T>& c, bool accumulate, bool relu) {
  constexpr int64_t mr = Tile<T>::kMr, nr = Tile<T>::kNr;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c.at(i, j) = epilogue(accumulate ? c.at(i, j) : T(0), relu);
    return;
  }
  const int64_t kc_max = k_block(k), m_padded = padded_rows<T>(m);
  // Per-thread scratch, reused across calls (callers run gemm inside parallel_for).
  thread_local std::vector<T> packed_a, packed_b;
  if (packed_whole_a == nullptr) packed_a.resize(kMc * kc_max + kPackSlack);
  packed_b.resize(kNc * kc_max + kPackSlack);

  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      const bool add = accumulate || pc > 0;
      const bool clamp = relu && pc + kc == k;  // the tiles stored now are final
      pack_b(kc, nc, MatrixRef<const T>{&b.at(pc, jc), b.row_stride, b.col_stride}, packed_b.data());
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int64_t mc = std::min(kMc, m - ic);
        const T* a_block = packed_a.data();
        if (packed_whole_a != nullptr) {
          a_block = packed_whole_a + pc * m_padded + ic * kc;
        } else {
          pack_a(mc, kc, MatrixRef<const T>{&a.at(ic, pc), a.row_stride, a.col_stride}, packed_a.data());
        }
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const T* b_panel = packed_b.data() + jr * kc;
          const int64_t cols = std::min(nr, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t rows = std::min(mr, mc - ir);
            const T* a_panel = a_block + ir * kc;
            T* dst = &c.at(ic + ir, jc + jr);
            if (rows == mr && cols == nr && c.col_stride == 1) {
              micro_kernel(kc, a_panel, b_panel, dst, c.row_stride, add, clamp);
            } else {
              edge_tile(kc, a_panel, b_panel, rows, cols, MatrixRef<T>{dst, c.row_stride, c.col_stride}, add,
                        clamp);
            }
          }
        }
      }
    }
  }
}

}  // namespace

const char* gemm_isa() {
#if defined(FASTCONV_X86)
  if (cpu_has_avx2_fma()) return "avx2+fma";
#endif
  return "baseline";
}

template <typename T>
PackedA<T>::PackedA(int64_t m, int64_t k, MatrixRef<const T> a)
    : m_(m), k_(k), data_(padded_rows<T>(m) * k + kPackSlack) {
  pack_whole_a(m, k, a, data_.data());
}

template <typename T>
void gemm(const PackedA<T>& a, int64_t n, MatrixRef<const T> b, MatrixRef<T> c, bool accumulate, bool relu) {
  gemm_blocks(a.rows(), n, a.depth(), a.data(), MatrixRef<const T>{nullptr, 0, 0}, b, c, accumulate, relu);
}

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c,
          bool accumulate, bool relu) {
  // With several column blocks, A is packed once for all of them (when that
  // is not too big); else block by block, so each packed block is used while
  // it is still in L2.
  if (n > kNc && k > 0 && padded_rows<T>(m) * k <= kPackAllAMax) {
    return gemm(PackedA<T>(m, k, a), n, b, c, accumulate, relu);
  }
  gemm_blocks(m, n, k, static_cast<const T*>(nullptr), a, b, c, accumulate, relu);
}

template class PackedA<float>;
template class PackedA<double>;
template void gemm<float>(const PackedA<float>&, int64_t, MatrixRef<const float>, MatrixRef<float>, bool, bool);
template void gemm<double>(const PackedA<double>&, int64_t, MatrixRef<const double>, MatrixRef<double>, bool,
                           bool);
template void gemm<float>(int64_t, int64_t, int64_t, MatrixRef<const float>, MatrixRef<const float>,
                          MatrixRef<float>, bool, bool);
template void gemm<double>(int64_t, int64_t, int64_t, MatrixRef<const double>, MatrixRef<const double>,
                           MatrixRef<double>, bool, bool);

}  // namespace cpu
}  // namespace fastconv
