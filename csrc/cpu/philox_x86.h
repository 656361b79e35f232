// Philox4x32-10 on x86 vectors: the keep/drop decisions of 16 consecutive
// Philox groups (64 elements, one block; with AVX-512, of K blocks) at once,
// as one bit per element in element order (bit 4 * j + k is word k of group
// `first + j`, the mapping of philox_group and dropout_keep in
// csrc/common/philox.h, so masks are bit-identical to the scalar generator's).
//
// Lanes hold one group's counter words (structure of arrays), so groups never
// meet and no shuffles are needed. Functions carry target attributes, so this
// header compiles without -mavx*; callers check cpu_isa() before calling them.
#pragma once

#include "x86_intrinsics.h"

#if defined(FASTCONV_CPU_X86)
#include <cstdint>

#include "../common/philox.h"

#include "cpu_isa.h"  // FASTCONV_TARGET_AVX2, FASTCONV_TARGET_AVX512

namespace fastconv {
namespace cpu {
namespace philox_x86 {

// Spreads the four words' per-group keep bits (bit j of keep[k]) into
// element order: bit 4 * j + k.
template <typename Bits>
FASTCONV_TARGET_AVX2 inline Bits interleave4(Bits k0, Bits k1, Bits k2, Bits k3) {
  if constexpr (sizeof(Bits) == 8) {
    return _pdep_u64(k0, 0x1111111111111111ull) | _pdep_u64(k1, 0x2222222222222222ull) |
           _pdep_u64(k2, 0x4444444444444444ull) | _pdep_u64(k3, 0x8888888888888888ull);
  } else {
    return _pdep_u32(k0, 0x11111111u) | _pdep_u32(k1, 0x22222222u) | _pdep_u32(k2, 0x44444444u) |
           _pdep_u32(k3, 0x88888888u);
  }
}

// Each 64-bit lane holds one group's counter word in its low half. The
// 32x32->64 multiply (vpmuludq) reads only low halves, so the high halves may
// hold anything: the full product is then lo in the low half and, after one
// shift, hi in the low half, and a round is two multiplies, two shifts and
// two three-way XORs per lane, with no recombining of even and odd lanes.
// The key words are XORed in as 32-bit broadcasts for the same reason.

// dropout_keep on the low halves: (word >> 8) >= t  <=>  (word & ~0xFF) >= t << 8.
FASTCONV_TARGET_AVX512 inline uint32_t keep8_avx512(__m512i word, __m512i threshold_shifted) {
  const __m512i top24 = _mm512_and_si512(word, _mm512_set1_epi64(0xFFFFFF00ll));
  return _mm512_cmpge_epu64_mask(top24, threshold_shifted);
}

// Keep bits of kBlocks consecutive 64-element blocks, groups [first, first +
// 16 * kBlocks): eight groups per __m512i, so 2 * kBlocks chains advanced
// round by round together. A round of one chain is a multiply, a shift and a
// ternary-logic op in series (about 5 cycles) for 6 vector operations; Zen 5
// issues up to 4 a cycle, so two chains (one block) leave most of that idle.
// Four (two blocks) took dropout's float32 forward from 0.35 to 0.24 ns an
// element on one thread of a Zen 5; six and eight spill and took 0.48 and 0.41.
template <int kBlocks>
FASTCONV_TARGET_AVX512 inline void keep_bits_avx512(uint64_t seed, uint64_t offset, uint64_t first,
                                                      uint32_t drop_threshold, uint64_t (&words)[kBlocks]) {
  using namespace philox_detail;
  constexpr int kChains = 2 * kBlocks;
  __m512i c0[kChains], c1[kChains], c2[kChains], c3[kChains];
  const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 4
  for (int j = 0; j < kChains; ++j) {
    c0[j] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first + 8 * j)), lanes);
    c1[j] = _mm512_srli_epi64(c0[j], 32);
    c2[j] = _mm512_set1_epi64(static_cast<long long>(offset));
    c3[j] = _mm512_set1_epi64(static_cast<long long>(offset >> 32));
  }
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const __m512i mul0 = _mm512_set1_epi64(kMul0);
  const __m512i mul1 = _mm512_set1_epi64(kMul1);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(key0));
    const __m512i k1 = _mm512_set1_epi32(static_cast<int>(key1));
