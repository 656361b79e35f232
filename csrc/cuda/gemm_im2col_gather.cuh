// The im2col column matrix, gathered from the input by the GEMM's
// loader as it goes (an implicit GEMM) instead of being unfolded into
// a buffer first. Column element
//   col[i = (c * R + r) * S + s][j = oh * Q + ow] of image n, group g
//     = input[n][g * Cg + c][oh * sh - ph + r * dh][ow * sw - pw + s * dw]  (0 outside),
// the element im2col_kernel would have written, is operand B of
// - the forward (Im2colGatherForward): B(j, k = i), rows are pixels;
// - the weight gradient (Im2colGatherWgrad): B(i, k = n * P Q + j), rows
//   are patch elements, the reduction runs over a chunk of images' pixels.
// And at stride 1 the input gradient is the same gather over grad_output
// (Im2colGatherForward::make_for_input_gradient): dX = W^T-by-taps times
// grad_output gathered, written straight into grad_input, where the
// explicit path writes an fp32 column gradient and col2im reads it back.
// In half precision the explicit path writes and then reads the whole
// column matrix (C R S P Q elements an image), which by the GPU model costs
// as much time as the GEMM itself; gathered, the input is read instead, its
// R S reuses served from L1 and L2.
//
// Quads run in the direction the explicit columns' would (along pixels), so
// the kernel stages them exactly as it would stage those. They are gathered
// as 4 scalar loads, with the bounds of padding and of the image's edges
// tested per element: a row of pixels wraps within a quad wherever Q is not
// a multiple of 4, and the 4 input elements are contiguous only at stride 1
// and never aligned for a vector.
#pragma once

#include "gemm_tensor_core.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// The input seen through a convolution's geometry, for both gathers.
// Offsets within one image's group of channels are 32-bit (im2col_gathers
// checks Cg * H * W < 2^31: 32-bit address arithmetic kept the CUDA-core
// kernels' loaders within 128 registers); patch and pixel indices are split
// with FastDivmods.
struct Im2colGatherGeometry {
  int64_t b1, b2;  // offsets of problem z1 (an image, or 0) and of group g's first channel
  int vec;         // the quads' direction, as a GemmOperand's (the staging reads it)
  int in_h, in_w, in_hw;
  int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  FastDivmod kernel_hw, kernel_w, out_w;

  // A plane of in_h x in_w elements read by kernel_h x kernel_w taps for
  // every pixel of rows out_w wide.
  static Im2colGatherGeometry of_plane(int64_t b1, int64_t b2, int vec, int64_t in_h, int64_t in_w,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                       int64_t dilation_h, int64_t dilation_w, int64_t kernel_h, int64_t kernel_w,
                                       int64_t out_w) {
    return Im2colGatherGeometry{b1,
                                b2,
                                vec,
                                static_cast<int>(in_h),
                                static_cast<int>(in_w),
                                static_cast<int>(in_h * in_w),
                                static_cast<int>(stride_h),
                                static_cast<int>(stride_w),
                                static_cast<int>(pad_h),
                                static_cast<int>(pad_w),
                                static_cast<int>(dilation_h),
                                static_cast<int>(dilation_w),
                                FastDivmod::make(kernel_h * kernel_w),
                                FastDivmod::make(kernel_w),
                                FastDivmod::make(out_w)};
  }
  // The convolution's input, as the forward and the weight gradient read it.
  static Im2colGatherGeometry of_input(const Conv2dParams& p, int64_t b1, int vec) {
    return of_plane(b1, p.in_channels_per_group() * p.in_h * p.in_w, vec, p.in_h, p.in_w, p.stride_h, p.stride_w,
                    p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.kernel_h, p.kernel_w, p.out_w);
  }

