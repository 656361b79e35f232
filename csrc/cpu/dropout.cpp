// Dropout on the CPU: output = input * (keep ? scale : 0), the keep bit of
// element i coming from word i % 4 of Philox group i / 4 (csrc/common/philox.h).
//
// The work goes in blocks of 64 elements, one 64-bit word of keep bits each
// (16 Philox groups). Forward generates a block's word, stores it when the
// caller keeps the mask for backward, and applies it; backward from a stored
// mask loads the word and applies it, so it streams like ReLU instead of
// paying for Philox again. Per ISA only those two steps differ: generating a
// word (philox_x86.h runs a block's 16 groups at once, two blocks at once
// with AVX-512; the portable path one group at a time) and applying one
// (AVX-512 mask registers, AVX2 compares, a scalar loop). All paths give
// bit-identical outputs and masks: the factor is the same value and the
// product the same single rounding.
#include "dropout.h"

#include <algorithm>

#include "../common/philox.h"
#include "cpu_isa.h"
#include "isa_loops.h"
#include "keep_bits.h"
#include "parallel.h"
#include "philox_x86.h"

namespace fastconv {
namespace cpu {
namespace {

constexpr int64_t kBlock = kKeepBlock;
constexpr int64_t kGroupsPerBlock = kBlock / 4;

struct DropoutArgs {
  uint64_t seed;
  uint64_t offset;
  uint32_t drop_threshold;
};

// The two steps of a block, per ISA: keep_words (below) and apply(in, out,
// word, scale) on 64 elements. The portable apply also takes the
// element count, for the tensor's last block.
template <CpuIsa>
struct Steps;

// keep_words<K>(args, block, words) gives the words of blocks [block, block +
// K); kWordsAtOnce is the K a vector path runs best at (more independent
// Philox chains in flight).
template <>
struct Steps<CpuIsa::kBaseline> {
  static constexpr int kWordsAtOnce = 1;

  template <int K>
  static void keep_words(const DropoutArgs& a, int64_t block, uint64_t (&words)[K]) {
    for (int k = 0; k < K; ++k) words[k] = keep_word(a, block + k);
  }

  static uint64_t keep_word(const DropoutArgs& a, int64_t block) {
    uint64_t word = 0;
    for (int j = 0; j < kGroupsPerBlock; ++j) {
      const Philox4x32 r = philox_group(a.seed, a.offset, static_cast<uint64_t>(block * kGroupsPerBlock + j));
      for (int k = 0; k < 4; ++k) {
        word |= static_cast<uint64_t>(dropout_keep(r.v[k], a.drop_threshold)) << (4 * j + k);
      }
    }
    return word;
  }

  template <typename T>
  static void apply(const T* in, T* out, uint64_t word, T scale, int64_t count = kBlock) {
    for (int64_t j = 0; j < count; ++j) out[j] = in[j] * ((word >> j) & 1 ? scale : T(0));
  }
};

#if defined(FASTCONV_CPU_X86)

// Dropped elements are multiplied by zero, not stored as zero: NaN, inf and
// the sign of zero behave as in input * 0, like the portable path and torch.
template <>
struct Steps<CpuIsa::kAvx512> {
  static constexpr int kWordsAtOnce = 2;

  template <int K>
  FASTCONV_TARGET_AVX512 static void keep_words(const DropoutArgs& a, int64_t block, uint64_t (&words)[K]) {
    philox_x86::keep_bits_avx512<K>(a.seed, a.offset, static_cast<uint64_t>(block * kGroupsPerBlock),
                                    a.drop_threshold, words);
  }

  template <typename T>
  FASTCONV_TARGET_AVX512 static void apply(const T* in, T* out, uint64_t word, T scale) {
    if constexpr (sizeof(T) == 4) {
      const __m512 s = _mm512_set1_ps(scale);
      for (int q = 0; q < 4; ++q) {
        const __m512 factor = _mm512_maskz_mov_ps(static_cast<__mmask16>(word >> (16 * q)), s);
        _mm512_storeu_ps(out + 16 * q, _mm512_mul_ps(_mm512_loadu_ps(in + 16 * q), factor));
      }
    } else {
      const __m512d s = _mm512_set1_pd(scale);
      for (int q = 0; q < 8; ++q) {
        const __m512d factor = _mm512_maskz_mov_pd(static_cast<__mmask8>(word >> (8 * q)), s);
        _mm512_storeu_pd(out + 8 * q, _mm512_mul_pd(_mm512_loadu_pd(in + 8 * q), factor));
      }
    }
  }
};

template <>
struct Steps<CpuIsa::kAvx2> {
  static constexpr int kWordsAtOnce = 1;

  template <int K>
  FASTCONV_TARGET_AVX2 static void keep_words(const DropoutArgs& a, int64_t block, uint64_t (&words)[K]) {
    for (int k = 0; k < K; ++k) {
      words[k] = philox_x86::keep_bits_avx2(a.seed, a.offset, static_cast<uint64_t>((block + k) * kGroupsPerBlock),
                                            a.drop_threshold);
    }
  }

