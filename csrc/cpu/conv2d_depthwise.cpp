// Convolutions with one input channel per group (depthwise, any channel
// multiplier) and square 3x3, 5x5 or 7x7 kernels, for the direct algorithm.
// The general direct kernels add one tap at a time over a whole row, so each
// output is loaded and stored once a tap in row loops a few dozen pixels
// long; here a row of outputs is computed with a 3x3 window's nine taps (a
// larger window's row of taps) held in registers. Windows read a zero-padded
// copy of the plane they slide over (kept in L1 or L2), so the inner loops
// have no bounds and vectorise across the row at the clone's width
// (isa_loops.h). Measured on 2 Zen 5 cores at batch 16 against torch
// (oneDNN): 128 channels @36, 3x3, forward 0.45 against 0.71 ms, where the
// general kernels took 2.1; 96 channels @28, 5x5, 1.1 against 2.8 ms.
#include "conv2d_depthwise.h"

#include <algorithm>
#include <type_traits>

#include "../common/index_math.h"
#include "isa_loops.h"
#include "parallel.h"
#include "scratch.h"

namespace fastconv {
namespace cpu {
namespace {

// The input rows (or columns) a window of `k` taps slides over to make `out`
// outputs: from the first window's top to the last one's bottom.
inline int64_t window_extent(int64_t out, int64_t stride, int64_t dilation, int64_t k) {
  return (out - 1) * stride + (k - 1) * dilation + 1;
}

// A plane seen through its padding: rows x cols of `data` (row pitch
// `pitch`), where element (r, c) is plane element (r - top, c - left), zero
// outside the plane. Where nothing lies outside, it is the plane itself.
template <typename T>
struct PaddedPlane {
  const T* data;
  int64_t pitch;
};

// The `rows` x `cols` window of `plane` (h x w) starting at (-top, -left),
// in `scratch` where it reaches past the plane, else in place.
template <typename T>
FASTCONV_LOOP_INLINE PaddedPlane<T> pad_plane(const T* plane, int64_t h, int64_t w, int64_t top, int64_t left,
                                              int64_t rows, int64_t cols, GrowingBuffer<T>& scratch) {
  if (top == 0 && left == 0 && rows <= h && cols <= w) return {plane, w};
  T* padded = scratch.get(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    T* dst = padded + r * cols;
    const int64_t ih = r - top;
    if (ih < 0 || ih >= h) {
      std::fill_n(dst, cols, T(0));
      continue;
    }
    const IndexRange inside = outputs_inside(-left, 1, w, cols);
    std::fill_n(dst, inside.begin, T(0));
    std::copy(plane + ih * w + inside.begin - left, plane + ih * w + inside.end - left, dst + inside.begin);
    std::fill(dst + inside.end, dst + cols, T(0));
  }
  return {padded, cols};
}

// One row of taps: out[j] += sum over kw of w[kw] * row[j * kStride + kw *
// dil], then torch's ReLU (NaN passes) where `relu`. K and the stride are
// template arguments so that the taps sit in registers and the compiler
// vectorises stride-2 reads too.
template <int K, int kStride, typename T>
FASTCONV_LOOP_INLINE void add_tap_row(const T* __restrict row, const T* w, int64_t dil, bool relu, T* __restrict out,
                                      int64_t n) {
  T taps[K];
  for (int kw = 0; kw < K; ++kw) taps[kw] = w[kw];
  for (int64_t j = 0; j < n; ++j) {
    T acc = out[j];
#pragma GCC unroll 7
    for (int kw = 0; kw < K; ++kw) acc += taps[kw] * row[j * kStride + kw * dil];
    out[j] = relu && acc < T(0) ? T(0) : acc;
  }
}

// All nine taps of a 3x3 window at once: out[j] = b + the window at pixel j
// (then ReLU where `relu`), each output stored once.
template <int kStride, typename T>
FASTCONV_LOOP_INLINE void correlate_row_3x3(const T* __restrict r0, const T* __restrict r1, const T* __restrict r2,
                                            const T* w, int64_t dil, T b, bool relu, T* __restrict out, int64_t n) {
  const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
  for (int64_t j = 0; j < n; ++j) {
    const int64_t x = j * kStride;
    T acc = b;
    acc += w0 * r0[x];
    acc += w1 * r0[x + dil];
    acc += w2 * r0[x + 2 * dil];
    acc += w3 * r1[x];
    acc += w4 * r1[x + dil];
    acc += w5 * r1[x + 2 * dil];
    acc += w6 * r2[x];
    acc += w7 * r2[x + dil];
    acc += w8 * r2[x + 2 * dil];
    out[j] = relu && acc < T(0) ? T(0) : acc;
  }
}

// A row of outputs: b + the K x K window at each of its pixels, rows `pitch`
// apart; the sums run in the order of the taps. 3x3 windows in one pass,
// larger ones a row of taps at a time (25 or 49 taps would not stay in
// registers).
template <int K, int kStride, typename T>
FASTCONV_LOOP_INLINE void correlate_row(const T* rows, int64_t pitch, const T* w, int64_t dil, T b, bool relu,
                                        T* out, int64_t n) {
  if constexpr (K == 3) {
    correlate_row_3x3<kStride>(rows, rows + pitch, rows + 2 * pitch, w, dil, b, relu, out, n);
  } else {
    std::fill_n(out, n, b);
    for (int kh = 0; kh < K; ++kh) {
      add_tap_row<K, kStride>(rows + kh * pitch, w + kh * K, dil, relu && kh == K - 1, out, n);
    }
  }
}

// a[j] += dy[j] * x[j * kStride] over a row.
template <int kStride, typename T>
FASTCONV_LOOP_INLINE void multiply_add_row(T* __restrict a, const T* __restrict dy, const T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) a[j] += dy[j] * x[j * kStride];
}

// The same for three taps of a row at once, a0..a2 against x at 0, dil and
// 2 dil: dy[j] is loaded once for all three.
template <int kStride, typename T>
FASTCONV_LOOP_INLINE void multiply_add_3_rows(T* __restrict a0, T* __restrict a1, T* __restrict a2,
                                              const T* __restrict dy, const T* __restrict x, int64_t dil, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T d = dy[j];
    a0[j] += d * x[j * kStride];
    a1[j] += d * x[j * kStride + dil];
    a2[j] += d * x[j * kStride + 2 * dil];
  }
}

// a[j] += b[j] over a row.
template <typename T>
FASTCONV_LOOP_INLINE void add_row(T* __restrict a, const T* __restrict b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) a[j] += b[j];
}