#pragma GCC unroll 4
    for (int j = 0; j < kChains; ++j) {
      const __m512i p0 = _mm512_mul_epu32(c0[j], mul0);
      const __m512i p1 = _mm512_mul_epu32(c2[j], mul1);
      // 0x96: a ^ b ^ c in one instruction.
      c0[j] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1, 32), c1[j], k0, 0x96);
      c1[j] = p1;
      c2[j] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0, 32), c3[j], k1, 0x96);
      c3[j] = p0;
    }
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  // Word k's keep bits of a block, bit j for its group j, then spread into element order.
  const __m512i t = _mm512_set1_epi64(static_cast<long long>(drop_threshold) << 8);
#pragma GCC unroll 2
  for (int b = 0; b < kBlocks; ++b) {
    auto word = [&](const __m512i (&c)[kChains]) FASTCONV_TARGET_AVX512 {
      return static_cast<uint64_t>(keep8_avx512(c[2 * b], t) | (keep8_avx512(c[2 * b + 1], t) << 8));
    };
    words[b] = interleave4<uint64_t>(word(c0), word(c1), word(c2), word(c3));
  }
}

// As keep8_avx512; both sides are below 2^33, so the signed compare of AVX2
// is the unsigned one.
FASTCONV_TARGET_AVX2 inline uint32_t keep4_avx2(__m256i word, __m256i threshold_shifted_minus_1) {
  const __m256i top24 = _mm256_and_si256(word, _mm256_set1_epi64x(0xFFFFFF00ll));
  const __m256i kept = _mm256_cmpgt_epi64(top24, threshold_shifted_minus_1);
  return static_cast<uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(kept)));
}

// Keep bits of the 64 elements of groups [first, first + 16): four groups
// per __m256i, in four chains advanced round by round together. One chain's
// round waits on its multiply (about 6 cycles for 8 vector operations), so
// two chains in flight at a time (two calls of 8 groups, as this was before)
// left the vector pipes idle: dropout's forward took 1.06 ns an element on
// one thread of a Zen 3, and takes 0.91 with four chains. Sixteen state
// vectors and the temporaries do not fit AVX2's 16 registers; the spills cost
// less than the idle pipes did.
FASTCONV_TARGET_AVX2 inline uint64_t keep_bits_avx2(uint64_t seed, uint64_t offset, uint64_t first,
                                                      uint32_t drop_threshold) {
  using namespace philox_detail;
  constexpr int kChains = 4;
  __m256i c0[kChains], c1[kChains], c2[kChains], c3[kChains];
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
#pragma GCC unroll 4
  for (int j = 0; j < kChains; ++j) {
    c0[j] = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(first + 4 * j)), lanes);
    c1[j] = _mm256_srli_epi64(c0[j], 32);
    c2[j] = _mm256_set1_epi64x(static_cast<long long>(offset));
    c3[j] = _mm256_set1_epi64x(static_cast<long long>(offset >> 32));
  }
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const __m256i mul0 = _mm256_set1_epi64x(kMul0);
  const __m256i mul1 = _mm256_set1_epi64x(kMul1);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m256i k0 = _mm256_set1_epi32(static_cast<int>(key0));
    const __m256i k1 = _mm256_set1_epi32(static_cast<int>(key1));
#pragma GCC unroll 4
    for (int j = 0; j < kChains; ++j) {
      const __m256i p0 = _mm256_mul_epu32(c0[j], mul0);
      const __m256i p1 = _mm256_mul_epu32(c2[j], mul1);
      c0[j] = _mm256_xor_si256(_mm256_srli_epi64(p1, 32), _mm256_xor_si256(c1[j], k0));
      c1[j] = p1;
      c2[j] = _mm256_xor_si256(_mm256_srli_epi64(p0, 32), _mm256_xor_si256(c3[j], k1));
      c3[j] = p0;
    }
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  // Word k's keep bits, bit j for group first + j, then spread into element order.
  const __m256i t = _mm256_set1_epi64x((static_cast<long long>(drop_threshold) << 8) - 1);
  auto word = [&](const __m256i (&c)[kChains]) FASTCONV_TARGET_AVX2 {
    return static_cast<uint64_t>(keep4_avx2(c[0], t) | (keep4_avx2(c[1], t) << 4) | (keep4_avx2(c[2], t) << 8) |
                                 (keep4_avx2(c[3], t) << 12));
  };
  return interleave4<uint64_t>(word(c0), word(c1), word(c2), word(c3));
}

}  // namespace philox_x86
}  // namespace cpu
}  // namespace fastconv

#endif  // x86
