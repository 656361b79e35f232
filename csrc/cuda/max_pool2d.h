// Launchers of the max pooling kernels (csrc/cuda/max_pool2d.cuh), declared
// for the CUDA build (namespace cuda) and the SIMT build (namespace simt).
// Each returns nullptr on success or the CUDA error message. Tensors are
// contiguous and follow csrc/common/pool2d_params.h.
#pragma once

#include <cstdint>

#include "../common/pool2d_params.h"
#include "../common/target.h"

#define FASTCONV_DECLARE_MAX_POOL2D_LAUNCHERS                                                   \
  template <typename T>                                                                         \
  const char* max_pool2d_forward(Target target, const T* input, T* output, int64_t* indices,    \
                                 const Pool2dParams& p);                                        \
  template <typename T>                                                                         \
  const char* max_pool2d_backward(Target target, const T* grad_output, const int64_t* indices,  \
                                  T* grad_input, const Pool2dParams& p);

namespace fastconv {
namespace cuda {
FASTCONV_DECLARE_MAX_POOL2D_LAUNCHERS
}
namespace simt {
FASTCONV_DECLARE_MAX_POOL2D_LAUNCHERS
}
}  // namespace fastconv
