// Goto/BLIS-style blocking: B is packed into KC x NR column panels (one
// panel stays in L1 while it is reused by every row panel), A into MC x KC
// blocks of MR-row panels (kept in L2), and a register-tiled micro-kernel
// computes an MR x NR tile over KC steps and adds it straight into C. The
// micro-kernel has AVX-512 and AVX2+FMA versions chosen at run time and a
// portable version that any CPU runs, so the binary needs nothing beyond the
// baseline ISA. Each version brings its own tile shape and block sizes; the
// packing, blocking and edge handling below are shared and read them from
// the selected Kernel.
#include "gemm.h"

#include "../common/index_math.h"
#include "cpu_isa.h"
#include "parallel.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "x86_intrinsics.h"

namespace fastconv {
namespace cpu {
namespace {

// ------------------------------------------------------------ micro-kernels

// torch's ReLU (NaN passes) when `relu`, else the identity.
template <typename T>
inline T epilogue(T v, bool relu) {
  return relu && v < T(0) ? T(0) : v;
}

// What a tile's row r adds its product to: C's element `out` when `add`,
// else the row's bias, else zero.
template <typename T>
inline T tile_base(const T* out, bool add, const T* bias, int64_t r) {
  return add ? *out : bias != nullptr ? bias[r] : T(0);
}

// Every micro-kernel computes one full MR x NR tile of C (row r at
// c + r * rs, unit column stride): tile = A panel * B panel over kc steps,
// C = (add ? C : bias ? bias[r] : 0) + tile, clamped by ReLU when `relu`.
// The bias comes in at the store, so that a convolution's output is not
// first filled with it and then read back: a pass over C each, as costly as
// the GEMM itself when K is small (3 input channels: K = 27).
template <typename T>
using MicroKernel = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t rs, bool add, const T* bias,
                             bool relu);

template <typename T, int64_t kMr, int64_t kNr>
void micro_kernel_portable(int64_t kc, const T* a, const T* b, T* c, int64_t rs, bool add, const T* bias,
                           bool relu) {
  T acc[kMr][kNr] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < kMr; ++i) {
      const T ai = a[i];
      for (int64_t j = 0; j < kNr; ++j) acc[i][j] += ai * b[j];
    }
    a += kMr;
    b += kNr;
  }
  for (int64_t i = 0; i < kMr; ++i)
    for (int64_t j = 0; j < kNr; ++j) c[i * rs + j] = epilogue(tile_base(c + i * rs + j, add, bias, i) + acc[i][j], relu);
}

#if defined(FASTCONV_CPU_X86)
#define FASTCONV_AVX2 FASTCONV_TARGET_AVX2 __attribute__((always_inline)) inline
#define FASTCONV_AVX512 FASTCONV_TARGET_AVX512 __attribute__((always_inline)) inline

