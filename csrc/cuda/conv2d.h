// Launchers of the convolution kernels (csrc/cuda/conv2d*.cuh) for the CUDA
// and SIMT builds. T is float, double, half_t or bfloat16_t (the last two on
// CUDA only; they accumulate in fp32). Tensors follow csrc/common/conv2d_params.h.
//
// `math` says whether the im2col GEMMs run on CUDA cores or tensor cores
// (GemmMath, csrc/common/conv2d_params.h): the caller has checked that the
// device has them (sm_80+ for every type but double). Scratch memory comes
// from the caller (the ATen glue allocates it with
// torch's caching allocator): conv2d_workspace_bytes says how much a pass
// needs with that math; `workspace` points at that many bytes (16-byte aligned) on the
// device, or is null when it is 0. Each launcher returns nullptr on success
// or the CUDA error message. Every kernel reduces in an order fixed by the
// launch configuration (no floating-point atomics), so results are
// deterministic without a separate mode.
#pragma once

#include <cstdint>

#include "../common/conv2d_params.h"
#include "../common/dtypes.h"
#include "../common/target.h"

#define FASTCONV_DECLARE_CONV2D_LAUNCHERS                                                          \
  int64_t conv2d_workspace_bytes(Target target, ConvPass pass, ConvAlgorithm algorithm,            \
                                 const Conv2dParams& p, int64_t element_size, GemmMath math);      \
  /* relu: conv2d_relu's epilogue, bias then ReLU before each store (false: plain conv2d). */     \
  template <typename T>                                                                            \
  const char* conv2d_forward(Target target, ConvAlgorithm algorithm, const T* input,               \
                             const T* weight, const T* bias, T* output, const Conv2dParams& p,     \
                             bool relu, GemmMath math, void* workspace);                           \
  template <typename T>                                                                            \
  const char* conv2d_backward_input(Target target, ConvAlgorithm algorithm, const T* grad_output,  \
                                    const T* weight, T* grad_input, const Conv2dParams& p,         \
                                    GemmMath math, void* workspace);                               \
  template <typename T>                                                                            \
  const char* conv2d_backward_weight(Target target, ConvAlgorithm algorithm, const T* grad_output, \
                                     const T* input, T* grad_weight, const Conv2dParams& p,        \
                                     GemmMath math, void* workspace);                              \
  template <typename T>                                                                            \
  const char* conv2d_backward_bias(Target target, const T* grad_output, T* grad_bias,              \
                                   const Conv2dParams& p, void* workspace);

namespace fastconv {
namespace cuda {
FASTCONV_DECLARE_CONV2D_LAUNCHERS
}
namespace simt {
FASTCONV_DECLARE_CONV2D_LAUNCHERS
// The compute capability the SIMT runtime stands for, major * 10 + minor
// (FASTCONV_SIMT_ARCH, else 90; fastconv._C.simt_set_compute_capability).
int device_compute_capability();
}
}  // namespace fastconv
