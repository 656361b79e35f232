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

// out[e] = (out[e] if accumulate) + the slices' partials added in slice
// order: the second pass of every split reduction (weight gradients of both
// algorithms, the bias gradient), so the sums are deterministic. TO is T, or
// acc_t<T> when the result is itself an fp32 accumulator.
template <typename T, typename TO>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    conv2d_reduce_partials_kernel(const acc_t<T>* __restrict__ partial, TO* __restrict__ out, int64_t n,
                                  int64_t slices, bool accumulate) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t<T> sum = partial[e];
    for (int64_t s = 1; s < slices; ++s) sum += partial[s * n + e];
    if (accumulate) sum = to_acc(out[e]) + sum;
    out[e] = from_acc<TO>(sum);
  }
}

template <typename T, typename TO>
const char* launch_reduce_partials(const acc_t<T>* partial, TO* out, int64_t n, int64_t slices, bool accumulate,
                                   cudaStream_t stream) {
  auto kernel = conv2d_reduce_partials_kernel<T, TO>;
  SIMT_LAUNCH(kernel, grid_stride_blocks(n), kElementwiseThreads, 0, stream, partial, out, n, slices, accumulate);
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