// The vector operations the SIMD micro-kernel needs, per ISA and element type.
template <typename T>
struct Avx2;
template <>
struct Avx2<float> {
  using Vec = __m256;
  static constexpr int64_t kLanes = 8;
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
  static constexpr int64_t kLanes = 4;
  static FASTCONV_AVX2 Vec zero() { return _mm256_setzero_pd(); }
  static FASTCONV_AVX2 Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static FASTCONV_AVX2 Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static FASTCONV_AVX2 Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static FASTCONV_AVX2 Vec add(Vec a, Vec b) { return _mm256_add_pd(a, b); }
  static FASTCONV_AVX2 Vec relu(Vec v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
  static FASTCONV_AVX2 void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
};
template <typename T>
struct Avx512;
template <>
struct Avx512<float> {
  using Vec = __m512;
  static constexpr int64_t kLanes = 16;
  static FASTCONV_AVX512 Vec zero() { return _mm512_setzero_ps(); }
  static FASTCONV_AVX512 Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static FASTCONV_AVX512 Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static FASTCONV_AVX512 Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static FASTCONV_AVX512 Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  // Zeroes the lanes below zero (an ordered compare: NaN passes, as in
  // torch's ReLU). Not _mm512_max_ps: GCC 12 warns about its undefined
  // pass-through operand (-Wmaybe-uninitialized, a false positive).
  static FASTCONV_AVX512 Vec relu(Vec v) {
    const Vec zero = _mm512_setzero_ps();
    return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
  }
  static FASTCONV_AVX512 void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
};
template <>
struct Avx512<double> {
  using Vec = __m512d;
  static constexpr int64_t kLanes = 8;
  static FASTCONV_AVX512 Vec zero() { return _mm512_setzero_pd(); }
  static FASTCONV_AVX512 Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static FASTCONV_AVX512 Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static FASTCONV_AVX512 Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static FASTCONV_AVX512 Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
  static FASTCONV_AVX512 Vec relu(Vec v) {
    const Vec zero = _mm512_setzero_pd();
    return _mm512_mask_mov_pd(v, _mm512_cmp_pd_mask(v, zero, _CMP_LT_OQ), zero);
  }
  static FASTCONV_AVX512 void store(double* p, Vec v) { _mm512_storeu_pd(p, v); }
};

// The SIMD micro-kernel: kMr rows x two vectors (NR = 2 * V::kLanes), so
// 2 * kMr accumulators, two B vectors and one A broadcast per step; with
// kVecs = 1, the left half of that tile only (B panels stay NR wide), for
// edge tiles of at most NR / 2 columns, at half the FMAs. Written
// once and stamped out per target: a function's target attribute cannot
// depend on a template parameter, and the vector operations only inline
// into a function compiled for their ISA. The loops are fully unrolled so
// that the accumulator array lives in registers (without the pragmas GCC
// keeps it in memory and stores it on every step, which halves the speed);
// `objdump -d` of gemm.o shows the FMA loop with no stack traffic. Each A
// element feeds two FMAs, so it is broadcast once into a register rather
// than embedded ({1to16}) in both.
#define FASTCONV_DEFINE_SIMD_MICRO_KERNEL(NAME, TARGET)                                                  \
  template <typename V, int64_t kMr, int64_t kVecs, typename T>                                           \
  TARGET void NAME(int64_t kc, const T* a, const T* b, T* c, int64_t rs, bool add, const T* bias,        \
                   bool relu) {                                                                          \
    using Vec = typename V::Vec;                                                                          \
    constexpr int64_t lanes = V::kLanes;                                                                  \
    Vec acc[kMr][kVecs];                                                                                  \
    _Pragma("GCC unroll 16") for (int64_t i = 0; i < kMr; ++i) {                                          \
      _Pragma("GCC unroll 2") for (int64_t v = 0; v < kVecs; ++v) acc[i][v] = V::zero();                 \
    }                                                                                                     \
    for (int64_t p = 0; p < kc; ++p) {                                                                    \
      Vec bv[kVecs];                                                                                      \
      _Pragma("GCC unroll 2") for (int64_t v = 0; v < kVecs; ++v) bv[v] = V::load(b + v * lanes);        \
      _Pragma("GCC unroll 16") for (int64_t i = 0; i < kMr; ++i) {                                        \
        const Vec ai = V::broadcast(a + i);                                                               \
        _Pragma("GCC unroll 2") for (int64_t v = 0; v < kVecs; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]); \
      }                                                                                                   \
      a += kMr;                                                                                           \
      b += 2 * lanes;                                                                                     \
    }                                                                                                     \
    _Pragma("GCC unroll 16") for (int64_t i = 0; i < kMr; ++i) {                                          \
      _Pragma("GCC unroll 2") for (int64_t v = 0; v < kVecs; ++v) {                                       \
        T* out = c + i * rs + v * lanes;                                                                  \
        Vec x = acc[i][v];                                                                                \
        if (add) {                                                                                        \
          x = V::add(V::load(out), x);                                                                    \
        } else if (bias != nullptr) {                                                                     \
          x = V::add(V::broadcast(bias + i), x);                                                          \
        }                                                                                                 \
        if (relu) x = V::relu(x);                                                                         \
        V::store(out, x);                                                                                 \
      }                                                                                                   \
    }                                                                                                     \
  }

FASTCONV_DEFINE_SIMD_MICRO_KERNEL(micro_kernel_avx2, FASTCONV_TARGET_AVX2)
FASTCONV_DEFINE_SIMD_MICRO_KERNEL(micro_kernel_avx512, FASTCONV_TARGET_AVX512)
#undef FASTCONV_DEFINE_SIMD_MICRO_KERNEL
#endif

