// What the rest of the glue needs of the convolution ops: their geometry.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common/conv2d_params.h"

namespace fastconv {

// The checked geometry of a convolution, exactly as the ops compute it (torch's
// errors for bad arguments; `op` names the caller). padding: [top, bottom, left, right].
Conv2dParams conv2d_params(at::IntArrayRef input_size, at::IntArrayRef weight_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, const char* op);

}  // namespace fastconv
