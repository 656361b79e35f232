// Helpers shared by the convolution kernels (direct, im2col, GEMM): the ReLU
// epilogue, the cap on grids that loop over their work, and the sizes of the
// scratch buffers, which the workspace query and the launchers must agree on.
// Torch-free.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "../common/conv2d_params.h"
#include "../common/index_math.h"
#include "common.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// The forward epilogue of conv2d_relu: torch's ReLU on a GPU (relu_of).
// With relu false the value is returned untouched, so plain conv2d stays
// bit-identical. (`relu` travels as its own kernel argument, not in
// Conv2dParams: growing that struct past 128 bytes makes ptxas spill in
// kernels that never read the flag.)
template <typename A>
FASTCONV_HD A conv_epilogue(A v, bool relu) {
  return relu ? relu_of(v) : v;
}

// Kernels that loop over their work items (blocks take items blockIdx.x,
// blockIdx.x + gridDim.x, ...) launch at most this many blocks: enough to fill
// a GPU, and tiny problems get exactly as many blocks as they have items.
constexpr int64_t kMaxConvBlocks = 1024;
inline unsigned conv_grid(int64_t items) {
  return static_cast<unsigned>(items < 1 ? 1 : (items < kMaxConvBlocks ? items : kMaxConvBlocks));
}

// Bytes of an accumulation-type element for an element size (double: 8, else float: 4).
inline int64_t acc_size_for(int64_t element_size) { return element_size == 8 ? 8 : 4; }

inline int64_t round_up16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

// The im2col column buffer holds C * R * S * P * Q elements per image; the
// batch is processed in chunks of this many images so that the buffer stays
// under column_buffer_cap() bytes (at least one image, whatever its size):
// 256 MiB, or FASTCONV_COLUMN_BUFFER_BYTES when set (read once; the tests
// shrink it so that small problems run in several chunks on SIMT).
inline int64_t column_buffer_cap() {
  static const int64_t cap = [] {
    const char* bytes = std::getenv("FASTCONV_COLUMN_BUFFER_BYTES");
    const long long parsed = bytes != nullptr ? std::atoll(bytes) : 0;
    return parsed > 0 ? static_cast<int64_t>(parsed) : int64_t(256) << 20;
  }();
  return cap;
}
inline int64_t im2col_column_elems(const Conv2dParams& p) {
  return p.in_channels * p.kernel_h * p.kernel_w * p.out_pixels();
}
// A chunk also keeps images * P * Q below 2^30 (im2col_index_chunk_images,
// the only bound where the weight gradient gathers its columns instead of
// buffering them): the weight gradient's GEMM folds the chunk's images into
// its reduction index, which it divides with a 32-bit FastDivmod and splits
// into ranges whose 32-bit bounds may round up past the end.
inline int64_t im2col_index_chunk_images(const Conv2dParams& p) {
  int64_t chunk = (kFastDivmodLimit / 2) / (p.out_pixels() > 0 ? p.out_pixels() : 1);
  if (chunk < 1) chunk = 1;
  return chunk < p.batch ? chunk : p.batch;
}
inline int64_t im2col_chunk_images(const Conv2dParams& p, int64_t column_elem_size) {
  const int64_t per_image = im2col_column_elems(p) * column_elem_size;
  if (per_image <= 0) return p.batch > 0 ? p.batch : 1;
  int64_t chunk = column_buffer_cap() / per_image;
  if (chunk < 1) chunk = 1;
  const int64_t by_index = im2col_index_chunk_images(p);
  return chunk < by_index ? chunk : by_index;
}

