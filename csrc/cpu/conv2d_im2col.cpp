// im2col + GEMM convolution. Per image and group, with col the
// patch_size() x out_pixels() column matrix of the group's input channels:
//   forward          Y_g  = bias + W_g * col               (then ReLU for conv2d_relu:
//                                                           the GEMM's epilogue)
//   backward input   col  = W_g^T * dY_g, then col2im into dX
//   backward weight  dW_g += dY_g * col^T, summed over the batch
// The GEMM is single-threaded; parallelism is over images (forward, backward
// input) or over batch chunks with private partial sums (backward weight),
// so no two threads ever write the same element.
#include <algorithm>
#include <vector>

#include "conv2d_algorithms.h"
#include "gemm.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// The column matrix of one image and group: the image itself for 1x1
// stride-1 unpadded kernels, else im2col into `scratch`.
template <typename T>
const T* columns_of(const T* group_input, std::vector<T>& scratch, const Conv2dParams& p) {
  if (im2col_is_identity(p)) return group_input;
  scratch.resize(p.patch_size() * p.out_pixels());
  im2col(group_input, scratch.data(), p.in_channels_per_group(), p);
  return scratch.data();
}

}  // namespace

template <typename T>
void im2col_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t kp = p.patch_size(), pixels = p.out_pixels();
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t n = begin; n < end; ++n) {
      T* out_image = output + n * p.out_channels * pixels;
      if (bias != nullptr) {
        for (int64_t oc = 0; oc < p.out_channels; ++oc) std::fill_n(out_image + oc * pixels, pixels, bias[oc]);
      }
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* col = columns_of(input + (n * p.in_channels + g * cg) * p.in_h * p.in_w, scratch, p);
        gemm<T>(og, pixels, kp, {weight + g * og * kp, kp, 1}, {col, pixels, 1},
                {out_image + g * og * pixels, pixels, 1}, bias != nullptr, relu);
      }
    }
  });
}

template <typename T>
void im2col_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t kp = p.patch_size(), pixels = p.out_pixels(), plane = p.in_h * p.in_w;
  const bool identity = im2col_is_identity(p);
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col;
    if (!identity) col.resize(kp * pixels);
    for (int64_t n = begin; n < end; ++n) {
      T* grad_image = grad_input + n * p.in_channels * plane;
      if (!identity) std::fill_n(grad_image, p.in_channels * plane, T(0));
      for (int64_t g = 0; g < p.groups; ++g) {
        T* grad_group = grad_image + g * cg * plane;
        // W_g^T: element (patch row i, output channel k) sits at W_g[k][i].
        T* dst = identity ? grad_group : col.data();
        gemm<T>(kp, pixels, og, {weight + g * og * kp, 1, kp},
                {grad_output + (n * p.out_channels + g * og) * pixels, pixels, 1}, {dst, pixels, 1}, false);
        if (!identity) col2im(col.data(), grad_group, cg, p);
      }
    }
  });
}

template <typename T>
void im2col_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t kp = p.patch_size(), pixels = p.out_pixels();
  const int64_t weight_numel = p.out_channels * kp;
  // Batch chunks, one per thread: chunk 0 sums into grad_weight, the others
  // into private buffers that are added afterwards in chunk order.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(p.batch, at::get_num_threads()));
  std::vector<T> partials((chunks - 1) * weight_numel);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<T> scratch;
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* sum = chunk == 0 ? grad_weight : partials.data() + (chunk - 1) * weight_numel;
      const int64_t n_begin = p.batch * chunk / chunks, n_end = p.batch * (chunk + 1) / chunks;
      if (n_begin == n_end) std::fill_n(sum, weight_numel, T(0));
      for (int64_t n = n_begin; n < n_end; ++n) {
        for (int64_t g = 0; g < p.groups; ++g) {
          const T* col = columns_of(input + (n * p.in_channels + g * cg) * p.in_h * p.in_w, scratch, p);
          // dW_g^T (kp x og) = col (kp x pixels) * dY_g^T (pixels x og): the
          // small patch dimension becomes M, which wastes less of the tiles.
          gemm<T>(kp, og, pixels, {col, pixels, 1},
                  {grad_output + (n * p.out_channels + g * og) * pixels, 1, pixels},
                  {sum + g * og * kp, 1, kp}, n != n_begin);
        }
      }
    }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const T* part = partials.data() + (chunk - 1) * weight_numel;
    for (int64_t i = 0; i < weight_numel; ++i) grad_weight[i] += part[i];
  }
}

#define FASTCONV_INSTANTIATE_IM2COL(T)                                                                 \
  template void im2col_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool);        \
  template void im2col_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);                 \
  template void im2col_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_IM2COL(float)
FASTCONV_INSTANTIATE_IM2COL(double)

}  // namespace cpu
}  // namespace fastconv