// ----------------------------------------------------------------- kernels

// A micro-kernel with its tile shape and the block sizes (elements) tuned
// for it. kc: the K block, so that a KC x NR panel of B stays in L1 while
// every row panel streams past it. mc (a multiple of mr): the rows of A
// packed at a time, an MC x KC block kept in L2. nc (a multiple of nr): the
// columns of B packed at a time.
template <typename T>
struct Kernel {
  int64_t mr, nr;
  int64_t kc, mc, nc;
  MicroKernel<T> tile;
  // The tile's left NR / 2 columns only, for narrow edge tiles.
  MicroKernel<T> half_tile;
};

// The largest tile of any kernel, for edge_tile's scratch.
constexpr int64_t kMaxTileElements = 8 * 32;

template <typename T>
Kernel<T> make_kernel(CpuIsa isa) {
#if defined(FASTCONV_CPU_X86)
  // AVX-512: 8 rows x two 512-bit vectors, 16 of the 32 zmm registers as
  // accumulators. 8 rows divide the convolutions' M (output channels 32, 64,
  // 128; patches C * 9 with C a multiple of 8) where 6 or 12 waste up to
  // 12% on padding, and on this CPU's L1-resident throughput test 8 x 32
  // ran as fast as 12 x 32, 14 x 32 and 6 x 64 (and twice the AVX2 tile).
  // Blocks for a 48 KiB L1 and a 1 MiB L2: a 256-step B panel is 32 KiB
  // (float and double alike: both tiles are 128 bytes wide), a 128 x 256 A
  // block 128 KiB; nc 1024 takes a convolution's whole pixel block in one
  // pass. On the convnet4 layers kc 192 or 384, mc 64 or 256 and nc 512 or
  // 2048 ran no faster.
  if (isa == CpuIsa::kAvx512) {
    constexpr int64_t mr = 8, nr = 2 * Avx512<T>::kLanes;
    static_assert(mr * nr <= kMaxTileElements);
    return {mr, nr, 256, 128, 1024, &micro_kernel_avx512<Avx512<T>, mr, 2, T>,
            &micro_kernel_avx512<Avx512<T>, mr, 1, T>};
  }
  // AVX2: 6 rows x two 256-bit vectors, 12 of the 16 ymm registers, which
  // leaves room for two B vectors and an A broadcast.
  if (isa == CpuIsa::kAvx2) {
    constexpr int64_t mr = 6, nr = 2 * Avx2<T>::kLanes;
    static_assert(mr * nr <= kMaxTileElements);
    return {mr, nr, 320, 144, 512, &micro_kernel_avx2<Avx2<T>, mr, 2, T>, &micro_kernel_avx2<Avx2<T>, mr, 1, T>};
  }
#endif
  constexpr int64_t mr = 6, nr = 64 / sizeof(T);
  static_assert(mr * nr <= kMaxTileElements);
  return {mr, nr, 320, 144, 512, &micro_kernel_portable<T, mr, nr>, &micro_kernel_portable<T, mr, nr>};
}

template <typename T>
const Kernel<T>& kernel() {
  static const Kernel<T> selected = make_kernel<T>(cpu_isa());
  return selected;
}

// Column blocks aligned to kGemmColumnAlignment hold whole tiles of every
// kernel: the widest tile is 32 floats (AVX-512), and every NR is a power
// of two no larger.
static_assert(kGemmColumnAlignment % 32 == 0, "column blocks must hold whole tiles of every kernel");

// A is packed whole, once for every column block, up to this many elements.
constexpr int64_t kPackAllAMax = int64_t(1) << 20;


// The K block: K cut into equal blocks of at most kc (288 = 256 + 32 would
// waste a pass over C on a 32-step block). pack_whole_a and gemm_blocks must
// cut K alike, so both ask here.
template <typename T>
int64_t k_block(int64_t k) {
  const int64_t kc = kernel<T>().kc;
  return ceil_div(k, ceil_div(k, kc));
}

// m rounded up to whole MR-row panels.
template <typename T>
int64_t padded_rows(int64_t m) {
  const int64_t mr = kernel<T>().mr;
  return ceil_div(m, mr) * mr;
}

// ------------------------------------------------------------------ packing

