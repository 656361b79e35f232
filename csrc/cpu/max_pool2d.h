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

// What autograd saves instead of int64 indices (8x less memory): each
// output's tap, the position of its maximum within its window,
// kh * kernel_w + kw, as one byte. kNoTap marks a window with no in-bounds
// tap (its -inf came from padding alone). For windows of up to kMaxTaps taps.
constexpr uint8_t kNoTap = 255;
constexpr int64_t kMaxTaps = 255;

template <typename T>
void max_pool2d_forward_taps(Target, const T* input, T* output, uint8_t* taps, const Pool2dParams& p);

// grad_input from each output's gradient at its tap; kNoTap and taps past
// the window's last pass nothing.
template <typename T>
void max_pool2d_backward_from_taps(Target, const T* grad_output, const uint8_t* taps, T* grad_input,
                                   const Pool2dParams& p);

}  // namespace cpu
}  // namespace fastconv
