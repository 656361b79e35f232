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

// The launchers run these kernels on pieces of whole planes, fewer than 2^30
// elements each (elementwise_images_per_launch), so a flat index within a
// piece and every coordinate within a plane fit 32 bits: indices are split
// with FastDivmods, never with a 64-bit division (a software routine of
// dozens of instructions on a GPU, here once per element). Only offsets into
// whole tensors stay 64-bit.

// Element `flat` of a stack of height x width planes, as (plane, y, x).
struct PlanePosition {
  int plane;
  int y;
  int x;
};
__device__ __forceinline__ PlanePosition plane_position(uint32_t flat, const FastDivmod& height,
                                                        const FastDivmod& width) {
  uint32_t row, x, plane, y;
  width.divmod(flat, row, x);
  height.divmod(row, plane, y);
  return PlanePosition{static_cast<int>(plane), static_cast<int>(y), static_cast<int>(x)};
}

// One thread per output element, grid-stride. Consecutive threads write
// consecutive outputs of a row (coalesced stores) and read inputs stride_w
// apart within the same few rows, which the caches absorb.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    max_pool2d_forward_kernel(const T* __restrict__ input, T* __restrict__ output,
                              int64_t* __restrict__ indices, Pool2dParams p, int total, FastDivmod out_h,
                              FastDivmod out_w) {
  using A = acc_t<T>;
  const int in_h = static_cast<int>(p.in_h), in_w = static_cast<int>(p.in_w);
  const int stride_h = static_cast<int>(p.stride_h), stride_w = static_cast<int>(p.stride_w);
  const int pad_h = static_cast<int>(p.pad_h), pad_w = static_cast<int>(p.pad_w);
  const int kernel_h = static_cast<int>(p.kernel_h), kernel_w = static_cast<int>(p.kernel_w);
  const int dilation_h = static_cast<int>(p.dilation_h), dilation_w = static_cast<int>(p.dilation_w);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const PlanePosition at_out = plane_position(static_cast<uint32_t>(o), out_h, out_w);
    const BasicIndexRange<int> hs = taps_inside(at_out.y, stride_h, pad_h, kernel_h, dilation_h, in_h);
    const BasicIndexRange<int> ws = taps_inside(at_out.x, stride_w, pad_w, kernel_w, dilation_w, in_w);
    const T* in = input + at_out.plane * p.in_pixels();
    A best = -std::numeric_limits<A>::infinity();
    int best_at = hs.begin * in_w + ws.begin;  // torch's index for an all -inf window
    for (int ih = hs.begin; ih < hs.end; ih += dilation_h) {
      for (int iw = ws.begin; iw < ws.end; iw += dilation_w) {
        const int at = ih * in_w + iw;
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
// `groups_per_row`: out_w / OUT.
template <typename T, int OUT>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    max_pool2d_2x2_kernel(const T* __restrict__ input, T* __restrict__ output,
                          int64_t* __restrict__ indices, Pool2dParams p, int work, FastDivmod out_h,
                          FastDivmod groups_per_row) {
  using A = acc_t<T>;
  using RowPack = Pack<T, 2 * OUT>;
  const int in_w = static_cast<int>(p.in_w);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < work; g += stride) {
    uint32_t row, col, plane, oh;  // row = plane * out_h + oh
    groups_per_row.divmod(static_cast<uint32_t>(g), row, col);
    out_h.divmod(row, plane, oh);
    const int ih = 2 * static_cast<int>(oh);
    const int iw = 2 * OUT * static_cast<int>(col);
    const T* top = input + plane * p.in_pixels() + ih * in_w + iw;
    const RowPack upper = *reinterpret_cast<const RowPack*>(top);
    const RowPack lower = *reinterpret_cast<const RowPack*>(top + in_w);
    Pack<T, OUT> out;
    Pack<int64_t, OUT> idx;
#pragma unroll
    for (int j = 0; j < OUT; ++j) {
      const int at = ih * in_w + iw + 2 * j;
      // The first tap always wins against -inf (ties keep it, NaN takes it).
      A best = to_acc(upper.v[2 * j]);
      int best_at = at;
      const A rest[3] = {to_acc(upper.v[2 * j + 1]), to_acc(lower.v[2 * j]), to_acc(lower.v[2 * j + 1])};
      const int rest_at[3] = {at + 1, at + in_w, at + in_w + 1};
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
                               T* __restrict__ grad_input, Pool2dParams p, int total, FastDivmod in_h,
                               FastDivmod in_w, FastDivmod stride_h, FastDivmod stride_w) {
  using A = acc_t<T>;
  const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
  const int pad_h = static_cast<int>(p.pad_h), pad_w = static_cast<int>(p.pad_w);
  const int kernel_h = static_cast<int>(p.kernel_h), kernel_w = static_cast<int>(p.kernel_w);
  const int dilation_h = static_cast<int>(p.dilation_h), dilation_w = static_cast<int>(p.dilation_w);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const PlanePosition at_in = plane_position(static_cast<uint32_t>(i), in_h, in_w);
    const int ih = at_in.y;
    const int iw = at_in.x;
    const int64_t self = ih * static_cast<int>(in_w.divisor) + iw;
    const int64_t out_base = at_in.plane * p.out_pixels();
    A sum = A(0);
    for (int kh = kernel_h - 1; kh >= 0; --kh) {
      const int th = ih + pad_h - kh * dilation_h;
      if (th < 0) continue;
      uint32_t oh, th_rem;
      stride_h.divmod(static_cast<uint32_t>(th), oh, th_rem);
      if (th_rem != 0) continue;
      if (static_cast<int>(oh) >= out_h) break;  // smaller kh only gives larger oh
      for (int kw = kernel_w - 1; kw >= 0; --kw) {
        const int tw = iw + pad_w - kw * dilation_w;
        if (tw < 0) continue;
        uint32_t ow, tw_rem;
        stride_w.divmod(static_cast<uint32_t>(tw), ow, tw_rem);
        if (tw_rem != 0) continue;
        if (static_cast<int>(ow) >= out_w) break;
        const int64_t o = out_base + static_cast<int>(oh) * out_w + static_cast<int>(ow);
        if (indices[o] == self) sum += to_acc(grad_output[o]);
      }
    }
    grad_input[i] = from_acc<T>(sum);
  }
}

constexpr const char* kPoolPlaneTooLarge = "max_pool2d: one input or output plane has more than 2^30 elements";

// Planes per launch (see above); 0 when one plane alone is too large.
inline int64_t pool_planes_per_launch(const Pool2dParams& p) {
  return elementwise_images_per_launch(p.in_pixels() > p.out_pixels() ? p.in_pixels() : p.out_pixels());
}

template <typename T>
const char* max_pool2d_forward(Target target, const T* input, T* output, int64_t* indices,
                               const Pool2dParams& p) {
  if (p.planes * p.out_pixels() == 0) return nullptr;
  const int64_t step = pool_planes_per_launch(p);
  if (step == 0) return kPoolPlaneTooLarge;
  const cudaStream_t s = stream_of(target);
  const int size = static_cast<int>(sizeof(T));
  const FastDivmod out_h = FastDivmod::make(p.out_h);
  if (p.is_2x2_stride2() && p.out_w * 2 == p.in_w) {
    // Every row starts on a pack boundary when in_w is a multiple of the pack,
    // and so does every piece (whole planes of even width).
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
      const FastDivmod groups_per_row = FastDivmod::make(p.out_w / out_per_thread);
      return launch_in_pieces(p.planes, step, [&](int64_t plane, int64_t planes) {
        const int work = static_cast<int>(planes * p.out_pixels() / out_per_thread);
        SIMT_LAUNCH(kernel, grid_stride_blocks(work), kElementwiseThreads, 0, s, input + plane * p.in_pixels(),
                    output + plane * p.out_pixels(), indices + plane * p.out_pixels(), p, work, out_h,
                    groups_per_row);
        return launch_status();
      });
    }
  }
  const FastDivmod out_w = FastDivmod::make(p.out_w);
  return launch_in_pieces(p.planes, step, [&](int64_t plane, int64_t planes) {
    const int total = static_cast<int>(planes * p.out_pixels());
    SIMT_LAUNCH(max_pool2d_forward_kernel<T>, grid_stride_blocks(total), kElementwiseThreads, 0, s,
                input + plane * p.in_pixels(), output + plane * p.out_pixels(), indices + plane * p.out_pixels(),
                p, total, out_h, out_w);
    return launch_status();
  });
}

template <typename T>
const char* max_pool2d_backward(Target target, const T* grad_output, const int64_t* indices, T* grad_input,
                                const Pool2dParams& p) {
  if (p.planes * p.in_pixels() == 0) return nullptr;
  const int64_t step = pool_planes_per_launch(p);
  if (step == 0) return kPoolPlaneTooLarge;
  const FastDivmod in_h = FastDivmod::make(p.in_h), in_w = FastDivmod::make(p.in_w);
  const FastDivmod stride_h = FastDivmod::make(p.stride_h), stride_w = FastDivmod::make(p.stride_w);
  return launch_in_pieces(p.planes, step, [&](int64_t plane, int64_t planes) {
    const int total = static_cast<int>(planes * p.in_pixels());
    SIMT_LAUNCH(max_pool2d_backward_kernel<T>, grid_stride_blocks(total), kElementwiseThreads, 0,
                stream_of(target), grad_output + plane * p.out_pixels(), indices + plane * p.out_pixels(),
                grad_input + plane * p.in_pixels(), p, total, in_h, in_w, stride_h, stride_w);
    return launch_status();
  });
}

#define FASTCONV_INSTANTIATE_MAX_POOL2D(T)                                                      \
  template const char* max_pool2d_forward<T>(Target, const T*, T*, int64_t*, const Pool2dParams&); \
  template const char* max_pool2d_backward<T>(Target, const T*, const int64_t*, T*, const Pool2dParams&);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
