// Launchers of the ReLU kernels (csrc/cuda/relu.cuh), declared for the CUDA
// build (namespace cuda) and the SIMT build (namespace simt). Each returns
// nullptr on success or the CUDA error message.
#pragma once

#include <cstdint>

#include "../common/target.h"

#define FASTCONV_DECLARE_RELU_LAUNCHERS                                                  \
  template <typename T>                                                                  \
  const char* relu_forward(Target target, const T* input, T* output, int64_t n);         \
  template <typename T>                                                                  \
  const char* relu_backward(Target target, const T* grad_output, const T* output, T* grad_input, \
                            int64_t n);

namespace fastconv {
namespace cuda {
FASTCONV_DECLARE_RELU_LAUNCHERS
}
namespace simt {
FASTCONV_DECLARE_RELU_LAUNCHERS
}
}  // namespace fastconv
