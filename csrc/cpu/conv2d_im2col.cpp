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
// block, output channel range) units (forward), over (image, pixel block)
// units in chunks with private partial sums or, with fewer blocks than
// threads, over output channel ranges (backward weight), and over (image,
// input channel range) units (backward input: the pixel blocks' col2im
// halos overlap, but the col rows of channel c only scatter into plane c),
// so no two threads ever write the same element. When the batch is smaller
// than the thread count, images are cut into enough units for every thread.
#include <algorithm>
#include <vector>

#include "conv2d_algorithms.h"
#include "gemm.h"
#include "im2col.h"
#include "parallel.h"
#include "scratch.h"

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

// GEMM rows that cost about as much as one pass of copies over a column
// block (making it, or packing it as the GEMM's B): a column element is one
// copy, a GEMM element one FMA, and the micro-kernel retires several FMAs
// for each element a copy moves. An estimate, which only tips close calls.
constexpr int64_t kCopyCostRows = 8;

// A group's output channels (rows of the forward's and the weight
// gradient's GEMMs) cut into `parts` ranges of whole GEMM tiles.
template <typename T>
Blocks row_parts(const Conv2dParams& p, int64_t parts) {
  return {p.out_channels_per_group(), gemm_tile_rows<T>(), parts};
}

// How the forward cuts its work: over (image, pixel block) units, or, one
// block after another, over the output rows, one row part a thread, the
// threads making each column block together first. Rows are cut only where
// that leaves each thread clearly less padded GEMM: deep layers at batch 1,
// whose few pixels are few column tiles (512 channels at 14x14: 196 pixels,
// 7 tiles, which two threads split 3 + 4, padded to 4 + 4; cut by rows,
// each thread runs all 7 tiles on half the rows).
struct ForwardSplit {
  Blocks blocks, rows;
};

template <typename T>
ForwardSplit forward_split(const Conv2dParams& p, int64_t threads) {
  const ForwardSplit by_blocks{pixel_blocks(p, p.batch, threads), row_parts<T>(p, 1)};
  if (threads < 2 || by_blocks.rows.chunks() < threads) return by_blocks;
  const ForwardSplit by_rows{pixel_blocks(p, p.batch, /*threads=*/1), row_parts<T>(p, threads)};
  // Padded GEMM elements and copies per thread, times threads, with the
  // widest pixel block and row part. Each thread packs its blocks as B; a
  // block made for the row parts is made once, by all threads, and packed
  // by each.
  const int64_t block_cost = ceil_div(p.batch * by_blocks.blocks.count, threads) * by_blocks.blocks.widest() *
                             (by_blocks.rows.widest() + 2 * kCopyCostRows) * threads;
  const int64_t row_cost = p.batch * by_rows.blocks.count * by_rows.blocks.widest() *
                           ((by_rows.rows.widest() + kCopyCostRows) * threads + kCopyCostRows);
  // Cutting rows synchronises the threads twice a block: it must win by 1/16.
  return 16 * row_cost < 15 * block_cost ? by_rows : by_blocks;
}

// The first input plane of group g of image n.
template <typename T>
const T* group_input(const T* input, const Conv2dParams& p, int64_t n, int64_t g) {
  return input + (n * p.in_channels + g * p.in_channels_per_group()) * p.in_h * p.in_w;
}

// The column block of one image and group: the image itself for 1x1
// stride-1 unpadded kernels (a view with row stride out_pixels()), else
// im2col into `scratch` (row stride range.count), its channels cut over the
// threads (serially inside a parallel region).
template <typename T>
MatrixRef<const T> columns_of(const T* group_input, ItemRange range, GrowingBuffer<T>& scratch,
                              const Conv2dParams& p) {
  if (p.im2col_is_identity()) return {group_input + range.begin, p.out_pixels(), 1};
  const int64_t taps = p.kernel_h * p.kernel_w, plane = p.in_h * p.in_w;
  T* const col = scratch.get(p.patch_size() * range.count);
  at::parallel_for(0, p.in_channels_per_group(), ceil_div(kElementwiseGrain, taps * std::max<int64_t>(1, range.count)),
                   [&](int64_t c_begin, int64_t c_end) {
    im2col(group_input + c_begin * plane, col + c_begin * taps * range.count, c_end - c_begin, p, range);
  });
  return {col, range.count, 1};
}

// Runs body(unit, n, g, range, part, col) for every (image, pixel block)
// unit in order, every group and every row part, the row parts of each on
// every thread: the split by output rows serves units too few for the
// threads, so the threads make each column block together first (col) and
// share it.
template <typename T, typename F>
void for_units_by_row_parts(const T* input, const Conv2dParams& p, const Blocks& blocks, const Blocks& rows,
                            const F& body) {
  GrowingBuffer<T> scratch;
  for (int64_t unit = 0; unit < p.batch * blocks.count; ++unit) {
    const int64_t n = unit / blocks.count;
    const ItemRange range = blocks[unit % blocks.count];
    for (int64_t g = 0; g < p.groups; ++g) {
      const MatrixRef<const T> col = columns_of(group_input(input, p, n, g), range, scratch, p);
      at::parallel_for(0, rows.count, 1, [&](int64_t begin, int64_t end) {
        for (int64_t part = begin; part < end; ++part) body(unit, n, g, range, part, col);
      });
    }
  }
}

