// Convolution launchers (declared in conv2d.h): empty-problem handling, the
// workspace query and the dispatch to the direct (conv2d_direct.cuh) or
// im2col + GEMM (conv2d_im2col.cuh) kernels. Torch-free.
#pragma once

#include "conv2d.h"
#include "conv2d_direct.cuh"
#include "conv2d_im2col.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

inline bool conv2d_output_empty(const Conv2dParams& p) {
  return p.batch == 0 || p.out_channels == 0 || p.out_pixels() == 0;
}

inline int64_t conv2d_workspace_bytes_for(ConvPass pass, ConvAlgorithm algorithm, const Conv2dParams& p,
                                          int64_t element_size, GemmMath math) {
  if (conv2d_output_empty(p)) return 0;
  // The bias gradient reads only grad_output (its params carry no input channels).
  if (pass == ConvPass::kBackwardBias) return direct_backward_bias_workspace(p, element_size);
  if (p.in_channels == 0) return 0;
  switch (pass) {
    case ConvPass::kForward:
      return algorithm == ConvAlgorithm::kIm2col ? im2col_forward_workspace(p, element_size, math) : 0;
    case ConvPass::kBackwardInput:
      return algorithm == ConvAlgorithm::kIm2col ? im2col_backward_input_workspace(p, element_size, math) : 0;
    case ConvPass::kBackwardWeight:
      return algorithm == ConvAlgorithm::kIm2col ? im2col_backward_weight_workspace(p, element_size, math)
                                                 : direct_backward_weight_workspace(p, element_size);
    case ConvPass::kBackwardBias:
      return direct_backward_bias_workspace(p, element_size);
  }
  return 0;
}

template <typename T>
const char* conv2d_fill_zero(T* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return nullptr;
  SIMT_LAUNCH(conv2d_zero_kernel<T>, grid_stride_blocks(n), kElementwiseThreads, 0, stream, out, n);
  return launch_status();
}

template <typename T>
const char* conv2d_forward(Target target, ConvAlgorithm algorithm, const T* input, const T* weight, const T* bias,
                           T* output, const Conv2dParams& p, bool relu, GemmMath math, void* workspace) {
  const cudaStream_t s = stream_of(target);
  if (conv2d_output_empty(p)) return nullptr;
  if (p.in_channels == 0) {  // no taps: the output is (the ReLU of) the bias, or zero
    if (bias == nullptr) return conv2d_fill_zero(output, p.batch * p.out_channels * p.out_pixels(), s);
  }
  if (algorithm == ConvAlgorithm::kIm2col && p.in_channels > 0) {
    return conv2d_im2col_forward(input, weight, bias, output, p, relu, math, workspace, s);
  }
  return conv2d_direct_forward(input, weight, bias, output, p, relu, s);
}

template <typename T>
const char* conv2d_backward_input(Target target, ConvAlgorithm algorithm, const T* grad_output, const T* weight,
                                  T* grad_input, const Conv2dParams& p, GemmMath math, void* workspace) {
  const cudaStream_t s = stream_of(target);
  const int64_t in_elems = p.batch * p.in_channels * p.in_h * p.in_w;
  if (in_elems == 0) return nullptr;
  if (p.out_channels == 0 || p.out_pixels() == 0) return conv2d_fill_zero(grad_input, in_elems, s);
  if (algorithm == ConvAlgorithm::kIm2col) {
    return conv2d_im2col_backward_input(grad_output, weight, grad_input, p, math, workspace, s);
  }
  return conv2d_direct_backward_input(grad_output, weight, grad_input, p, s);
}

template <typename T>
const char* conv2d_backward_weight(Target target, ConvAlgorithm algorithm, const T* grad_output, const T* input,
                                   T* grad_weight, const Conv2dParams& p, GemmMath math, void* workspace) {
  const cudaStream_t s = stream_of(target);
  const int64_t weight_elems = p.out_channels * p.patch_size();
  if (weight_elems == 0) return nullptr;
  if (conv2d_output_empty(p)) return conv2d_fill_zero(grad_weight, weight_elems, s);  // empty sum
  if (algorithm == ConvAlgorithm::kIm2col) {
    return conv2d_im2col_backward_weight(grad_output, input, grad_weight, p, math, workspace, s);
  }
  return conv2d_direct_backward_weight(grad_output, input, grad_weight, p, workspace, s);
}

template <typename T>
const char* conv2d_backward_bias(Target target, const T* grad_output, T* grad_bias, const Conv2dParams& p,
                                 void* workspace) {
  const cudaStream_t s = stream_of(target);
  if (p.out_channels == 0) return nullptr;
  if (conv2d_output_empty(p)) return conv2d_fill_zero(grad_bias, p.out_channels, s);
  return launch_backward_bias(grad_output, grad_bias, p, workspace, s);
}

// The declared (non-inline) workspace query: expanded in exactly one unit per namespace.
#define FASTCONV_DEFINE_CONV2D_WORKSPACE                                                                  \
  int64_t conv2d_workspace_bytes(Target, ConvPass pass, ConvAlgorithm algorithm, const Conv2dParams& p,   \
                                 int64_t element_size, GemmMath math) {                                   \
    return conv2d_workspace_bytes_for(pass, algorithm, p, element_size, math);                            \
  }

#define FASTCONV_INSTANTIATE_CONV2D(T)                                                                     \
  template const char* conv2d_forward<T>(Target, ConvAlgorithm, const T*, const T*, const T*, T*,          \
                                         const Conv2dParams&, bool, GemmMath, void*);                      \
  template const char* conv2d_backward_input<T>(Target, ConvAlgorithm, const T*, const T*, T*,             \
                                                const Conv2dParams&, GemmMath, void*);                     \
  template const char* conv2d_backward_weight<T>(Target, ConvAlgorithm, const T*, const T*, T*,            \
                                                 const Conv2dParams&, GemmMath, void*);                    \
  template const char* conv2d_backward_bias<T>(Target, const T*, T*, const Conv2dParams&, void*);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