#if defined(FASTCONV_CPU_X86)
// Transposes an 8 x 8 float block: src row r (8 floats at src + r * stride)
// becomes dst column r, dst row q being 8 floats at dst + q * dst_stride.
// Rows past `rows` read as zero. Stores are 8 wide even when the caller only
// needs fewer lanes per row (pack_a's 6-row panels): each row's spare lanes
// are overwritten by the next row, and pack_panel leaves a narrow panel's
// last row to its scalar loop, so that no store leaves the panel (into the
// next one, which another thread may be packing, or past the buffer).
FASTCONV_TARGET_AVX2 void transpose_8x8(const float* src, int64_t stride, int64_t rows, float* dst,
                                         int64_t dst_stride) {
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

// Copies `count` rows of `bytes` bytes (a multiple of 4), `src_step` bytes
// apart, to rows `dst_step` bytes apart: the steps of a panel of A or B, or
// one row of B into every panel. Rows are 24 to 128 bytes, where a call to
// memmove for each cost more than the copy (14% of a 3-channel
// convolution's forward; 18% of a Winograd input gradient at batch 1, whose
// transposed filters pack as 6-float steps of the AVX2 tile). A row's tail
// under 32 bytes moves in 16-, 8- and 4-byte pieces: nothing is written
// past it, into the next panel, which another thread may be packing.
FASTCONV_TARGET_AVX2 void copy_rows_avx2(const char* src, int64_t src_step, int64_t count, int64_t bytes, char* dst,
                                         int64_t dst_step) {
  const int64_t whole = bytes / 32 * 32;
  for (int64_t p = 0; p < count; ++p, src += src_step, dst += dst_step) {
    for (int64_t i = 0; i < whole; i += 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    }
    int64_t i = whole;
    if (bytes - i >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      i += 16;
    }
    if (bytes - i >= 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
      i += 8;
    }
    if (bytes - i >= 4) {
      _mm_store_ss(reinterpret_cast<float*>(dst + i), _mm_load_ss(reinterpret_cast<const float*>(src + i)));
    }
  }
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
  static_assert(sizeof(T) % 4 == 0, "copy_rows_avx2 moves rows in pieces of 4 bytes or more");
  int64_t p = 0;
#if defined(FASTCONV_CPU_X86)
  if (lane == 1 && lanes == width && cpu_isa() >= CpuIsa::kAvx2) {
    copy_rows_avx2(reinterpret_cast<const char*>(src), step * int64_t(sizeof(T)), count, width * int64_t(sizeof(T)),
                   reinterpret_cast<char*>(panel), width * int64_t(sizeof(T)));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (step == 1 && lane != 1 && cpu_isa() >= CpuIsa::kAvx2) {
      // A narrow panel's last step stays with the scalar loop (and so the
      // 8-step block holding it): its 8-wide row would spill into the next
      // panel.
      const int64_t transposed = width % 8 == 0 ? count : count - 1;
      for (; p + 8 <= transposed; p += 8) {
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
  const int64_t mr = kernel<T>().mr;
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    pack_panel(&a.at(i0, 0), a.col_stride, a.row_stride, kc, std::min(mr, mc - i0), mr, packed + i0 * kc);
  }
}

// Packs rows [0, kc) x cols [0, nc) of B into NR-column panels, k-major.
template <typename T>
void pack_b(int64_t kc, int64_t nc, const MatrixRef<const T>& b, T* packed) {
  const int64_t nr = kernel<T>().nr;
  int64_t j0 = 0;
#if defined(FASTCONV_CPU_X86)
  // A row-major B goes row by row across its whole panels, reading each row
  // front to back. Panel by panel, the copy took one panel's width from each
  // of K rows far apart (an input gradient's dY: one row per output channel)
  // and ran at a fraction of the bandwidth the same bytes take in order.
  const int64_t row_bytes = nr * int64_t(sizeof(T));
  if (b.col_stride == 1 && nc >= nr && row_bytes % 32 == 0 && cpu_isa() >= CpuIsa::kAvx2) {
    const int64_t whole = nc / nr;
    for (int64_t p = 0; p < kc; ++p) {
      copy_rows_avx2(reinterpret_cast<const char*>(&b.at(p, 0)), row_bytes, whole, row_bytes,
                     reinterpret_cast<char*>(packed + p * nr), kc * row_bytes);
    }
    j0 = whole * nr;
  }
#endif
  for (; j0 < nc; j0 += nr) {
    pack_panel(&b.at(0, j0), b.row_stride, b.col_stride, kc, std::min(nr, nc - j0), nr, packed + j0 * kc);
  }
}

// ---------------------------------------------------------------- blocking

// An edge tile (or one of a C with non-unit column stride): computed into a
// scratch tile, by the half-width kernel when its columns fit (the last
// tile of 14x14 = 196 pixels is 4 columns of 32), then its valid rows x cols
// corner goes into C.
template <typename T>
void edge_tile(int64_t kc, const T* a, const T* b, int64_t rows, int64_t cols, const MatrixRef<T>& c, bool add,
               const T* bias, bool relu) {
  const Kernel<T>& kern = kernel<T>();
  alignas(64) T tile[kMaxTileElements];
  (2 * cols <= kern.nr ? kern.half_tile : kern.tile)(kc, a, b, tile, kern.nr, false, nullptr, false);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      T& out = c.at(i, j);
      out = epilogue(tile_base(&out, add, bias, i) + tile[i * kern.nr + j], relu);
    }
}

// Elements of A packed per thread task at least: a smaller A packs on the
// calling thread alone.
constexpr int64_t kPackGrainElements = 32 * 1024;

template <typename T>
int64_t whole_a_panels(int64_t m, int64_t k) {
  if (m <= 0 || k <= 0) return 0;
  return ceil_div(k, k_block<T>(k)) * (padded_rows<T>(m) / kernel<T>().mr);
}

// Panel i of all of A packed for gemm_blocks: K block by K block (the same
// blocks for any n), each as the m_padded / MR panels of kc steps that
// pack_a writes.
template <typename T>
PackedPanel whole_a_panel(int64_t m, int64_t k, int64_t i) {
  const int64_t mr = kernel<T>().mr, kc_max = k_block<T>(k), m_padded = padded_rows<T>(m);
  const int64_t row_panels = m_padded / mr;
  const int64_t pc = i / row_panels * kc_max, i0 = i % row_panels * mr;
  return {i0, pc, std::min(kc_max, k - pc), pc * m_padded + i0 * std::min(kc_max, k - pc)};
}

// Packs all of A for gemm_blocks (whole_a_panel). The panels are
// independent, so they spread over the threads: a deep layer's weights (512
// x 4608 floats, 9 MiB) took a serial pass of memory before every
// convolution's parallel work began.
template <typename T>
void pack_whole_a(int64_t m, int64_t k, const MatrixRef<const T>& a, T* packed) {
  const int64_t mr = kernel<T>().mr, tasks = whole_a_panels<T>(m, k);
  if (tasks == 0) return;
  at::parallel_for(0, tasks, ceil_div(kPackGrainElements, mr * k_block<T>(k)), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const PackedPanel panel = whole_a_panel<T>(m, k, task);
      pack_panel(&a.at(panel.row0, panel.col0), a.col_stride, a.row_stride, panel.cols,
                 std::min(mr, m - panel.row0), mr, packed + panel.offset);
    }
  });
}

