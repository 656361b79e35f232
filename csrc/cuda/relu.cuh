// ReLU kernels. Semantics are torch's on a GPU exactly:
//   forward  y = x <= 0 ? 0 : x       (NaN passes; -0.0 gives +0.0, as torch's
//                                      CUDA ReLU does, where its CPU ReLU
//                                      passes -0.0)
//   backward dx = y <= 0 ? 0 : dy     (the gradient at 0 is 0; NaN passes dy)
#pragma once

#include "elementwise.cuh"
#include "relu.h"

namespace fastconv {
namespace SIMT_KERNEL_NS {

struct ReluForwardOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A x, A /*unused*/) const {
    return relu_of(x);
  }
};

struct ReluBackwardOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A grad, A out) const {
    return out <= A(0) ? A(0) : grad;
  }
};

template <typename T>
const char* relu_forward(Target target, const T* input, T* output, int64_t n) {
  return launch_binary_map(input, input, output, n, ReluForwardOp{}, target);
}

template <typename T>
const char* relu_backward(Target target, const T* grad_output, const T* output, T* grad_input, int64_t n) {
  return launch_binary_map(grad_output, output, grad_input, n, ReluBackwardOp{}, target);
}

#define FASTCONV_INSTANTIATE_RELU(T)                                                 \
  template const char* relu_forward<T>(Target, const T*, T*, int64_t);               \
  template const char* relu_backward<T>(Target, const T*, const T*, T*, int64_t);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