// W_g's rows of every group and row part, packed once, in that order.
template <typename T>
std::vector<PackedA<T>> pack_weights(const T* weight, const Conv2dParams& p, const Blocks& rows) {
  const int64_t og = p.out_channels_per_group(), kp = p.patch_size();
  std::vector<PackedA<T>> packed(p.groups * rows.count);
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t part = 0; part < rows.count; ++part) {
      const ItemRange r = rows[part];
      const MatrixRef<const T> part_weight{weight + (g * og + r.begin) * kp, kp, 1};
      packed[g * rows.count + part] = PackedA<T>(r.count, kp, part_weight);
    }
  }
  return packed;
}

}  // namespace

template <typename T>
void im2col_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu) {
  const int64_t og = p.out_channels_per_group(), pixels = p.out_pixels();
  const ForwardSplit split = forward_split<T>(p, at::get_num_threads());
  const Blocks &blocks = split.blocks, &rows = split.rows;
  const std::vector<PackedA<T>> packed_weights = pack_weights(weight, p, rows);
  // Writes one image's output rows of one row part, group and pixel range.
  const auto forward_part = [&](int64_t n, int64_t g, ItemRange range, int64_t part, MatrixRef<const T> col) {
    const ItemRange row_range = rows[part];
    T* out = output + (n * p.out_channels + g * og + row_range.begin) * pixels + range.begin;
    const T* part_bias = bias != nullptr ? bias + g * og + row_range.begin : nullptr;
    gemm<T>(packed_weights[g * rows.count + part], range.count, col, {out, pixels, 1}, false, relu, part_bias);
  };
  if (rows.count > 1) {
    for_units_by_row_parts(input, p, blocks, rows,
                           [&](int64_t, int64_t n, int64_t g, ItemRange range, int64_t part, MatrixRef<const T> col) {
                             forward_part(n, g, range, part, col);
                           });
    return;
  }
  // Units (image, pixel block) write disjoint output columns.
  at::parallel_for(0, p.batch * blocks.count, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / blocks.count;
      const ItemRange range = blocks[unit % blocks.count];
      for (int64_t g = 0; g < p.groups; ++g) {
        forward_part(n, g, range, 0, columns_of(group_input(input, p, n, g), range, scratch, p));
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
    GrowingBuffer<T> col_buffer;
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
        T* const col = col_buffer.get(channels * taps * range.count);
        gemm<T>(w_t, range.count, dy_block, {col, range.count, 1}, false);
        col2im(col, grad_planes, channels, p, range);
      }
    }
  });
}

// dW_g (og x kp) (+)= dY_g (og x pixels) * col^T (pixels x kp) for the
// output rows `rows` of group g of image n, on the column block `col` of
// pixel range `range`; `sum` holds all of dW.
template <typename T>
void weight_gradient_block(const T* grad_output, T* sum, const Conv2dParams& p, int64_t n, int64_t g,
                           ItemRange range, ItemRange rows, MatrixRef<const T> col, bool accumulate) {
  const int64_t og = p.out_channels_per_group(), kp = p.patch_size(), pixels = p.out_pixels();
  const T* dy = grad_output + (n * p.out_channels + g * og + rows.begin) * pixels;
  // Both operands are packed transposed (vectorised), and dW_g, the output,
  // is row-major so its tiles are stored whole.
  gemm<T>(rows.count, kp, range.count, {dy + range.begin, pixels, 1}, {col.data, col.col_stride, col.row_stride},
          {sum + (g * og + rows.begin) * kp, kp, 1}, accumulate);
}

template <typename T>
void im2col_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  const int64_t threads = at::get_num_threads();
  // Units (image, pixel block) summed in chunks, one per thread, with
  // private partial sums; but when the images hold fewer cache-sized blocks
  // than there are threads (deep layers at batch 1), blocks cut smaller for
  // the threads would each make a whole dW (9 MiB at 512 channels) to be
  // summed, so the threads split dW's rows instead, each summing every unit
  // in order as one thread would; where dW has a row tile for every thread.
  const Blocks whole_blocks = pixel_blocks(p, p.batch, /*threads=*/1);
  const Blocks rows = row_parts<T>(p, threads);
  const int64_t whole_units = p.batch * whole_blocks.count;
  if (whole_units > 0 && whole_units < threads && threads > 1 && rows.chunks() >= threads) {
    const auto part_gradient = [&](int64_t unit, int64_t n, int64_t g, ItemRange range, int64_t part,
                                   MatrixRef<const T> col) {
      weight_gradient_block(grad_output, grad_weight, p, n, g, range, rows[part], col, unit > 0);
    };
    for_units_by_row_parts(input, p, whole_blocks, rows, part_gradient);
    return;
  }
  const Blocks blocks = pixel_blocks(p, p.batch, threads);
  const ItemRange all_rows{0, p.out_channels_per_group()};
  sum_over_chunks(p.batch * blocks.count, p.out_channels * p.patch_size(), grad_weight,
                  [&](T* sum, int64_t unit_begin, int64_t unit_end) {
    GrowingBuffer<T> scratch;
    for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
      const int64_t n = unit / blocks.count;
      const ItemRange range = blocks[unit % blocks.count];
      for (int64_t g = 0; g < p.groups; ++g) {
        weight_gradient_block(grad_output, sum, p, n, g, range, all_rows,
                              columns_of(group_input(input, p, n, g), range, scratch, p), unit != unit_begin);
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
