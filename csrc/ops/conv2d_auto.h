// The convolution algorithm conv2d's algorithm="auto" runs, per backend and pass.
#pragma once

#include "../common/conv2d_params.h"
#include "common.h"

namespace fastconv {

ConvAlgorithm auto_algorithm(Backend backend, ConvPass pass, const Conv2dParams& p);

}  // namespace fastconv
