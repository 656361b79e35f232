#include "im2col.h"

#include <algorithm>

#include "../common/index_math.h"

namespace fastconv {
namespace cpu {
namespace {

// Calls visit(kernel row (c, kh, kw), channel plane offset, dst offset in the
// column row, ih, ow_begin, ow_end, shift_w, valid ow range) for every output
// row segment of the pixel range: the walk im2col and col2im share.
template <typename Visit>
void for_each_row_segment(int64_t channels, const Conv2dParams& p, ItemRange pixels, const Visit& visit) {
  const int64_t first = pixels.begin, last = pixels.begin + pixels.count;
  if (pixels.count <= 0) return;
  const int64_t oh_begin = first / p.out_w, oh_end = (last - 1) / p.out_w + 1;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const int64_t row = (c * p.kernel_h + kh) * p.kernel_w + kw;
        const int64_t shift_w = kw * p.dilation_w - p.pad_w;
        const IndexRange valid = outputs_inside(shift_w, p.stride_w, p.in_w, p.out_w);
        for (int64_t oh = oh_begin; oh < oh_end; ++oh) {
          const int64_t ow_begin = std::max<int64_t>(0, first - oh * p.out_w);
          const int64_t ow_end = std::min(p.out_w, last - oh * p.out_w);
          const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
          // dst[ow] is this row's column for output column ow.
          const int64_t dst = row * pixels.count + oh * p.out_w - first;
          visit(c, dst, ih, ow_begin, ow_end, shift_w, valid);
        }
      }
    }
  }
}

}  // namespace

// Offsets stay integers until they index a valid element: a segment's
// column offset is negative for ow < ow_begin, and its image offset for
// ow < valid.begin.
template <typename T>
void im2col(const T* image, T* col, int64_t channels, const Conv2dParams& p, ItemRange pixels) {
  for_each_row_segment(channels, p, pixels, [&](int64_t c, int64_t dst_offset, int64_t ih, int64_t ow_begin,
                                                int64_t ow_end, int64_t shift_w, IndexRange valid) {
    T* dst = col + dst_offset + ow_begin;  // column of ow_begin
    if (ih < 0 || ih >= p.in_h) {
      std::fill(dst, dst + (ow_end - ow_begin), T(0));
      return;
    }
    const int64_t src_offset = (c * p.in_h + ih) * p.in_w + shift_w;  // image element of ow, less ow * stride
    const int64_t copy_begin = std::clamp(valid.begin, ow_begin, ow_end);
    const int64_t copy_end = std::clamp(valid.end, copy_begin, ow_end);
    std::fill(dst, dst + (copy_begin - ow_begin), T(0));
    if (p.stride_w == 1 && copy_begin < copy_end) {
      std::copy(image + src_offset + copy_begin, image + src_offset + copy_end, col + dst_offset + copy_begin);
    } else {
      for (int64_t ow = copy_begin; ow < copy_end; ++ow) col[dst_offset + ow] = image[src_offset + ow * p.stride_w];
    }
    std::fill(dst + (copy_end - ow_begin), dst + (ow_end - ow_begin), T(0));
  });
}

template <typename T>
void col2im(const T* col, T* image, int64_t channels, const Conv2dParams& p, ItemRange pixels) {
  for_each_row_segment(channels, p, pixels, [&](int64_t c, int64_t src_offset, int64_t ih, int64_t ow_begin,
                                                int64_t ow_end, int64_t shift_w, IndexRange valid) {
    if (ih < 0 || ih >= p.in_h) return;
    const int64_t dst_offset = (c * p.in_h + ih) * p.in_w + shift_w;
    const int64_t add_begin = std::clamp(valid.begin, ow_begin, ow_end);
    const int64_t add_end = std::clamp(valid.end, add_begin, ow_end);
    for (int64_t ow = add_begin; ow < add_end; ++ow) image[dst_offset + ow * p.stride_w] += col[src_offset + ow];
  });
}

template void im2col<float>(const float*, float*, int64_t, const Conv2dParams&, ItemRange);
template void im2col<double>(const double*, double*, int64_t, const Conv2dParams&, ItemRange);
template void col2im<float>(const float*, float*, int64_t, const Conv2dParams&, ItemRange);
template void col2im<double>(const double*, double*, int64_t, const Conv2dParams&, ItemRange);

}  // namespace cpu
}  // namespace fastconv
