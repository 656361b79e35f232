// The convolution algorithm conv2d's algorithm="auto" runs, per backend and pass.
#pragma once

#include "../common/conv2d_params.h"
#include "common.h"

namespace fastconv {

// tensor_cores: whether the im2col GEMMs would run on tensor cores (half,
// bfloat16, or float under the TF32 rule, on a GPU that has them).
ConvAlgorithm auto_algorithm(Backend backend, ConvPass pass, const Conv2dParams& p, bool tensor_cores);

}  // namespace fastconv
