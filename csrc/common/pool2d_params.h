// The geometry of one 2-D max pooling, shared by the CPU, CUDA and SIMT
// kernels and the ATen glue. Torch-free.
//
// Layouts (all contiguous): input [planes, in_h, in_w] where planes = N * C,
// output and indices [planes, out_h, out_w]. Output (oh, ow) looks at input
// rows oh * stride_h - pad_h + kh * dilation_h, kh < kernel_h (likewise for
// columns); taps outside the input are implicit -inf and never chosen.
#pragma once

#include <cstdint>

#include "host_device.h"
#include "index_math.h"

namespace fastconv {

struct Pool2dParams {
  int64_t planes;  // batch * channels
  int64_t in_h;
  int64_t in_w;
  int64_t out_h;
  int64_t out_w;
  int64_t kernel_h;
  int64_t kernel_w;
  int64_t stride_h;
  int64_t stride_w;
  int64_t pad_h;
  int64_t pad_w;
  int64_t dilation_h;
  int64_t dilation_w;

  FASTCONV_HD int64_t in_pixels() const { return in_h * in_w; }
  FASTCONV_HD int64_t out_pixels() const { return out_h * out_w; }
  // 2x2 windows at stride 2 with no padding or dilation: the seed CNNs' pooling.
  FASTCONV_HD bool is_2x2_stride2() const {
    return kernel_h == 2 && kernel_w == 2 && stride_h == 2 && stride_w == 2 && pad_h == 0 &&
           pad_w == 0 && dilation_h == 1 && dilation_w == 1 && out_h * 2 <= in_h && out_w * 2 <= in_w;
  }
};

// torch's window rule, shared by every kernel so that NaN and ties agree:
// a strictly larger value or any NaN takes the window (so the first of equal
// maxima wins, and the last NaN scanned wins).
template <typename A>
FASTCONV_HD bool pool_takes(A value, A best) {
  return value > best || value != value;
}

}  // namespace fastconv
