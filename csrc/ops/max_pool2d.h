// What the rest of the glue needs of the max pooling ops: their geometry.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common/pool2d_params.h"

namespace fastconv {

// The checked geometry of a max pooling of an input of `input_size` (N, C, H, W),
// exactly as the ops compute it: torch's argument rules (one value for both
// sides, an empty stride for the kernel's) and errors, `op` naming the caller.
Pool2dParams max_pool2d_params(at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, const char* op);

// taps, for max_pool2d_backward_from_taps: uint8, on grad_output's device.
void check_taps(const at::Tensor& taps, const at::Tensor& grad_output, const char* op);

}  // namespace fastconv