// Calls body(std::integral_constant<int, K>{}) for the kernel size K = p.kernel_h.
template <typename Body>
FASTCONV_LOOP_INLINE void with_kernel_size(int64_t k, const Body& body) {
  if (k == 3) return body(std::integral_constant<int, 3>{});
  if (k == 5) return body(std::integral_constant<int, 5>{});
  body(std::integral_constant<int, 7>{});
}

// Calls body(std::integral_constant<int, S>{}) for the horizontal stride S,
// 1 or 2 (depthwise_runs takes no other).
template <typename Body>
FASTCONV_LOOP_INLINE void with_stride(int64_t stride, const Body& body) {
  if (stride == 1) return body(std::integral_constant<int, 1>{});
  body(std::integral_constant<int, 2>{});
}

// Output planes oc0 .. oc0 + count - 1 of image n, all of one group: each is
// its input plane correlated with its filter.
struct ForwardPlanes {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, const T* weight, const T* bias, T* output,
                                       const Conv2dParams* params, bool relu, int64_t n, int64_t oc0, int64_t count,
                                       GrowingBuffer<T>* scratch) {
    const Conv2dParams& p = *params;
    const int64_t og = p.out_channels_per_group(), g = oc0 / og, k = p.kernel_h;
    const int64_t rows = window_extent(p.out_h, p.stride_h, p.dilation_h, k);
    const int64_t cols = window_extent(p.out_w, p.stride_w, p.dilation_w, k);
    const PaddedPlane<T> in = pad_plane(input + (n * p.in_channels + g) * p.in_h * p.in_w, p.in_h, p.in_w, p.pad_h,
                                        p.pad_w, rows, cols, *scratch);
    with_kernel_size(k, [&](auto size) FASTCONV_LAMBDA_INLINE {
      with_stride(p.stride_w, [&](auto stride) FASTCONV_LAMBDA_INLINE {
        constexpr int K = decltype(size)::value, S = decltype(stride)::value;
        for (int64_t oc = oc0; oc < oc0 + count; ++oc) {
          const T b = bias != nullptr ? bias[oc] : T(0);
          T* out = output + (n * p.out_channels + oc) * p.out_h * p.out_w;
          for (int64_t oh = 0; oh < p.out_h; ++oh) {
            correlate_row<K, S>(in.data + oh * p.stride_h * in.pitch, p.dilation_h * in.pitch, weight + oc * K * K,
                                p.dilation_w, b, relu, out + oh * p.out_w, p.out_w);
          }
        }
      });
    });
  }
};

