// Stored masks, one bit per element: what dropout and ReLU keep for their
// backward on the CPU instead of regenerating the mask (dropout) or holding
// on to the output (ReLU). Backward then reads n / 8 bytes beside the
// gradient, where re-reading the output costs 4n or 8n.
//
// Bit i % 8 of byte i / 8 is set when element i, in row-major order, is kept;
// the unused high bits of the last byte are zero. Kernels work in blocks of
// 64 elements, one 64-bit little-endian word of the mask each.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "isa_loops.h"
#include "x86_intrinsics.h"

namespace fastconv {
namespace cpu {

constexpr int64_t kKeepBlock = 64;  // elements per keep word

constexpr int64_t keep_bits_bytes(int64_t n) { return (n + 7) / 8; }
constexpr int64_t keep_blocks(int64_t n) { return (n + kKeepBlock - 1) / kKeepBlock; }

// Byte k of a word holds elements [8k, 8k + 8). `bytes` is 8 except in the
// tensor's last block.
inline uint64_t load_keep_word(const uint8_t* keep_bits, int64_t bytes) {
  uint64_t word = 0;
  if (bytes == 8 && std::endian::native == std::endian::little) {
    std::memcpy(&word, keep_bits, 8);
    return word;
  }
  for (int64_t k = 0; k < bytes; ++k) word |= static_cast<uint64_t>(keep_bits[k]) << (8 * k);
  return word;
}

inline void store_keep_word(uint8_t* keep_bits, uint64_t word, int64_t bytes) {
  if (bytes == 8 && std::endian::native == std::endian::little) {
    std::memcpy(keep_bits, &word, 8);
    return;
  }
  for (int64_t k = 0; k < bytes; ++k) keep_bits[k] = static_cast<uint8_t>(word >> (8 * k));
}

// Blocks [begin, end) of n elements: full_block(block) for each whole block,
// then last_block(block, count) for the tensor's last one when it is partial
// (the vector paths handle whole blocks only).
template <typename Full, typename Last>
FASTCONV_LOOP_INLINE void for_each_keep_block(int64_t n, int64_t begin, int64_t end, const Full& full_block,
                                              const Last& last_block) {
  const int64_t full_end = std::min(end, n / kKeepBlock);
  for (int64_t b = begin; b < full_end; ++b) full_block(b);
  if (full_end < end) last_block(full_end, n - full_end * kKeepBlock);
}

#if defined(FASTCONV_CPU_X86)
// AVX2 has no mask registers: lane j of the result is all ones when bit j of
// `bits` is set (8 float lanes or 4 double lanes), for and-ing with values.
FASTCONV_TARGET_AVX2 inline __m256 keep_lanes_ps(uint64_t bits) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i set = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits & 0xff)), lane_bit);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(set, lane_bit));
}

FASTCONV_TARGET_AVX2 inline __m256d keep_lanes_pd(uint64_t bits) {
  const __m256i lane_bit = _mm256_setr_epi64x(1, 2, 4, 8);
  const __m256i set = _mm256_and_si256(_mm256_set1_epi64x(static_cast<int64_t>(bits & 0xf)), lane_bit);
  return _mm256_castsi256_pd(_mm256_cmpeq_epi64(set, lane_bit));
}
#endif

}  // namespace cpu
}  // namespace fastconv
