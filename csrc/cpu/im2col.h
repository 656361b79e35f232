// Caffe-style im2col / col2im for one image and one group of channels, over
// a range of output pixels so that callers can work on column blocks that
// stay in cache. The column matrix has patch_size() rows (channel, kh, kw)
// and one column per output pixel (oh, ow) of the range, row-major.
#pragma once

#include <cstdint>

#include "../common/conv2d_params.h"

namespace fastconv {
namespace cpu {

// Output pixels [begin, begin + count) in row-major (oh, ow) order.
struct PixelRange {
  int64_t begin;
  int64_t count;
};

// col[(c, kh, kw)][j] = image[c][ih][iw] for output pixel begin + j, zero
// outside the image. `image` points at the group's first channel of one image.
template <typename T>
void im2col(const T* image, T* col, int64_t channels, const Conv2dParams& p, PixelRange pixels);

// The adjoint: image[c][ih][iw] += col[(c, kh, kw)][j]. The caller zeroes
// `image` before the first range.
template <typename T>
void col2im(const T* col, T* image, int64_t channels, const Conv2dParams& p, PixelRange pixels);

// True when the column matrix equals the image itself (1x1 kernel, stride 1,
// no padding), so im2col can be skipped.
inline bool im2col_is_identity(const Conv2dParams& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
         p.pad_w == 0 && p.out_h == p.in_h && p.out_w == p.in_w;
}

}  // namespace cpu
}  // namespace fastconv