// dX plane (n, c) of a stride-1 layer: the "full" correlation of its group's
// dY planes with their filters rotated by 180 degrees, summed over the
// group's output channels.
struct BackwardInputPlane {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* weight, T* grad_input,
                                       const Conv2dParams* params, int64_t n, int64_t c, GrowingBuffer<T>* scratch,
                                       GrowingBuffer<T>* sum) {
    const Conv2dParams& p = *params;
    const int64_t og = p.out_channels_per_group(), k = p.kernel_h;
    // dX(i, j) = sum of w(kh, kw) dY(i + pad - kh dil, j + pad - kw dil): the
    // window of dY from (pad - (k - 1) dil) on, taps in reverse order.
    const int64_t rows = p.in_h + (k - 1) * p.dilation_h, cols = p.in_w + (k - 1) * p.dilation_w;
    T* dx = grad_input + (n * p.in_channels + c) * p.in_h * p.in_w;
    T* acc = og > 1 ? sum->get(p.in_w) : nullptr;
    with_kernel_size(k, [&](auto size) FASTCONV_LAMBDA_INLINE {
      constexpr int K = decltype(size)::value;
      for (int64_t m = 0; m < og; ++m) {
        const int64_t oc = c * og + m;
        const PaddedPlane<T> dy = pad_plane(grad_output + (n * p.out_channels + oc) * p.out_h * p.out_w, p.out_h,
                                            p.out_w, (K - 1) * p.dilation_h - p.pad_h,
                                            (K - 1) * p.dilation_w - p.pad_w, rows, cols, *scratch);
        T rotated[K * K];
        for (int t = 0; t < K * K; ++t) rotated[t] = weight[oc * K * K + K * K - 1 - t];
        for (int64_t i = 0; i < p.in_h; ++i) {
          T* row = dx + i * p.in_w;
          correlate_row<K, 1>(dy.data + i * dy.pitch, p.dilation_h * dy.pitch, rotated, p.dilation_w, T(0), false,
                              m == 0 ? row : acc, p.in_w);
          if (m > 0) add_row(row, acc, p.in_w);
        }
      }
    });
  }
};

// Sums a thread keeps for the flattened weight gradient at most: 128K
// elements, 512 KiB of float (5x5 taps of a 72 x 72 plane), in L2.
constexpr int64_t kFlatSumsMax = int64_t(128) << 10;

