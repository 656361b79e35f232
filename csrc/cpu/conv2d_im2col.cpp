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
// sums) or over (image, input channel range) units (backward input: the
// pixel blocks' col2im halos overlap, but the col rows of channel c only
// scatter into plane c), so no two threads ever write the same element.
// When the batch is smaller than the thread count, images are cut into
// enough units for every thread.
#include <algorithm>
#include <vector>

#include "conv2d_algorithms.h"
#include "gemm.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Elements of one column block at most (1 MiB of float), unless that is
// under kMinColumnBlockPixels columns. Measured on the seed layers, forward
// and input gradient run alike from 32K to 256K; the weight gradient, whose
// K is the block, prefers large blocks (fewer passes over dW).
constexpr int64_t kColumnBlockElements = 256 * 1024;
// Output pixels of one column block at least, whatever its patch: the GEMM
// streams all of A (the weights) once per block, so a deep layer's small
// blocks (64 pixels for 512 channels) would make it memory-bound. On VGG16's
// 512-channel layers 256 pixels ran 1.1-1.25x faster than the 1 MiB cap's
// 64, and 512 no faster than 256.
constexpr int64_t kMinColumnBlockPixels = 256;

// An image's output pixels cut into blocks that fit the budget, numbered so
// that work can be split over (image, block) units of `images` images and a
// single image still uses every thread (csrc/cpu/parallel.h). Only the last
// block can have partial GEMM tiles.
Blocks pixel_blocks(const Conv2dParams& p, int64_t images, int64_t threads) {
  const int64_t fit = std::max(kMinColumnBlockPixels, kColumnBlockElements / std::max<int64_t>(1, p.patch_size()));
  return balanced_blocks(p.out_pixels(), fit, kGemmColumnAlignment, images, threads);
}

// The column block of one image and group: the image itself for 1x1
// stride-1 unpadded kernels (a view with row stride out_pixels()), else
// im2col into `scratch` (row stride range.count).
template <typename T>
MatrixRef<const T> columns_of(const T* group_input, ItemRange range, std::vector<T>& scratch,
                              const Conv2dParams& p) {
  if (p.im2col_is_identity()) return {group_input + range.begin, p.out_pixels(), 1};
  scratch.resize(p.patch_size() * range.count);
  im2col(group_input, scratch.data(), p.in_channels_per_group(), p, range);
  return {scratch.data(), range.count, 1};
}

// W_g of every group, packed once.
template <typename T>
std::vector<PackedA<T>> pack_weights(const T* weight, const Conv2dParams& p) {
  const int64_t og = p.out_channels_per_group(), kp = p.patch_size();
  std::vector<PackedA<T>> packed;
  packed.reserve(p.groups);
  for (int64_t g = 0; g < p.groups; ++g) {
    packed.emplace_back(og, kp, MatrixRef<const T>{weight + g * og * kp, kp, 1});
  }
  return packed;
}

}  // namespace

template <typename T>
void im2col_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group(), pixels = p.out_pixels();
  const std::vector<PackedA<T>> packed_weights = pack_weights(weight, p);
  const Blocks blocks = pixel_blocks(p, p.batch, at::get_num_threads());
  // Units (image, pixel block) write disjoint output columns.
  at::parallel_for(0, p.batch * blocks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / blocks.count;
      const ItemRange range = blocks[unit % blocks.count];
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

// The input channels of a group cut into `count` near-equal ranges, so that
// a small batch's input gradient splits over the threads.
struct ChannelParts {
  int64_t channels, count;
  int64_t begin(int64_t i) const { return channels * i / count; }
  int64_t size(int64_t i) const { return begin(i + 1) - begin(i); }
};

template <typename T>
void im2col_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t pixels = p.out_pixels(), plane = p.in_h * p.in_w, taps = p.kernel_h * p.kernel_w;
  const int64_t kp = p.patch_size();
  const bool identity = p.im2col_is_identity();
  const ChannelParts parts{cg, parts_per_image(p.batch * p.groups, 1, cg, at::get_num_threads())};
  // W_g^T's rows of each channel range, packed once: the GEMM computes each
  // row of col alike whichever range it falls in, so the result does not
  // depend on the split.
  std::vector<PackedA<T>> packed_weights;
  packed_weights.reserve(p.groups * parts.count);
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t part = 0; part < parts.count; ++part) {
      const T* w_t = weight + g * og * kp + parts.begin(part) * taps;
      packed_weights.emplace_back(parts.size(part) * taps, og, MatrixRef<const T>{w_t, 1, kp});
    }
  }
  // Blocks independent of the thread count: col2im sums each block's
  // halo into the planes, so the blocks set the order of the additions.
  const Blocks blocks = pixel_blocks(p, 1, /*threads=*/1);
  // Units (image, group, channel range) write disjoint channel planes.
  at::parallel_for(0, p.batch * p.groups * parts.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t part = unit % parts.count, g = unit / parts.count % p.groups;
      const int64_t n = unit / parts.count / p.groups, channels = parts.size(part);
      const PackedA<T>& w_t = packed_weights[g * parts.count + part];
      T* grad_planes = grad_input + (n * p.in_channels + g * cg + parts.begin(part)) * plane;
      const T* dy = grad_output + (n * p.out_channels + g * og) * pixels;
      if (!identity) std::fill_n(grad_planes, channels * plane, T(0));
      for (int64_t b = 0; b < blocks.count; ++b) {
        const ItemRange range = blocks[b];
        const MatrixRef<const T> dy_block{dy + range.begin, pixels, 1};
        if (identity) {
          gemm<T>(w_t, range.count, dy_block, {grad_planes + range.begin, pixels, 1}, false);
          continue;
        }
        col.resize(channels * taps * range.count);
        gemm<T>(w_t, range.count, dy_block, {col.data(), range.count, 1}, false);
        col2im(col.data(), grad_planes, channels, p, range);
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
  const Blocks blocks = pixel_blocks(p, p.batch, at::get_num_threads());
  sum_over_chunks(p.batch * blocks.count, weight_numel, grad_weight,
                  [&](T* sum, int64_t unit_begin, int64_t unit_end) {
    std::vector<T> scratch;
    for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
      const int64_t n = unit / blocks.count;
      const ItemRange range = blocks[unit % blocks.count];
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
