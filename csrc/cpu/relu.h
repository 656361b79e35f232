// CPU ReLU kernels over contiguous buffers (same semantics as csrc/cuda/relu.cuh).
#pragma once

#include <cstdint>

#include "../common/target.h"

namespace fastconv {
namespace cpu {

template <typename T>
void relu_forward(Target, const T* input, T* output, int64_t n);

template <typename T>
void relu_backward(Target, const T* grad_output, const T* output, T* grad_input, int64_t n);

}  // namespace cpu
}  // namespace fastconv
