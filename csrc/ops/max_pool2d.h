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

// Every check max_pool2d_backward_from_taps makes of its arguments (the cpu
// backend, uint8 taps of grad_output's shape on its device, the pooled shape
// of input_size, windows of up to 255 taps), and the geometry: one place for
// the op and its autograd kernel, which takes another route when it records.
Pool2dParams check_backward_from_taps(const at::Tensor& grad_output, const at::Tensor& taps,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                                      c10::string_view backend_name);

}  // namespace fastconv
