// CPU dropout: the same Philox stream and element mapping as
// csrc/cuda/dropout.cuh, so masks match the CUDA and SIMT backends bit for bit.
#pragma once

#include <cstdint>

#include "../common/dtypes.h"
#include "../common/target.h"
#include "keep_bits.h"

namespace fastconv {
namespace cpu {

// output = input * (keep ? scale : 0), keep from the Philox pair `seed_offset`
// (seed, counter offset), as the CUDA launcher takes it. With `keep_bits`
// (keep_bits_bytes(n) bytes, keep_bits.h) the mask is also stored there.
template <typename T>
void dropout_apply(Target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale, uint8_t* keep_bits = nullptr);

// The same map with a stored mask: dropout's backward, without Philox.
template <typename T>
void dropout_apply_mask(Target, const T* input, T* output, int64_t n, const uint8_t* keep_bits, acc_t<T> scale);

}  // namespace cpu
}  // namespace fastconv
