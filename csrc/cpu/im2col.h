// Caffe-style im2col / col2im for one image and one group of channels.
// The column matrix has patch_size() rows (channel, kh, kw) and
// out_pixels() columns (oh, ow), row-major.
#pragma once

#include <cstdint>

#include "../common/conv2d_params.h"

namespace fastconv {
namespace cpu {

// col[(c, kh, kw)][(oh, ow)] = image[c][ih][iw], zero outside the image.
// `image` points at the group's first channel of one image.
template <typename T>
void im2col(const T* image, T* col, int64_t channels, const Conv2dParams& p);

// The adjoint: image[c][ih][iw] += col[(c, kh, kw)][(oh, ow)]. The caller
// zeroes `image` first.
template <typename T>
void col2im(const T* col, T* image, int64_t channels, const Conv2dParams& p);

// True when the column matrix equals the image itself (1x1 kernel, stride 1,
// no padding), so im2col can be skipped.
inline bool im2col_is_identity(const Conv2dParams& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
         p.pad_w == 0 && p.out_h == p.in_h && p.out_w == p.in_w;
}

}  // namespace cpu
}  // namespace fastconv
