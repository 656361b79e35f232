// Depthwise convolutions (one input channel per group) with 3x3, 5x5 or 7x7
// kernels for the direct algorithm: a row of outputs at a time with its taps
// in registers, over a zero-padded copy of the plane. The direct kernels hand
// these layers over wherever depthwise_runs says they apply.
#pragma once

#include "../common/conv2d_params.h"

namespace fastconv {
namespace cpu {

enum class DepthwisePass { kForward, kBackwardInput, kBackwardWeight };

// One input channel per group and a square kernel of 3, 5 or 7, with a
// horizontal stride of 1 or 2 (the input gradient: stride 1 both ways); any
// padding, dilation, vertical stride and channel multiplier.
bool depthwise_runs(const Conv2dParams& p, DepthwisePass pass);

template <typename T>
void depthwise_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                       bool relu);
template <typename T>
void depthwise_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p);
template <typename T>
void depthwise_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p);

}  // namespace cpu
}  // namespace fastconv
