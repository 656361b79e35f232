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

// The same pair with a stored mask (keep_bits.h, keep_bits_bytes(n) bytes)
// in place of the output: the forward writes it, the backward reads it.
template <typename T>
void relu_forward_storing_mask(Target, const T* input, T* output, uint8_t* keep_bits, int64_t n);

template <typename T>
void relu_backward_from_mask(Target, const T* grad_output, const uint8_t* keep_bits, T* grad_input, int64_t n);

}  // namespace cpu
}  // namespace fastconv
