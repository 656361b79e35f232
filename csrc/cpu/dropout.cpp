// Dropout on the CPU: output = input * (keep ? scale : 0), the keep bit of
// element i coming from word i % 4 of Philox group i / 4 (csrc/common/philox.h).
// Backward regenerates the mask, so generating it is most of the work: the
// AVX-512 and AVX2 paths run Philox on 16 or 8 groups at once
// (philox_x86.h) and apply 64 or 32 elements per step; the portable path
// does one group at a time. All give bit-identical outputs: the factor is
// the same value and the product the same single rounding.
#include "dropout.h"

#include "../common/philox.h"
#include "cpu_isa.h"
#include "parallel.h"
#include "philox_x86.h"

namespace fastconv {
namespace cpu {
namespace {

struct DropoutArgs {
  uint64_t seed;
  uint64_t offset;
  uint32_t drop_threshold;
};

// Groups [begin, end) one at a time; the last group of the tensor may be partial.
template <typename T>
void dropout_groups_portable(const T* input, T* output, int64_t n, const DropoutArgs& a, acc_t<T> scale,
                             int64_t begin, int64_t end) {
  for (int64_t g = begin; g < end; ++g) {
    const Philox4x32 r = philox_group(a.seed, a.offset, static_cast<uint64_t>(g));
    const int64_t base = g * 4;
    const int count = base + 4 <= n ? 4 : static_cast<int>(n - base);
    for (int k = 0; k < count; ++k) {
      const T factor = dropout_keep(r.v[k], a.drop_threshold) ? scale : T(0);
      output[base + k] = input[base + k] * factor;
    }
  }
}

#if defined(FASTCONV_CPU_X86)

// Multiplies kBytes / sizeof(T) elements by scale where their keep bit is
// set and by zero elsewhere (not a plain zero store: NaN, inf and the sign of
// zero behave as in input * 0, like the portable path and torch).
template <typename T>
FASTCONV_TARGET_AVX512 inline void apply_avx512(const T* in, T* out, uint64_t bits, T scale) {
  if constexpr (sizeof(T) == 4) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int q = 0; q < 4; ++q) {
      const __m512 factor = _mm512_maskz_mov_ps(static_cast<__mmask16>(bits >> (16 * q)), s);
      _mm512_storeu_ps(out + 16 * q, _mm512_mul_ps(_mm512_loadu_ps(in + 16 * q), factor));
    }
  } else {
    const __m512d s = _mm512_set1_pd(scale);
    for (int q = 0; q < 8; ++q) {
      const __m512d factor = _mm512_maskz_mov_pd(static_cast<__mmask8>(bits >> (8 * q)), s);
      _mm512_storeu_pd(out + 8 * q, _mm512_mul_pd(_mm512_loadu_pd(in + 8 * q), factor));
    }
  }
}

template <typename T>
FASTCONV_TARGET_AVX512 void dropout_groups_avx512(const T* input, T* output, int64_t n, const DropoutArgs& a,
                                                  acc_t<T> scale, int64_t begin, int64_t end) {
  constexpr int64_t kGroups = 16;
  int64_t g = begin;
  for (; g + kGroups <= end && (g + kGroups) * 4 <= n; g += kGroups) {
    const uint64_t bits = philox_x86::keep_bits_avx512(a.seed, a.offset, static_cast<uint64_t>(g), a.drop_threshold);
    apply_avx512<T>(input + 4 * g, output + 4 * g, bits, scale);
  }
  dropout_groups_portable(input, output, n, a, scale, g, end);
}

template <typename T>
FASTCONV_TARGET_AVX2 inline void apply_avx2(const T* in, T* out, uint32_t bits, T scale) {
  if constexpr (sizeof(T) == 4) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int q = 0; q < 4; ++q) {
      const __m256i set = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits >> (8 * q))), lane_bit);
      const __m256 factor = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(set, lane_bit)), s);
      _mm256_storeu_ps(out + 8 * q, _mm256_mul_ps(_mm256_loadu_ps(in + 8 * q), factor));
    }
  } else {
    const __m256d s = _mm256_set1_pd(scale);
    const __m256i lane_bit = _mm256_setr_epi64x(1, 2, 4, 8);
    for (int q = 0; q < 8; ++q) {
      const __m256i set = _mm256_and_si256(_mm256_set1_epi64x(static_cast<int64_t>(bits >> (4 * q))), lane_bit);
      const __m256d factor = _mm256_and_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(set, lane_bit)), s);
      _mm256_storeu_pd(out + 4 * q, _mm256_mul_pd(_mm256_loadu_pd(in + 4 * q), factor));
    }
  }
}

template <typename T>
FASTCONV_TARGET_AVX2 void dropout_groups_avx2(const T* input, T* output, int64_t n, const DropoutArgs& a,
                                              acc_t<T> scale, int64_t begin, int64_t end) {
  constexpr int64_t kGroups = 8;
  int64_t g = begin;
  for (; g + kGroups <= end && (g + kGroups) * 4 <= n; g += kGroups) {
    const uint32_t bits = philox_x86::keep_bits_avx2(a.seed, a.offset, static_cast<uint64_t>(g), a.drop_threshold);
    apply_avx2<T>(input + 4 * g, output + 4 * g, bits, scale);
  }
  dropout_groups_portable(input, output, n, a, scale, g, end);
}

#endif  // FASTCONV_CPU_X86

}  // namespace

template <typename T>
void dropout_apply(Target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale) {
  const DropoutArgs a{static_cast<uint64_t>(seed_offset[0]), static_cast<uint64_t>(seed_offset[1]), drop_threshold};
  const int64_t groups = (n + 3) / 4;
  auto run = [&](auto groups_kernel) {
    // Chunks are whole Philox groups, so no group is split between threads.
    // Generating the mask costs more than moving the data, so threads pay
    // off on smaller tensors than for the other elementwise kernels.
    parallel_chunks(groups, kElementwiseGrain / 16, [&](int64_t begin, int64_t end) {
      groups_kernel(input, output, n, a, scale, begin, end);
    });
  };
#if defined(FASTCONV_CPU_X86)
  const CpuIsa isa = cpu_isa();
  if (isa >= CpuIsa::kAvx512) return run(dropout_groups_avx512<T>);
  if (isa >= CpuIsa::kAvx2) return run(dropout_groups_avx2<T>);
#endif
  run(dropout_groups_portable<T>);
}

template void dropout_apply<float>(Target, const float*, float*, int64_t, const int64_t*, uint32_t, float);
template void dropout_apply<double>(Target, const double*, double*, int64_t, const int64_t*, uint32_t, double);

}  // namespace cpu
}  // namespace fastconv