// dW of output channel oc: each tap's sum over the batch of dY times the
// input window it saw, the sums carried per pixel of a row (acc, a row of
// out_w a tap, in L1 or L2) and added up once at the end; every plane is
// read once.
struct BackwardWeightChannel {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* input, T* grad_weight,
                                       const Conv2dParams* params, int64_t oc, GrowingBuffer<T>* scratch,
                                       GrowingBuffer<T>* sums, GrowingBuffer<T>* dy_scratch) {
    const Conv2dParams& p = *params;
    const int64_t og = p.out_channels_per_group(), g = oc / og, w_out = p.out_w, k = p.kernel_h;
    const int64_t rows = window_extent(p.out_h, p.stride_h, p.dilation_h, k);
    const int64_t cols = window_extent(p.out_w, p.stride_w, p.dilation_w, k);
    if (k > 3 && p.stride_h == 1 && p.stride_w == 1 && k * k * flat_span(p.out_h, cols, w_out) <= kFlatSumsMax) {
      return flat_stride_1(grad_output, input, grad_weight, p, oc, g, rows, cols, *scratch, *sums, *dy_scratch);
    }
    T* acc = sums->get(k * k * w_out);
    std::fill_n(acc, k * k * w_out, T(0));
    for (int64_t n = 0; n < p.batch; ++n) {
      const PaddedPlane<T> in = pad_plane(input + (n * p.in_channels + g) * p.in_h * p.in_w, p.in_h, p.in_w,
                                          p.pad_h, p.pad_w, rows, cols, *scratch);
      const T* dy_plane = grad_output + (n * p.out_channels + oc) * p.out_h * w_out;
      with_stride(p.stride_w, [&](auto stride) FASTCONV_LAMBDA_INLINE {
        constexpr int S = decltype(stride)::value;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const T* dy = dy_plane + oh * w_out;
          for (int64_t kh = 0; kh < k; ++kh) {
            const T* x = in.data + (oh * p.stride_h + kh * p.dilation_h) * in.pitch;
            T* a = acc + kh * k * w_out;
            if (k == 3) {
              multiply_add_3_rows<S>(a, a + w_out, a + 2 * w_out, dy, x, p.dilation_w, w_out);
              continue;
            }
            for (int64_t kw = 0; kw < k; ++kw, a += w_out) multiply_add_row<S>(a, dy, x + kw * p.dilation_w, w_out);
          }
        }
      });
    }
    for (int64_t t = 0; t < k * k; ++t) {
      T total = T(0);
      for (int64_t j = 0; j < w_out; ++j) total += acc[t * w_out + j];
      grad_weight[oc * k * k + t] = total;
    }
  }

  // Elements from the first output of a plane to its last, rows `pitch`
  // apart.
  static int64_t flat_span(int64_t out_h, int64_t pitch, int64_t out_w) { return (out_h - 1) * pitch + out_w; }

  // 5x5 and 7x7 at stride 1 both ways: with dY laid out at the padded
  // input's row pitch, a tap's window is the input shifted by one offset, so
  // each tap is one multiply-add loop over the whole plane instead of one a
  // row (25 or 49 loops over a row of a few dozen pixels cost more in loop
  // overhead than in arithmetic: 96 channels @28 at batch 16 took 2.4 ms
  // for 5x5, 1.3 this way, ad hoc). The sums are kept per position (a
  // plane's worth a tap); the columns between rows only ever add dY's zeros
  // there, and are left out of the totals (an infinite input there would
  // make 0 * inf = NaN). For 3x3 the row loops, three taps a pass, measured
  // as fast at batch 16 and twice as fast at batch 1, where the per-position
  // sums cost more than the plane.
  template <typename T>
  static FASTCONV_LOOP_INLINE void flat_stride_1(const T* grad_output, const T* input, T* grad_weight,
                                                 const Conv2dParams& p, int64_t oc, int64_t g, int64_t rows,
                                                 int64_t cols, GrowingBuffer<T>& scratch, GrowingBuffer<T>& sums,
                                                 GrowingBuffer<T>& dy_scratch) {
    const int64_t k = p.kernel_h, w_out = p.out_w;
    T* acc = nullptr;
    int64_t span = 0, pitch = 0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const PaddedPlane<T> in = pad_plane(input + (n * p.in_channels + g) * p.in_h * p.in_w, p.in_h, p.in_w,
                                          p.pad_h, p.pad_w, rows, cols, scratch);
      if (n == 0) {
        pitch = in.pitch;
        span = flat_span(p.out_h, pitch, w_out);
        acc = sums.get(k * k * span + w_out);
        std::fill_n(acc, k * k * span, T(0));
      }
      // dY at the input's pitch, zeros between its rows.
      T* dy = dy_scratch.get(span);
      const T* dy_plane = grad_output + (n * p.out_channels + oc) * p.out_h * w_out;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        std::copy(dy_plane + oh * w_out, dy_plane + (oh + 1) * w_out, dy + oh * pitch);
        if (oh + 1 < p.out_h) std::fill(dy + oh * pitch + w_out, dy + (oh + 1) * pitch, T(0));
      }
      for (int64_t kh = 0; kh < k; ++kh) {
        const T* x = in.data + kh * p.dilation_h * pitch;
        T* a = acc + kh * k * span;
        for (int64_t kw = 0; kw < k; ++kw, a += span) multiply_add_row<1>(a, dy, x + kw * p.dilation_w, span);
      }
    }
    // Each tap's total: down the columns first (vector adds), then across
    // them, as the row-by-row weight gradient sums.
    T* column = acc + k * k * span;
    for (int64_t t = 0; t < k * k; ++t) {
      std::copy(acc + t * span, acc + t * span + w_out, column);
      for (int64_t oh = 1; oh < p.out_h; ++oh) add_row(column, acc + t * span + oh * pitch, w_out);
      T total = T(0);
      for (int64_t ow = 0; ow < w_out; ++ow) total += column[ow];
      grad_weight[oc * k * k + t] = total;
    }
  }
};

}  // namespace