// The blocked loops. A comes either packed whole (`packed_whole_a`, from
// pack_whole_a) or from `a`, packed one MC x KC block at a time. `bias`
// (one per row of C, or null) starts the first K block's tiles unless they
// accumulate.
template <typename T>
void gemm_blocks(int64_t m, int64_t n, int64_t k, const T* packed_whole_a, const MatrixRef<const T>& a,
                 const MatrixRef<const T>& b, const MatrixRef<T>& c, bool accumulate, const T* bias, bool relu) {
  const Kernel<T>& kern = kernel<T>();
  const int64_t mr = kern.mr, nr = kern.nr;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c.at(i, j) = epilogue(tile_base(&c.at(i, j), accumulate, bias, i), relu);
    return;
  }
  const int64_t kc_max = k_block<T>(k), m_padded = padded_rows<T>(m);
  // Per-thread scratch, reused across calls (callers run gemm inside parallel_for).
  thread_local std::vector<T> packed_a, packed_b;
  if (packed_whole_a == nullptr) packed_a.resize(kern.mc * kc_max);
  packed_b.resize(kern.nc * kc_max);

  for (int64_t jc = 0; jc < n; jc += kern.nc) {
    const int64_t nc = std::min(kern.nc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      const bool add = accumulate || pc > 0;
      const bool clamp = relu && pc + kc == k;  // the tiles stored now are final
      pack_b(kc, nc, MatrixRef<const T>{&b.at(pc, jc), b.row_stride, b.col_stride}, packed_b.data());
      for (int64_t ic = 0; ic < m; ic += kern.mc) {
        const int64_t mc = std::min(kern.mc, m - ic);
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
            const T* tile_bias = bias != nullptr ? bias + ic + ir : nullptr;
            if (rows == mr && cols == nr && c.col_stride == 1) {
              kern.tile(kc, a_panel, b_panel, dst, c.row_stride, add, tile_bias, clamp);
            } else {
              edge_tile(kc, a_panel, b_panel, rows, cols, MatrixRef<T>{dst, c.row_stride, c.col_stride}, add,
                        tile_bias, clamp);
            }
          }
        }
      }
    }
  }
}

}  // namespace

