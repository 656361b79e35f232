// Max pooling kernels, torch's semantics exactly: taps outside the input are
// -inf and never chosen; a window takes a strictly larger value or any NaN
// (pool_takes), so ties keep the first maximum in row-major scan order and a
// NaN wins; indices are flat positions ih * in_w + iw within the input plane.
// half and bfloat16 are compared in fp32 (exact: widening is lossless).
#pragma once

#include <limits>

#include "common.cuh"
#include "max_pool2d.h"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// Element `flat` of a stack of height x width planes, as (plane, y, x).
struct PlanePosition {
  int64_t plane;
  int64_t y;
  int64_t x;
};
__device__ __forceinline__ PlanePosition plane_position(int64_t flat, int64_t height, int64_t width) {
  const int64_t row = flat / width;
  return PlanePosition{row / height, row % height, flat % width};
}

// One thread per output element, grid-stride. Consecutive threads write
// consecutive outputs of a row (coalesced stores) and read inputs stride_w
// apart within the same few rows, which the caches absorb.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    max_pool2d_forward_kernel(const T* __restrict__ input, T* __restrict__ output,
                              int64_t* __restrict__ indices, Pool2dParams p) {
  using A = acc_t<T>;
  const int64_t total = p.planes * p.out_pixels();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const PlanePosition at_out = plane_position(o, p.out_h, p.out_w);
    const IndexRange hs = taps_inside(at_out.y, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
    const IndexRange ws = taps_inside(at_out.x, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w);
    const T* in = input + at_out.plane * p.in_pixels();
    A best = -std::numeric_limits<A>::infinity();
    int64_t best_at = hs.begin * p.in_w + ws.begin;  // torch's index for an all -inf window
    for (int64_t ih = hs.begin; ih < hs.end; ih += p.dilation_h) {
      for (int64_t iw = ws.begin; iw < ws.end; iw += p.dilation_w) {
        const int64_t at = ih * p.in_w + iw;
        const A v = to_acc(in[at]);
        if (pool_takes(v, best)) {
          best = v;
          best_at = at;
        }
      }
    }
    output[o] = from_acc<T>(best);
    indices[o] = best_at;
  }
}

// The 2x2 / stride 2 / no padding case, with out_w * 2 == in_w: each thread
// loads one 2*OUT-wide pack from each of the window's two rows (one 64- or
// 128-bit load per row for float) and writes OUT adjacent outputs and
// indices as packs. The scan order (top-left, top-right, bottom-left,
// bottom-right) is the generic kernel's, so results are identical.
template <typename T, int OUT>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    max_pool2d_2x2_kernel(const T* __restrict__ input, T* __restrict__ output,
                          int64_t* __restrict__ indices, Pool2dParams p) {
  using A = acc_t<T>;
  using RowPack = Pack<T, 2 * OUT>;
  const int64_t groups_per_row = p.out_w / OUT;
  const int64_t work = p.planes * p.out_h * groups_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < work; g += stride) {
    const int64_t row = g / groups_per_row;  // plane * out_h + oh
    const int64_t col = g - row * groups_per_row;
    const int64_t ih = 2 * (row % p.out_h);
    const int64_t iw = 2 * OUT * col;
    const T* top = input + ((row / p.out_h) * p.in_h + ih) * p.in_w + iw;
    const RowPack upper = *reinterpret_cast<const RowPack*>(top);
    const RowPack lower = *reinterpret_cast<const RowPack*>(top + p.in_w);
    Pack<T, OUT> out;
    Pack<int64_t, OUT> idx;
#pragma unroll
    for (int j = 0; j < OUT; ++j) {
      const int64_t at = ih * p.in_w + iw + 2 * j;
      // The first tap always wins against -inf (ties keep it, NaN takes it).
      A best = to_acc(upper.v[2 * j]);
      int64_t best_at = at;
      const A rest[3] = {to_acc(upper.v[2 * j + 1]), to_acc(lower.v[2 * j]), to_acc(lower.v[2 * j + 1])};
      const int64_t rest_at[3] = {at + 1, at + p.in_w, at + p.in_w + 1};
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        if (pool_takes(rest[k], best)) {
          best = rest[k];
          best_at = rest_at[k];
        }
      }
      out.v[j] = from_acc<T>(best);
      idx.v[j] = best_at;
    }
    reinterpret_cast<Pack<T, OUT>*>(output)[g] = out;
    reinterpret_cast<Pack<int64_t, OUT>*>(indices)[g] = idx;
  }
}