bool depthwise_runs(const Conv2dParams& p, DepthwisePass pass) {
  const int64_t k = p.kernel_h;
  const bool shape = p.in_channels_per_group() == 1 && p.kernel_w == k && (k == 3 || k == 5 || k == 7) &&
                     p.out_h > 0 && p.out_w > 0;
  if (pass == DepthwisePass::kBackwardInput) return shape && p.stride_h == 1 && p.stride_w == 1;
  return shape && (p.stride_w == 1 || p.stride_w == 2);
}

// Output planes of one group a forward task computes at most: the channel
// multiplier's planes share their padded input.
constexpr int64_t kPlanesPerTask = 4;

template <typename T>
void depthwise_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                       bool relu) {
  const int64_t og = p.out_channels_per_group(), per_group = ceil_div(og, kPlanesPerTask);
  at::parallel_for(0, p.batch * p.groups * per_group, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (p.groups * per_group), g = task / per_group % p.groups, part = task % per_group;
      const int64_t oc0 = g * og + part * kPlanesPerTask, count = std::min(kPlanesPerTask, (g + 1) * og - oc0);
      run_widest<ForwardPlanes>(input, weight, bias, output, &p, relu, n, oc0, count, &scratch);
    }
  });
}

template <typename T>
void depthwise_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch, sum;
    for (int64_t plane = begin; plane < end; ++plane) {
      run_widest<BackwardInputPlane>(grad_output, weight, grad_input, &p, plane / p.in_channels,
                                     plane % p.in_channels, &scratch, &sum);
    }
  });
}

template <typename T>
void depthwise_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  at::parallel_for(0, p.out_channels, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch, sums, dy;
    for (int64_t oc = begin; oc < end; ++oc) {
      run_widest<BackwardWeightChannel>(grad_output, input, grad_weight, &p, oc, &scratch, &sums, &dy);
    }
  });
}

#define FASTCONV_INSTANTIATE_DEPTHWISE(T)                                                          \
  template void depthwise_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool); \
  template void depthwise_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);          \
  template void depthwise_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_DEPTHWISE(float)
FASTCONV_INSTANTIATE_DEPTHWISE(double)

}  // namespace cpu
}  // namespace fastconv
