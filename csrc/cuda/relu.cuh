// ReLU kernels. Semantics are torch's exactly:
//   forward  y = x < 0 ? 0 : x        (NaN and -0.0 pass through)
//   backward dx = y <= 0 ? 0 : dy     (the gradient at 0 is 0; NaN passes dy)
#pragma once

#include "elementwise.cuh"
#include "relu.h"

namespace fastconv {
namespace SIMT_KERNEL_NS {

struct ReluForwardOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A x, A /*unused*/) const {
    return x < A(0) ? A(0) : x;
  }
};

struct ReluBackwardOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A grad, A out) const {
    return out <= A(0) ? A(0) : grad;
  }
};

template <typename T>
const char* relu_forward(const T* input, T* output, int64_t n, void* stream) {
  return launch_binary_map(input, input, output, n, ReluForwardOp{}, stream);
}

template <typename T>
const char* relu_backward(const T* grad_output, const T* output, T* grad_input, int64_t n,
                          void* stream) {
  return launch_binary_map(grad_output, output, grad_input, n, ReluBackwardOp{}, stream);
}

#define FASTCONV_INSTANTIATE_RELU(T)                                                 \
  template const char* relu_forward<T>(const T*, T*, int64_t, void*);               \
  template const char* relu_backward<T>(const T*, const T*, T*, int64_t, void*);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
