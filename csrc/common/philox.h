// Philox4x32-10 counter-based random number generator (Salmon et al., SC'11,
// "Parallel random numbers: as easy as 1, 2, 3").
//
// One header for CPU, CUDA and SIMT code, so that the same (seed, offset) gives
// bit-identical random streams, and hence identical dropout masks, everywhere.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastconv {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

FASTCONV_HD void mul_hi_lo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}
}  // namespace philox_detail

// Ten rounds of Philox4x32 on `counter` under `key`.
FASTCONV_HD Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t key0, uint32_t key1) {
  using namespace philox_detail;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(kMul0, counter.v[0], hi0, lo0);
    mul_hi_lo(kMul1, counter.v[2], hi1, lo1);
    counter = Philox4x32{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The four 32-bit words for elements [4*group, 4*group + 4) of the stream
// named by (seed, offset). Every backend maps element i to word i % 4 of
// group i / 4, which is what makes their masks identical.
FASTCONV_HD Philox4x32 philox_group(uint64_t seed, uint64_t offset, uint64_t group) {
  const Philox4x32 counter{{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                            static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Dropout keeps an element when the top 24 bits of its word reach
// `drop_threshold` = ceil(p * 2^24): p = 0 keeps all, p = 1 keeps none.
FASTCONV_HD bool dropout_keep(uint32_t word, uint32_t drop_threshold) {
  return (word >> 8) >= drop_threshold;
}

}  // namespace fastconv
