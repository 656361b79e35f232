// The three CPU convolution algorithms behind csrc/cpu/conv2d.h, which
// dispatches on ConvAlgorithm. Same tensor layouts and contracts.
#pragma once

#include "../common/conv2d_params.h"

namespace fastconv {
namespace cpu {

// Direct: loops over the output (or input) planes, innermost over a row of
// pixels so the multiply-adds vectorise; no scratch beyond one row (the
// depthwise kernels it hands over to pad a copy of one plane).
template <typename T>
void direct_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu);
template <typename T>
void direct_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p);
template <typename T>
void direct_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p);

// im2col + GEMM (csrc/cpu/gemm.h), one image and group at a time.
template <typename T>
void im2col_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu);
template <typename T>
void im2col_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p);
template <typename T>
void im2col_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p);

// Winograd F(2x2, 3x3): 16 batched GEMMs over channels (csrc/cpu/gemm.h) on
// transformed tiles. Only for geometries winograd_ineligibility() accepts.
template <typename T>
void winograd_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                      bool relu);
template <typename T>
void winograd_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p);
template <typename T>
void winograd_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p);

}  // namespace cpu
}  // namespace fastconv