// Backward as a gather: one thread per input element visits the outputs
// whose windows contain it (at most kernel_h * kernel_w of them: for each tap
// kh the row oh = (ih + pad_h - kh * dilation_h) / stride_h when it divides
// exactly, likewise for columns; distinct taps give distinct outputs) and
// adds the gradient of those whose stored index is its own position.
//
// Deterministic: every input element is written by exactly one thread, with
// no atomics, and that thread sums its contributions in a fixed order. The
// taps are walked from the last to the first, i.e. outputs in ascending
// row-major order, the order in which torch's CPU kernel scatters them, so
// even overlapping windows give bit-identical float sums.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    max_pool2d_backward_kernel(const T* __restrict__ grad_output, const int64_t* __restrict__ indices,
                               T* __restrict__ grad_input, Pool2dParams p) {
  using A = acc_t<T>;
  const int64_t total = p.planes * p.in_pixels();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const PlanePosition at_in = plane_position(i, p.in_h, p.in_w);
    const int64_t ih = at_in.y;
    const int64_t iw = at_in.x;
    const int64_t self = ih * p.in_w + iw;
    const int64_t out_base = at_in.plane * p.out_pixels();
    A sum = A(0);
    for (int64_t kh = p.kernel_h - 1; kh >= 0; --kh) {
      const int64_t th = ih + p.pad_h - kh * p.dilation_h;
      if (th < 0 || th % p.stride_h != 0) continue;
      const int64_t oh = th / p.stride_h;
      if (oh >= p.out_h) break;  // smaller kh only gives larger oh
      for (int64_t kw = p.kernel_w - 1; kw >= 0; --kw) {
        const int64_t tw = iw + p.pad_w - kw * p.dilation_w;
        if (tw < 0 || tw % p.stride_w != 0) continue;
        const int64_t ow = tw / p.stride_w;
        if (ow >= p.out_w) break;
        const int64_t o = out_base + oh * p.out_w + ow;
        if (indices[o] == self) sum += to_acc(grad_output[o]);
      }
    }
    grad_input[i] = from_acc<T>(sum);
  }
}

template <typename T>
const char* max_pool2d_forward(Target target, const T* input, T* output, int64_t* indices,
                               const Pool2dParams& p) {
  const int64_t total = p.planes * p.out_pixels();
  if (total == 0) return nullptr;
  const cudaStream_t s = stream_of(target);
  const int size = static_cast<int>(sizeof(T));
  if (p.is_2x2_stride2() && p.out_w * 2 == p.in_w) {
    // Every row starts on a pack boundary when in_w is a multiple of the pack.
    auto kernel = max_pool2d_2x2_kernel<T, 1>;
    int out_per_thread = 0;
    if (p.in_w % 4 == 0 && is_aligned(input, 4 * size) && is_aligned(output, 2 * size) &&
        is_aligned(indices, 16)) {
      kernel = max_pool2d_2x2_kernel<T, 2>;
      out_per_thread = 2;
    } else if (is_aligned(input, 2 * size)) {
      out_per_thread = 1;
    }
    if (out_per_thread > 0) {
      SIMT_LAUNCH(kernel, grid_stride_blocks(total / out_per_thread), kElementwiseThreads, 0, s, input,
                  output, indices, p);
      return launch_status();
    }
  }
  SIMT_LAUNCH(max_pool2d_forward_kernel<T>, grid_stride_blocks(total), kElementwiseThreads, 0, s, input,
              output, indices, p);
  return launch_status();
}

template <typename T>
const char* max_pool2d_backward(Target target, const T* grad_output, const int64_t* indices, T* grad_input,
                                const Pool2dParams& p) {
  const int64_t total = p.planes * p.in_pixels();
  if (total == 0) return nullptr;
  SIMT_LAUNCH(max_pool2d_backward_kernel<T>, grid_stride_blocks(total), kElementwiseThreads, 0,
              stream_of(target), grad_output, indices, grad_input, p);
  return launch_status();
}

#define FASTCONV_INSTANTIATE_MAX_POOL2D(T)                                                      \
  template const char* max_pool2d_forward<T>(Target, const T*, T*, int64_t*, const Pool2dParams&); \
  template const char* max_pool2d_backward<T>(Target, const T*, const int64_t*, T*, const Pool2dParams&);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
