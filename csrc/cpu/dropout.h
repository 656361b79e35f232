// CPU dropout: the same Philox stream and element mapping as
// csrc/cuda/dropout.cuh, so masks match the CUDA and SIMT backends bit for bit.
#pragma once

#include <cstdint>

#include "../common/dtypes.h"

namespace fastconv {
namespace cpu {

template <typename T>
void dropout_apply(const T* input, T* output, int64_t n, uint64_t seed, uint64_t offset,
                   uint32_t drop_threshold, acc_t<T> scale);

}  // namespace cpu
}  // namespace fastconv
