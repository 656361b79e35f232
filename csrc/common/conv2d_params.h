// The geometry of one 2-D convolution, shared by the CPU, CUDA and SIMT
// kernels and the ATen glue. Torch-free.
//
// Layouts (all contiguous):
//   input       [batch, in_channels, in_h, in_w]                     (NCHW)
//   weight      [out_channels, in_channels / groups, kernel_h, kernel_w]
//   bias        [out_channels] (may be null)
//   output      [batch, out_channels, out_h, out_w]
// Output pixel (oh, ow) reads input rows oh * stride_h - pad_h + kh * dilation_h
// (and likewise for columns); taps outside the input read zero. Only the
// top/left padding is stored: out_h/out_w fix the bottom/right, which is how
// asymmetric "same" padding of even kernels is expressed.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastconv {

// kWinograd is CPU-only (csrc/cpu/conv2d_winograd.cpp); the op layer never
// hands it to the CUDA launchers.
enum class ConvAlgorithm : int { kDirect = 0, kIm2col = 1, kWinograd = 2 };

// How the im2col GEMMs multiply: FMAs on CUDA cores, or mma.sync on tensor
// cores (half/bfloat16 as f16/bf16, float as tf32; double has none). The op
// layer decides (csrc/ops/conv2d.cpp: the device's compute capability and
// torch's TF32 rule) and the launchers follow; the direct kernels ignore it.
enum class GemmMath : int { kCudaCore = 0, kTensorCore = 1 };

enum class ConvPass : int { kForward = 0, kBackwardInput = 1, kBackwardWeight = 2, kBackwardBias = 3 };

struct Conv2dParams {
  int64_t batch;
  int64_t in_channels;
  int64_t in_h;
  int64_t in_w;
  int64_t out_channels;
  int64_t kernel_h;
  int64_t kernel_w;
  int64_t out_h;
  int64_t out_w;
  int64_t stride_h;
  int64_t stride_w;
  int64_t pad_h;  // top
  int64_t pad_w;  // left
  int64_t dilation_h;
  int64_t dilation_w;
  int64_t groups;

  FASTCONV_HD int64_t in_channels_per_group() const { return in_channels / groups; }
  FASTCONV_HD int64_t out_channels_per_group() const { return out_channels / groups; }
  // Rows of the im2col matrix of one group: C/g * R * S.
  FASTCONV_HD int64_t patch_size() const { return in_channels_per_group() * kernel_h * kernel_w; }
  FASTCONV_HD int64_t out_pixels() const { return out_h * out_w; }
  // A 1x1, stride-1, unpadded convolution: its im2col matrix is the input
  // itself, so im2col can be skipped.
  FASTCONV_HD bool im2col_is_identity() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0 &&
           out_h == in_h && out_w == in_w;
  }
};

}  // namespace fastconv