  template <typename T>
  FASTCONV_TARGET_AVX2 static void apply(const T* in, T* out, uint64_t word, T scale) {
    if constexpr (sizeof(T) == 4) {
      const __m256 s = _mm256_set1_ps(scale);
      for (int q = 0; q < 8; ++q) {
        const __m256 factor = _mm256_and_ps(keep_lanes_ps(word >> (8 * q)), s);
        _mm256_storeu_ps(out + 8 * q, _mm256_mul_ps(_mm256_loadu_ps(in + 8 * q), factor));
      }
    } else {
      const __m256d s = _mm256_set1_pd(scale);
      for (int q = 0; q < 16; ++q) {
        const __m256d factor = _mm256_and_pd(keep_lanes_pd(word >> (4 * q)), s);
        _mm256_storeu_pd(out + 4 * q, _mm256_mul_pd(_mm256_loadu_pd(in + 4 * q), factor));
      }
    }
  }
};

#endif  // FASTCONV_CPU_X86

// word_of(block, count) gives the keep word of a block of `count` elements:
// generated or loaded.
template <CpuIsa isa, typename T, typename Word>
FASTCONV_LOOP_INLINE void apply_blocks(const T* input, T* output, int64_t n, T scale, int64_t begin, int64_t end,
                                       const Word& word_of) {
  for_each_keep_block(
      n, begin, end,
      [&](int64_t b) FASTCONV_LAMBDA_INLINE {
        Steps<isa>::apply(input + b * kBlock, output + b * kBlock, word_of(b, kBlock), scale);
      },
      [&](int64_t b, int64_t count) FASTCONV_LAMBDA_INLINE {
        Steps<CpuIsa::kBaseline>::apply(input + b * kBlock, output + b * kBlock, word_of(b, count), scale, count);
      });
}

// Forward: each block's word from Philox, stored when keep_bits is given.
// Whole blocks go kWordsAtOnce at a time, the rest one at a time.
template <CpuIsa isa>
struct GeneratedMaskBlocks {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, T* output, int64_t n, DropoutArgs a, T scale,
                                       uint8_t* keep_bits, int64_t begin, int64_t end) {
    constexpr int kAtOnce = Steps<isa>::kWordsAtOnce;
    const int64_t whole_blocks = std::max<int64_t>(std::min(end, n / kBlock) - begin, 0);
    const int64_t batched_end = begin + whole_blocks / kAtOnce * kAtOnce;
    for (int64_t b = begin; b < batched_end; b += kAtOnce) {
      uint64_t words[kAtOnce];
      Steps<isa>::template keep_words<kAtOnce>(a, b, words);
      for (int k = 0; k < kAtOnce; ++k) {
        if (keep_bits) store_keep_word(keep_bits + (b + k) * 8, words[k], 8);
        Steps<isa>::apply(input + (b + k) * kBlock, output + (b + k) * kBlock, words[k], scale);
      }
    }
    struct Generate {
      const DropoutArgs& a;
      uint8_t* keep_bits;
      FASTCONV_LOOP_INLINE uint64_t operator()(int64_t block, int64_t count) const {
        uint64_t word[1];
        Steps<isa>::template keep_words<1>(a, block, word);
        if (count < kBlock) word[0] &= (uint64_t(1) << count) - 1;  // the stored padding bits are zero
        if (keep_bits) store_keep_word(keep_bits + block * 8, word[0], keep_bits_bytes(count));
        return word[0];
      }
    };
    apply_blocks<isa>(input, output, n, scale, batched_end, end, Generate{a, keep_bits});
  }
};

// Backward: each block's word from the stored mask.
template <CpuIsa isa>
struct StoredMaskBlocks {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, T* output, int64_t n, const uint8_t* keep_bits, T scale,
                                       int64_t begin, int64_t end) {
    struct Load {
      const uint8_t* keep_bits;
      FASTCONV_LOOP_INLINE uint64_t operator()(int64_t block, int64_t count) const {
        return load_keep_word(keep_bits + block * 8, keep_bits_bytes(count));
      }
    };
    apply_blocks<isa>(input, output, n, scale, begin, end, Load{keep_bits});
  }
};

}  // namespace

template <typename T>
void dropout_apply(Target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale, uint8_t* keep_bits) {
  const DropoutArgs a{static_cast<uint64_t>(seed_offset[0]), static_cast<uint64_t>(seed_offset[1]), drop_threshold};
  // Generating the mask costs more than moving the data, so threads pay off
  // on smaller tensors than for the other elementwise kernels.
  parallel_chunks(keep_blocks(n), kElementwiseGrain / 4 / kBlock, [&](int64_t begin, int64_t end) {
    run_widest_isa<GeneratedMaskBlocks>(input, output, n, a, scale, keep_bits, begin, end);
  });
}

template <typename T>
void dropout_apply_mask(Target, const T* input, T* output, int64_t n, const uint8_t* keep_bits, acc_t<T> scale) {
  parallel_chunks(keep_blocks(n), kElementwiseGrain / kBlock, [&](int64_t begin, int64_t end) {
    run_widest_isa<StoredMaskBlocks>(input, output, n, keep_bits, scale, begin, end);
  });
}

template void dropout_apply<float>(Target, const float*, float*, int64_t, const int64_t*, uint32_t, float, uint8_t*);
template void dropout_apply<double>(Target, const double*, double*, int64_t, const int64_t*, uint32_t, double,
                                    uint8_t*);
template void dropout_apply_mask<float>(Target, const float*, float*, int64_t, const uint8_t*, float);
template void dropout_apply_mask<double>(Target, const double*, double*, int64_t, const uint8_t*, double);

}  // namespace cpu
}  // namespace fastconv
