// CPU dropout: the same Philox stream and element mapping as
// csrc/cuda/dropout.cuh, so masks match the CUDA and SIMT backends bit for bit.
#pragma once

#include <cstdint>

#include "../common/dtypes.h"
#include "../common/target.h"

namespace fastconv {
namespace cpu {

// seed_offset: the Philox (seed, counter offset) pair, as the CUDA launcher takes it.
template <typename T>
void dropout_apply(Target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale);

}  // namespace cpu
}  // namespace fastconv