template <typename T>
PackedA<T>::PackedA(int64_t m, int64_t k, MatrixRef<const T> a)
    : m_(m), k_(k), owned_(elements(m, k)), data_(owned_.get()) {
  pack_whole_a(m, k, a, data_);
}

template <typename T>
int64_t PackedA<T>::elements(int64_t m, int64_t k) {
  return padded_rows<T>(m) * k;
}

template <typename T>
int64_t PackedA<T>::panel_rows() {
  return kernel<T>().mr;
}

template <typename T>
int64_t PackedA<T>::panels() const {
  return whole_a_panels<T>(m_, k_);
}

template <typename T>
PackedPanel PackedA<T>::panel(int64_t i) const {
  return whole_a_panel<T>(m_, k_, i);
}

template <typename T>
void gemm(const PackedA<T>& a, int64_t n, MatrixRef<const T> b, MatrixRef<T> c, bool accumulate, bool relu,
          const T* row_bias) {
  gemm_blocks(a.rows(), n, a.depth(), a.data(), MatrixRef<const T>{nullptr, 0, 0}, b, c, accumulate, row_bias,
              relu);
}

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c,
          bool accumulate, bool relu) {
  // With several column blocks, A is packed once for all of them (when that
  // is not too big); else block by block, so each packed block is used while
  // it is still in L2.
  if (n > kernel<T>().nc && k > 0 && padded_rows<T>(m) * k <= kPackAllAMax) {
    return gemm(PackedA<T>(m, k, a), n, b, c, accumulate, relu);
  }
  gemm_blocks(m, n, k, static_cast<const T*>(nullptr), a, b, c, accumulate, static_cast<const T*>(nullptr), relu);
}

template <typename T>
int64_t gemm_tile_rows() {
  return kernel<T>().mr;
}

template <typename T>
int64_t gemm_computed_columns(int64_t n) {
  const Kernel<T>& kern = kernel<T>();
  const int64_t nr = kern.nr, whole = n / nr * nr, rest = n - whole;
  // As edge_tile picks; the portable kernel's half tile is its whole tile.
  const bool half = 2 * rest <= nr && kern.half_tile != kern.tile;
  return whole + (rest == 0 ? 0 : half ? nr / 2 : nr);
}

template int64_t gemm_computed_columns<float>(int64_t);
template int64_t gemm_computed_columns<double>(int64_t);
template int64_t gemm_tile_rows<float>();
template int64_t gemm_tile_rows<double>();
template class PackedA<float>;
template class PackedA<double>;
template void gemm<float>(const PackedA<float>&, int64_t, MatrixRef<const float>, MatrixRef<float>, bool, bool,
                          const float*);
template void gemm<double>(const PackedA<double>&, int64_t, MatrixRef<const double>, MatrixRef<double>, bool,
                           bool, const double*);
template void gemm<float>(int64_t, int64_t, int64_t, MatrixRef<const float>, MatrixRef<const float>,
                          MatrixRef<float>, bool, bool);
template void gemm<double>(int64_t, int64_t, int64_t, MatrixRef<const double>, MatrixRef<const double>,
                           MatrixRef<double>, bool, bool);

}  // namespace cpu
}  // namespace fastconv
