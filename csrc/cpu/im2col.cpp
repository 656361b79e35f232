#include "im2col.h"

#include <cstring>

#include "conv2d_geometry.h"

namespace fastconv {
namespace cpu {

template <typename T>
void im2col(const T* image, T* col, int64_t channels, const Conv2dParams& p) {
  const int64_t out_pixels = p.out_pixels();
  for (int64_t c = 0; c < channels; ++c) {
    const T* plane = image + c * p.in_h * p.in_w;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        T* row = col + ((c * p.kernel_h + kh) * p.kernel_w + kw) * out_pixels;
        const int64_t shift_w = kw * p.dilation_w - p.pad_w;
        const ValidRange cols = valid_outputs(shift_w, p.stride_w, p.in_w, p.out_w);
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          T* dst = row + oh * p.out_w;
          const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) {
            std::memset(dst, 0, sizeof(T) * p.out_w);
            continue;
          }
          const T* src = plane + ih * p.in_w + shift_w;
          for (int64_t ow = 0; ow < cols.begin; ++ow) dst[ow] = T(0);
          if (p.stride_w == 1) {
            std::memcpy(dst + cols.begin, src + cols.begin, sizeof(T) * (cols.end - cols.begin));
          } else {
            for (int64_t ow = cols.begin; ow < cols.end; ++ow) dst[ow] = src[ow * p.stride_w];
          }
          for (int64_t ow = cols.end; ow < p.out_w; ++ow) dst[ow] = T(0);
        }
      }
    }
  }
}

template <typename T>
void col2im(const T* col, T* image, int64_t channels, const Conv2dParams& p) {
  const int64_t out_pixels = p.out_pixels();
  for (int64_t c = 0; c < channels; ++c) {
    T* plane = image + c * p.in_h * p.in_w;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const T* row = col + ((c * p.kernel_h + kh) * p.kernel_w + kw) * out_pixels;
        const int64_t shift_w = kw * p.dilation_w - p.pad_w;
        const ValidRange cols = valid_outputs(shift_w, p.stride_w, p.in_w, p.out_w);
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          const T* src = row + oh * p.out_w;
          T* dst = plane + ih * p.in_w + shift_w;
          if (p.stride_w == 1) {
            for (int64_t ow = cols.begin; ow < cols.end; ++ow) dst[ow] += src[ow];
          } else {
            for (int64_t ow = cols.begin; ow < cols.end; ++ow) dst[ow * p.stride_w] += src[ow];
          }
        }
      }
    }
  }
}

template void im2col<float>(const float*, float*, int64_t, const Conv2dParams&);
template void im2col<double>(const double*, double*, int64_t, const Conv2dParams&);
template void col2im<float>(const float*, float*, int64_t, const Conv2dParams&);
template void col2im<double>(const double*, double*, int64_t, const Conv2dParams&);

}  // namespace cpu
}  // namespace fastconv
