// 3x3 convolutions with one input channel per group (depthwise, any channel
// multiplier), for the direct algorithm. The general direct kernels add one
// tap at a time over a whole row, so each output is loaded and stored nine
// times in row loops a few dozen pixels long; here a row of outputs is
// computed with all nine taps held in registers and stored once. Windows read
// a zero-padded copy of the plane they slide over (kept in L1 or L2), so the
// inner loops have no bounds and vectorise across the row at the clone's
// width (isa_loops.h).
#include "conv2d_depthwise.h"

#include <algorithm>
#include <vector>

#include "../common/index_math.h"
#include "isa_loops.h"
#include "parallel.h"
#include "scratch.h"

namespace fastconv {
namespace cpu {
namespace {

constexpr int64_t kTaps = 9;

// The input rows (or columns) a 3x3 window slides over to make `out`
// outputs: from the first window's top to the last one's bottom.
inline int64_t window_extent(int64_t out, int64_t stride, int64_t dilation) {
  return (out - 1) * stride + 2 * dilation + 1;
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

// out[j] = b + sum over taps of w[kh * 3 + kw] * rows[kh][j * kStride + kw *
// dil], with torch's ReLU (NaN passes) where `relu`. The stride is a
// template argument so that the compiler vectorises stride-2 reads too.
template <int kStride, typename T>
FASTCONV_LOOP_INLINE void correlate_row(const T* __restrict r0, const T* __restrict r1, const T* __restrict r2,
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

// a[j] += dy[j] * x[j * kStride] over a row.
template <int kStride, typename T>
FASTCONV_LOOP_INLINE void multiply_add_row(T* __restrict a, const T* __restrict dy, const T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) a[j] += dy[j] * x[j * kStride];
}

// Output planes oc0 .. oc0 + count - 1 of image n, all of one group: each is
// its input plane correlated with its 3x3 filter.
struct ForwardPlanes {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, const T* weight, const T* bias, T* output,
                                       const Conv2dParams* params, bool relu, int64_t n, int64_t oc0, int64_t count,
                                       GrowingBuffer<T>* scratch) {
    const Conv2dParams& p = *params;
    const int64_t og = p.out_channels_per_group(), g = oc0 / og;
    const int64_t rows = window_extent(p.out_h, p.stride_h, p.dilation_h);
    const int64_t cols = window_extent(p.out_w, p.stride_w, p.dilation_w);
    const PaddedPlane<T> in = pad_plane(input + (n * p.in_channels + g) * p.in_h * p.in_w, p.in_h, p.in_w, p.pad_h,
                                        p.pad_w, rows, cols, *scratch);
    for (int64_t oc = oc0; oc < oc0 + count; ++oc) {
      const T* w = weight + oc * kTaps;
      const T b = bias != nullptr ? bias[oc] : T(0);
      T* out = output + (n * p.out_channels + oc) * p.out_h * p.out_w;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const T* r0 = in.data + oh * p.stride_h * in.pitch;
        const T* r1 = r0 + p.dilation_h * in.pitch;
        const T* r2 = r1 + p.dilation_h * in.pitch;
        T* row = out + oh * p.out_w;
        if (p.stride_w == 1) {
          correlate_row<1>(r0, r1, r2, w, p.dilation_w, b, relu, row, p.out_w);
        } else {
          correlate_row<2>(r0, r1, r2, w, p.dilation_w, b, relu, row, p.out_w);
        }
      }
    }
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
    const int64_t og = p.out_channels_per_group();
    // dX(i, j) = sum of w(kh, kw) dY(i + pad - kh dil, j + pad - kw dil): the
    // window of dY from (pad - 2 dil) on, taps in reverse order.
    const int64_t rows = p.in_h + 2 * p.dilation_h, cols = p.in_w + 2 * p.dilation_w;
    T* dx = grad_input + (n * p.in_channels + c) * p.in_h * p.in_w;
    T* acc = og > 1 ? sum->get(p.in_w) : nullptr;
    for (int64_t k = 0; k < og; ++k) {
      const int64_t oc = c * og + k;
      const PaddedPlane<T> dy = pad_plane(grad_output + (n * p.out_channels + oc) * p.out_h * p.out_w, p.out_h,
                                          p.out_w, 2 * p.dilation_h - p.pad_h, 2 * p.dilation_w - p.pad_w, rows,
                                          cols, *scratch);
      T rotated[kTaps];
      for (int64_t t = 0; t < kTaps; ++t) rotated[t] = weight[oc * kTaps + kTaps - 1 - t];
      for (int64_t i = 0; i < p.in_h; ++i) {
        const T* r0 = dy.data + i * dy.pitch;
        T* row = dx + i * p.in_w;
        T* out = k == 0 ? row : acc;
        correlate_row<1>(r0, r0 + p.dilation_h * dy.pitch, r0 + 2 * p.dilation_h * dy.pitch, rotated, p.dilation_w,
                         T(0), false, out, p.in_w);
        if (k > 0) {
          for (int64_t j = 0; j < p.in_w; ++j) row[j] += acc[j];
        }
      }
    }
  }
};

// dW of output channel oc: each tap's sum over the batch of dY times the
// input window it saw, the nine sums carried per pixel of a row (acc, 9 rows
// of out_w, in L1) and added up once at the end; every plane is read once.
struct BackwardWeightChannel {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* input, T* grad_weight,
                                       const Conv2dParams* params, int64_t oc, GrowingBuffer<T>* scratch, T* acc) {
    const Conv2dParams& p = *params;
    const int64_t og = p.out_channels_per_group(), g = oc / og, w_out = p.out_w;
    const int64_t rows = window_extent(p.out_h, p.stride_h, p.dilation_h);
    const int64_t cols = window_extent(p.out_w, p.stride_w, p.dilation_w);
    std::fill_n(acc, kTaps * w_out, T(0));
    for (int64_t n = 0; n < p.batch; ++n) {
      const PaddedPlane<T> in = pad_plane(input + (n * p.in_channels + g) * p.in_h * p.in_w, p.in_h, p.in_w,
                                          p.pad_h, p.pad_w, rows, cols, *scratch);
      const T* dy_plane = grad_output + (n * p.out_channels + oc) * p.out_h * w_out;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const T* dy = dy_plane + oh * w_out;
        for (int64_t kh = 0; kh < 3; ++kh) {
          const T* x = in.data + (oh * p.stride_h + kh * p.dilation_h) * in.pitch;
          for (int64_t kw = 0; kw < 3; ++kw) {
            T* a = acc + (kh * 3 + kw) * w_out;
            if (p.stride_w == 1) {
              multiply_add_row<1>(a, dy, x + kw * p.dilation_w, w_out);
            } else {
              multiply_add_row<2>(a, dy, x + kw * p.dilation_w, w_out);
            }
          }
        }
      }
    }
    for (int64_t t = 0; t < kTaps; ++t) {
      T total = T(0);
      for (int64_t j = 0; j < w_out; ++j) total += acc[t * w_out + j];
      grad_weight[oc * kTaps + t] = total;
    }
  }
};

}  // namespace