// The second pass of every split reduction: element e of n-element partials
// is the sum of its `slices` (at s * n + e), added in a fixed order, so the
// result is deterministic. A block's threads are `rows` x (256 / rows):
// thread (row, column) adds slices row, row + rows, ... of its column's
// element, and the column's first thread adds the rows' sums in row order
// and hands the total to `store(e, total)`. Many slices of few elements
// (the weight gradient of 3 -> 32 @150: 528 slices of 864 weights) so
// spread over `rows` times the threads, where one thread an element would
// wait on hundreds of loads in turn on a few dozen warps of the GPU.
// reduce_rows picks `rows`, a power of two that divides the block.
constexpr int kReduceMaxRows = 32;
inline int reduce_rows(int64_t slices) {
  int rows = 1;
  while (rows < kReduceMaxRows && 8 * rows <= slices) rows *= 2;  // 4 or more slices a thread
  return rows;
}
template <typename A, typename Store>
__device__ __forceinline__ void reduce_slices(const A* __restrict__ partial, int64_t n, int64_t slices, int rows,
                                              Store store) {
  __shared__ A row_sums[kElementwiseThreads];
  const int columns = static_cast<int>(blockDim.x) / rows;
  const int column = static_cast<int>(threadIdx.x) % columns, row = static_cast<int>(threadIdx.x) / columns;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * columns; first < n;
       first += static_cast<int64_t>(gridDim.x) * columns) {  // the same trip count for the whole block
    const int64_t e = first + column;
    A sum = A(0);
    if (e < n && row < slices) {
      sum = partial[row * n + e];
      for (int64_t s = row + rows; s < slices; s += rows) sum += partial[s * n + e];
    }
    if (rows == 1) {
      if (e < n) store(e, sum);
      continue;
    }
    row_sums[threadIdx.x] = sum;
    __syncthreads();
    if (row == 0 && e < n) {
      for (int r = 1; r < rows; ++r) sum += row_sums[r * columns + column];
      store(e, sum);
    }
    __syncthreads();  // row_sums is rewritten for the next elements
  }
}

// out[e] = (out[e] if accumulate) + the slices' sum: the weight gradients of
// both algorithms, the bias gradient, the im2col input gradient. TO is T, or
// acc_t<T> when the result is itself an fp32 accumulator.
template <typename T, typename TO>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    conv2d_reduce_partials_kernel(const acc_t<T>* __restrict__ partial, TO* __restrict__ out, int64_t n,
                                  int64_t slices, int rows, bool accumulate) {
  reduce_slices(partial, n, slices, rows, [&](int64_t e, acc_t<T> sum) {
    if (accumulate) sum = to_acc(out[e]) + sum;
    out[e] = from_acc<TO>(sum);
  });
}

// Blocks for n elements of `rows` threads each.
inline unsigned reduce_blocks(int64_t n, int rows) { return grid_stride_blocks(n * rows); }

template <typename T, typename TO>
const char* launch_reduce_partials(const acc_t<T>* partial, TO* out, int64_t n, int64_t slices, bool accumulate,
                                   cudaStream_t stream) {
  auto kernel = conv2d_reduce_partials_kernel<T, TO>;
  const int rows = reduce_rows(slices);
  SIMT_LAUNCH(kernel, reduce_blocks(n, rows), kElementwiseThreads, 0, stream, partial, out, n, slices, rows,
              accumulate);
  return launch_status();
}

// The split forward's second pass: output[e] = the slices' sum + bias of
// e's channel, through conv2d_relu's epilogue, for outputs laid out
// [image][channel][pixel]. Split forwards are small (their tiles fill under
// two waves of the GPU; im2col_forward_split keeps n < 2^31), so the channel
// comes from two 32-bit FastDivmods.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    conv2d_reduce_forward_partials_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ output,
                                          const T* __restrict__ bias, int64_t n, int64_t slices, int rows,
                                          FastDivmod pixels, FastDivmod channels, bool relu) {
  reduce_slices(partial, n, slices, rows, [&](int64_t e, acc_t<T> sum) {
    if (bias != nullptr) {
      uint32_t plane, pixel, image, channel;
      pixels.divmod(static_cast<uint32_t>(e), plane, pixel);
      channels.divmod(plane, image, channel);
      sum += to_acc(bias[channel]);
    }
    output[e] = from_acc<T>(conv_epilogue(sum, relu));
  });
}

template <typename T>
const char* launch_reduce_forward_partials(const acc_t<T>* partial, T* output, const T* bias, int64_t n,
                                           int64_t slices, int64_t channels, int64_t pixels, bool relu,
                                           cudaStream_t stream) {
  if (n >= kFastDivmodLimit) return "conv2d (im2col): a split forward of 2^31 or more outputs";
  const int rows = reduce_rows(slices);
  SIMT_LAUNCH(conv2d_reduce_forward_partials_kernel<T>, reduce_blocks(n, rows), kElementwiseThreads, 0, stream,
              partial, output, bias, n, slices, rows, FastDivmod::make(pixels), FastDivmod::make(channels), relu);
  return launch_status();
}

// Fills n elements with zero (gradients of an empty batch).
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads)) conv2d_zero_kernel(T* __restrict__ out, int64_t n) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[e] = from_acc<T>(acc_t<T>(0));
  }
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