  // Patch element i of the group: its channel's plane and its tap's offset.
  __device__ __forceinline__ void tap(uint32_t i, int& plane, int& dy, int& dx) const {
    uint32_t c, rs, r, s;
    kernel_hw.divmod(i, c, rs);
    kernel_w.divmod(rs, r, s);
    plane = static_cast<int>(c) * in_hw;
    dy = static_cast<int>(r) * dilation_h;
    dx = static_cast<int>(s) * dilation_w;
  }
  // The input element tap (dy, dx) reads for a pixel whose tap (0, 0) is at
  // (top, left), and whether it lies inside the image (else it reads zero;
  // `at` then wraps, unsigned, and is never used).
  __device__ __forceinline__ bool inside(int top, int left, int dy, int dx, int& at) const {
    const int y = top + dy, x = left + dx;
    at = static_cast<int>(static_cast<uint32_t>(y) * static_cast<uint32_t>(in_w) + static_cast<uint32_t>(x));
    return static_cast<unsigned>(y) < static_cast<unsigned>(in_h) && static_cast<unsigned>(x) < static_cast<unsigned>(in_w);
  }
};

// The forward's operand B: rows are output pixels j of image z1, the
// reduction runs over the patch.
struct Im2colGatherForward : Im2colGatherGeometry {
  static Im2colGatherForward make(const Conv2dParams& p) {
    return Im2colGatherForward{of_input(p, p.in_channels * p.in_h * p.in_w, kVecRows)};
  }
  // The same gather over grad_output gives the input gradient's operand B at
  // stride 1 (im2col_gathers_input_gradient): rows are input pixels (ih,
  // iw), the reduction index k = (o * R + r) * S + s runs over the group's
  // output channels o and taps, and
  //   B(j, k) = grad_output[n][g * Kg + o][ih + ph - r * dh][iw + pw - s * dw]  (0 outside),
  // the forward's geometry on a P x Q plane with padding and dilation negated.
  static Im2colGatherForward make_for_input_gradient(const Conv2dParams& p) {
    const int64_t PQ = p.out_pixels();
    return Im2colGatherForward{of_plane(p.out_channels * PQ, p.out_channels_per_group() * PQ, kVecRows, p.out_h,
                                        p.out_w, 1, 1, -p.pad_h, -p.pad_w, -p.dilation_h, -p.dilation_w, p.kernel_h,
                                        p.kernel_w, p.in_w)};
  }
};

// The weight gradient's operand B: rows are patch elements i, the reduction
// index k = image * P Q + pixel runs over a chunk of images (one problem a
// group), quads along k (kVecRed, as the explicit columns' are).
struct Im2colGatherWgrad : Im2colGatherGeometry {
  FastDivmod out_hw;
  int out_h;
  int64_t in_image;  // elements of one image

  static Im2colGatherWgrad make(const Conv2dParams& p) {
    return Im2colGatherWgrad{of_input(p, 0, kVecRed), FastDivmod::make(p.out_pixels()),
                             static_cast<int>(p.out_h), p.in_channels * p.in_h * p.in_w};
  }
};

// Their settings are fixed when they are made (launch_gemm settles GemmOperands).
template <typename T>
inline void gemm_settle_operand(const T*, Im2colGatherGeometry&) {}

// One quad: patch element `patch` (its channel and tap) of the 4 pixels
// whose tap (0, 0) reads (top[u], left[u]) in the planes image(u) elements
// after `base` (a constant 32-bit 0 for the forward's one image); zeros
// where `live` is false or the tap reads padding.
template <typename T, typename A, typename ImageOffset>
__device__ __forceinline__ void gather_quad(const Im2colGatherGeometry& op, const T* base, int patch, bool live,
                                            const int (&top)[4], const int (&left)[4], ImageOffset image,
                                            A (&v)[4]) {
  int plane, dy, dx;
  op.tap(static_cast<uint32_t>(patch), plane, dy, dx);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    int at;
    const bool inside = op.inside(top[u], left[u], dy, dx, at) && live;
    v[u] = inside ? to_acc(base[image(u) + (plane + at)]) : A(0);
  }
}

// A pixel past the last one (j >= P Q, or k >= K) gets this input row: adding
// any tap's r * dh keeps it negative, so every bounds test fails.
constexpr int kGatherDeadRow = -(1 << 30);

// The forward's slice: a thread's quads cover the same 4 pixels (kVecRows:
// they lie kRedStep reduction indices apart), so a load finds the pixels'
// input coordinates once and each quad adds its own tap. The first pixel's
// (oh, ow) is split again at every load rather than kept: two registers
// more spilled the CUDA-core kernel's 128 x 128 tile (sm_90), and a
// FastDivmod a slice is little beside its multiply-adds.
template <typename T, int BR, int BK, int THREADS>
struct Im2colGatherForwardSlice : GemmSlice<T, BR, BK, THREADS> {
  using Base = GemmSlice<T, BR, BK, THREADS>;

