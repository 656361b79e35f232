// CPU max pooling kernels (same semantics and indices as csrc/cuda/max_pool2d.cuh).
// T is float or double; tensors are contiguous and follow
// csrc/common/pool2d_params.h. Parallel over the N * C planes.
#pragma once

#include <cstdint>

#include "../common/pool2d_params.h"
#include "../common/target.h"

namespace fastconv {
namespace cpu {

template <typename T>
void max_pool2d_forward(Target, const T* input, T* output, int64_t* indices, const Pool2dParams& p);

// grad_input = 0, then each output's gradient is added at its stored index.
// Outputs whose window has no in-bounds tap (their -inf came from padding
// alone) pass no gradient, as in the CUDA gather; nor do indices outside the
// plane. Indices are those max_pool2d returned for the same geometry (the
// 2x2 / stride 2 path, like the CUDA gather, only looks inside each window).
template <typename T>
void max_pool2d_backward(Target, const T* grad_output, const int64_t* indices, T* grad_input,
                         const Pool2dParams& p);

}  // namespace cpu
}  // namespace fastconv
