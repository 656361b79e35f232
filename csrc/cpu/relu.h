// CPU ReLU kernels over contiguous buffers (same semantics as csrc/cuda/relu.cuh).
#pragma once

#include <cstdint>

namespace fastconv {
namespace cpu {

template <typename T>
void relu_forward(const T* input, T* output, int64_t n);

template <typename T>
void relu_backward(const T* grad_output, const T* output, T* grad_input, int64_t n);

}  // namespace cpu
}  // namespace fastconv