  // `image`: the input of this problem's image and group (row0).
  __device__ __forceinline__ void begin(const T* image, const Im2colGatherForward& op, int first_row, int tid) {
    this->place(op, first_row, tid);
    this->row0 = image;
  }

  // Slice [k0, k0 + BK): pixels >= rows and reduction indices >= K read zero.
  __device__ __forceinline__ void load(const Im2colGatherForward& op, int rows, int K, int k0, int tid) {
    int top[4], left[4];  // the input row and column tap (0, 0) of each of the 4 pixels reads
    const int i0 = opaque_to_compiler(this->i0);
    uint32_t oh32, ow32;
    op.out_w.divmod(static_cast<uint32_t>(i0), oh32, ow32);
    int oh = static_cast<int>(oh32), ow = static_cast<int>(ow32);
    const int Q = static_cast<int>(op.out_w.divisor);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const bool live = i0 + u < rows;
      top[u] = live ? oh * op.stride_h - op.pad_h : kGatherDeadRow;
      left[u] = ow * op.stride_w - op.pad_w;
      if (++ow == Q) ow = 0, ++oh;
    }
#pragma unroll
    for (int t = 0; t < Base::kPerThread; ++t) {
      if (tid + t * THREADS >= Base::kQuads) break;
      const int k = k0 + this->dk(op, t);
      gather_quad(op, this->row0, k, k < K, top, left, [](int) { return 0; }, this->v[t]);
    }
  }
};

// The weight gradient's slice: a thread's quads share their 4 reduction
// indices (kVecRed: they lie kRowStep rows apart), so a load splits the
// first into (image, oh, ow) once, steps to the other three, and each quad
// (a patch element) adds its own channel and tap.
template <typename T, int BR, int BK, int THREADS>
struct Im2colGatherWgradSlice : GemmSlice<T, BR, BK, THREADS> {
  using Base = GemmSlice<T, BR, BK, THREADS>;

  // `group`: the input of the chunk's first image at this problem's group (row0).
  __device__ __forceinline__ void begin(const T* group, const Im2colGatherWgrad& op, int first_row, int tid) {
    this->place(op, first_row, tid);
    this->row0 = group;
  }

  // Slice [k0, k0 + BK): patch elements >= rows and indices >= K read zero.
  __device__ __forceinline__ void load(const Im2colGatherWgrad& op, int rows, int K, int k0, int tid) {
    const int k = k0 + this->dk0;
    uint32_t n, pixel, oh, ow;
    op.out_hw.divmod(static_cast<uint32_t>(k), n, pixel);
    op.out_w.divmod(pixel, oh, ow);
    const int Q = static_cast<int>(op.out_w.divisor);
    int top[4], left[4];
    int64_t image[4];  // offset of the index's image
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      top[u] = k + u < K ? static_cast<int>(oh) * op.stride_h - op.pad_h : kGatherDeadRow;
      left[u] = static_cast<int>(ow) * op.stride_w - op.pad_w;
      image[u] = static_cast<int64_t>(n) * op.in_image;
      if (++ow == static_cast<uint32_t>(Q)) {
        ow = 0;
        if (++oh == static_cast<uint32_t>(op.out_h)) oh = 0, ++n;
      }
    }
#pragma unroll
    for (int t = 0; t < Base::kPerThread; ++t) {
      if (tid + t * THREADS >= Base::kQuads) break;
      const int i = opaque_to_compiler(this->i(op, t));
      gather_quad(op, this->row0, i, i < rows, top, left, [&](int u) { return image[u]; }, this->v[t]);
    }
  }
};

template <>
struct GemmLoader<Im2colGatherForward> {
  template <typename T, int BR, int BK, int THREADS>
  using Slice = Im2colGatherForwardSlice<T, BR, BK, THREADS>;
};
template <>
struct GemmLoader<Im2colGatherWgrad> {
  template <typename T, int BR, int BK, int THREADS>
  using Slice = Im2colGatherWgradSlice<T, BR, BK, THREADS>;
};

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
