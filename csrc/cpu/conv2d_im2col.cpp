// im2col + GEMM convolution. Per image and group, with col the
// patch_size() x out_pixels() column matrix of the group's input channels:
//   forward          Y_g  = bias + W_g * col               (then ReLU for conv2d_relu:
//                                                           the GEMM's epilogue)
//   backward input   col  = W_g^T * dY_g, then col2im into dX
//   backward weight  dW_g += dY_g * col^T, summed over the batch
// col is never built whole: each image is cut into blocks of output pixels
// whose columns fit in cache, and each block is made (or, for backward
// input, consumed) right before (after) its GEMM, while it is still there.
// The weights are packed for the GEMM once per call and shared by all
// threads. The GEMM is single-threaded; parallelism is over (image, pixel
// block) units (forward; backward weight, in chunks with private partial
// sums) or over images (backward input, whose blocks' col2im halos
// overlap), so no two threads ever write the same element.
#include <algorithm>
#include <vector>

#include "conv2d_algorithms.h"
#include "gemm.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Elements of one column block at most (1 MiB of float). Measured on the
// seed layers, forward and input gradient run alike from 32K to 256K; the
// weight gradient, whose K is the block, prefers large blocks (fewer passes
// over dW).
constexpr int64_t kColumnBlockElements = 256 * 1024;

// An image's output pixels cut into equal blocks (a multiple of
// kGemmColumnAlignment) that fit the budget, so that only the last block can
// have partial GEMM tiles. Blocks are numbered, so that work can be split over
// (image, block) units and a single image still uses every thread.
struct PixelBlocks {
  int64_t pixels, size, count;
  PixelRange operator[](int64_t i) const { return {i * size, std::min(size, pixels - i * size)}; }
};

PixelBlocks pixel_blocks(const Conv2dParams& p) {
  const int64_t pixels = p.out_pixels();
  if (pixels <= 0) return {0, 1, 0};
  const int64_t align = kGemmColumnAlignment;
  const int64_t fit = std::max(align, kColumnBlockElements / std::max<int64_t>(1, p.patch_size()));
  const int64_t count = (pixels + fit - 1) / fit, even = (pixels + count - 1) / count;
  const int64_t size = std::min(pixels, (even + align - 1) / align * align);
  return {pixels, size, (pixels + size - 1) / size};
}

// The column block of one image and group: the image itself for 1x1
// stride-1 unpadded kernels (a view with row stride out_pixels()), else
// im2col into `scratch` (row stride range.count).
template <typename T>
MatrixRef<const T> columns_of(const T* group_input, PixelRange range, std::vector<T>& scratch,
                              const Conv2dParams& p) {
  if (p.im2col_is_identity()) return {group_input + range.begin, p.out_pixels(), 1};
  scratch.resize(p.patch_size() * range.count);
  im2col(group_input, scratch.data(), p.in_channels_per_group(), p, range);
  return {scratch.data(), range.count, 1};
}

// W_g (forward) or W_g^T (backward input) of every group, packed once.
template <typename T>
std::vector<PackedA<T>> pack_weights(const T* weight, const Conv2dParams& p, bool transposed) {
  const int64_t og = p.out_channels_per_group(), kp = p.patch_size();
  std::vector<PackedA<T>> packed;
  packed.reserve(p.groups);
  for (int64_t g = 0; g < p.groups; ++g) {
    const T* w = weight + g * og * kp;
    packed.push_back(transposed ? PackedA<T>(kp, og, {w, 1, kp}) : PackedA<T>(og, kp, {w, kp, 1}));
  }
  return packed;
}

}  // namespace

template <typename T>
void im2col_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group(), pixels = p.out_pixels();
  const std::vector<PackedA<T>> packed_weights = pack_weights(weight, p, /*transposed=*/false);
  const PixelBlocks blocks = pixel_blocks(p);
  // Units (image, pixel block) write disjoint output columns.
  at::parallel_for(0, p.batch * blocks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / blocks.count;
      const PixelRange range = blocks[unit % blocks.count];
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_input = input + (n * p.in_channels + g * cg) * p.in_h * p.in_w;
        T* out = output + (n * p.out_channels + g * og) * pixels + range.begin;
        if (bias != nullptr) {
          for (int64_t oc = 0; oc < og; ++oc) std::fill_n(out + oc * pixels, range.count, bias[g * og + oc]);
        }
        gemm<T>(packed_weights[g], range.count, columns_of(group_input, range, scratch, p), {out, pixels, 1},
                bias != nullptr, relu);
      }
    }
  });
}

template <typename T>
void im2col_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t pixels = p.out_pixels(), plane = p.in_h * p.in_w;
  const bool identity = p.im2col_is_identity();
  const std::vector<PackedA<T>> packed_weights = pack_weights(weight, p, /*transposed=*/true);
  const PixelBlocks blocks = pixel_blocks(p);
  // Per image: the blocks' col2im halos overlap, so one thread owns an image.
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col;
    for (int64_t n = begin; n < end; ++n) {
      T* grad_image = grad_input + n * p.in_channels * plane;
      if (!identity) std::fill_n(grad_image, p.in_channels * plane, T(0));
      for (int64_t g = 0; g < p.groups; ++g) {
        T* grad_group = grad_image + g * cg * plane;
        const T* dy = grad_output + (n * p.out_channels + g * og) * pixels;
        for (int64_t b = 0; b < blocks.count; ++b) {
          const PixelRange range = blocks[b];
          const MatrixRef<const T> dy_block{dy + range.begin, pixels, 1};
          if (identity) {
            gemm<T>(packed_weights[g], range.count, dy_block, {grad_group + range.begin, pixels, 1}, false);
            continue;
          }
          col.resize(p.patch_size() * range.count);
          gemm<T>(packed_weights[g], range.count, dy_block, {col.data(), range.count, 1}, false);
          col2im(col.data(), grad_group, cg, p, range);
        }
      }
    }
  });
}

template <typename T>
void im2col_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t kp = p.patch_size(), pixels = p.out_pixels();
  const int64_t weight_numel = p.out_channels * kp;
  // Units (image, pixel block), summed in chunks, one per thread.
  const PixelBlocks blocks = pixel_blocks(p);
  sum_over_chunks(p.batch * blocks.count, weight_numel, grad_weight,
                  [&](T* sum, int64_t unit_begin, int64_t unit_end) {
    std::vector<T> scratch;
    for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
      const int64_t n = unit / blocks.count;
      const PixelRange range = blocks[unit % blocks.count];
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_input = input + (n * p.in_channels + g * cg) * p.in_h * p.in_w;
        const T* dy = grad_output + (n * p.out_channels + g * og) * pixels;
        // dW_g (og x kp) += dY_g (og x pixels) * col^T (pixels x kp): both
        // operands are packed transposed (vectorised), and dW_g, the
        // output, is row-major so its tiles are stored whole.
        const MatrixRef<const T> col = columns_of(group_input, range, scratch, p);
        gemm<T>(og, kp, range.count, {dy + range.begin, pixels, 1}, {col.data, col.col_stride, col.row_stride},
                {sum + g * og * kp, kp, 1}, unit != unit_begin);
      }
    }
  });
}

#define FASTCONV_INSTANTIATE_IM2COL(T)                                                                 \
  template void im2col_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool);        \
  template void im2col_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);                 \
  template void im2col_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_IM2COL(float)
FASTCONV_INSTANTIATE_IM2COL(double)

}  // namespace cpu
}  // namespace fastconv
