// Caffe-style im2col / col2im for one image and one group of channels, over
// a range of output pixels so that callers can work on column blocks that
// stay in cache. The column matrix has patch_size() rows (channel, kh, kw)
// and one column per output pixel (oh, ow) of the range, row-major.
#pragma once

#include <cstdint>

#include "../common/conv2d_params.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {

// col[(c, kh, kw)][j] = image[c][ih][iw] for output pixel pixels.begin + j,
// numbered row-major (oh, ow), zero outside the image. `image` points at the
// group's first channel of one image.
template <typename T>
void im2col(const T* image, T* col, int64_t channels, const Conv2dParams& p, ItemRange pixels);

// The adjoint: image[c][ih][iw] += col[(c, kh, kw)][j]. The caller zeroes
// `image` before the first range.
template <typename T>
void col2im(const T* col, T* image, int64_t channels, const Conv2dParams& p, ItemRange pixels);

}  // namespace cpu
}  // namespace fastconv