bool depthwise_3x3_runs(const Conv2dParams& p, DepthwisePass pass) {
  const bool shape = p.in_channels_per_group() == 1 && p.kernel_h == 3 && p.kernel_w == 3 && p.out_h > 0 &&
                     p.out_w > 0;
  if (pass == DepthwisePass::kBackwardInput) return shape && p.stride_h == 1 && p.stride_w == 1;
  return shape && (p.stride_w == 1 || p.stride_w == 2);
}

template <typename T>
void depthwise_3x3_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                           bool relu) {
  // Tasks of up to 4 output planes of one group (the channel multiplier's
  // planes share their padded input).
  const int64_t og = p.out_channels_per_group(), per_group = ceil_div(og, int64_t(4));
  at::parallel_for(0, p.batch * p.groups * per_group, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (p.groups * per_group), g = task / per_group % p.groups, part = task % per_group;
      const int64_t oc0 = g * og + part * 4, count = std::min<int64_t>(4, (g + 1) * og - oc0);
      run_widest<ForwardPlanes>(input, weight, bias, output, &p, relu, n, oc0, count, &scratch);
    }
  });
}

template <typename T>
void depthwise_3x3_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch, sum;
    for (int64_t plane = begin; plane < end; ++plane) {
      run_widest<BackwardInputPlane>(grad_output, weight, grad_input, &p, plane / p.in_channels,
                                     plane % p.in_channels, &scratch, &sum);
    }
  });
}

template <typename T>
void depthwise_3x3_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  at::parallel_for(0, p.out_channels, 1, [&](int64_t begin, int64_t end) {
    GrowingBuffer<T> scratch;
    std::vector<T> acc(kTaps * p.out_w);
    for (int64_t oc = begin; oc < end; ++oc) {
      run_widest<BackwardWeightChannel>(grad_output, input, grad_weight, &p, oc, &scratch, acc.data());
    }
  });
}

#define FASTCONV_INSTANTIATE_DEPTHWISE(T)                                                                  \
  template void depthwise_3x3_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool);     \
  template void depthwise_3x3_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);              \
  template void depthwise_3x3_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_DEPTHWISE(float)
FASTCONV_INSTANTIATE_DEPTHWISE(double)

}  // namespace cpu
}  // namespace fastconv
