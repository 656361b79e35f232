// CPU convolution kernels (csrc/cpu/conv2d_*.cpp): a direct algorithm and
// im2col + our own blocked GEMM, forward and backward. T is float or double;
// tensors follow csrc/common/conv2d_params.h. Scratch memory is the kernels'
// own business. Parallel over the batch and output channels.
#pragma once

#include <cstdint>

#include "../common/conv2d_params.h"
#include "../common/target.h"

namespace fastconv {
namespace cpu {

// Why algorithm "winograd" (F(2x2, 3x3)) cannot run this geometry, or nullptr
// when it can: the transforms are those of a 3x3 kernel sliding one pixel at
// a time. Padding and groups are free.
inline const char* winograd_ineligibility(const Conv2dParams& p) {
  if (p.kernel_h != 3 || p.kernel_w != 3) return "it needs a 3x3 kernel";
  if (p.stride_h != 1 || p.stride_w != 1) return "it needs stride 1";
  if (p.dilation_h != 1 || p.dilation_w != 1) return "it needs dilation 1";
  return nullptr;
}

// relu: conv2d_relu's epilogue (torch's ReLU after the bias, before the
// output leaves the kernel); false for plain conv2d.
template <typename T>
void conv2d_forward(Target, ConvAlgorithm algorithm, const T* input, const T* weight, const T* bias, T* output,
                    const Conv2dParams& p, bool relu);

template <typename T>
void conv2d_backward_input(Target, ConvAlgorithm algorithm, const T* grad_output, const T* weight, T* grad_input,
                           const Conv2dParams& p);

template <typename T>
void conv2d_backward_weight(Target, ConvAlgorithm algorithm, const T* grad_output, const T* input, T* grad_weight,
                            const Conv2dParams& p);

template <typename T>
void conv2d_backward_bias(Target, const T* grad_output, T* grad_bias, const Conv2dParams& p);

}  // namespace cpu
}  // namespace fastconv
