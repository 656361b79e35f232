// Direct convolution: no column matrix. Every loop nest ends in a loop over
// one row of output pixels (ow) that reads the matching input row at
// ow * stride + shift; with stride 1 both rows are contiguous and the
// multiply-adds vectorise. Taps that would read padding are cut off by
// computing the valid ow range once per (kw) instead of testing per pixel.
// Each parallel task's work is one function compiled for every vector ISA
// (isa_loops.h): built at the baseline, the row loops ran 128 bits wide.
// Depthwise layers with 3x3, 5x5 and 7x7 kernels go to their own kernels
// (conv2d_depthwise.h), which keep a row's taps in registers.
#include <algorithm>
#include <vector>

#include "conv2d_algorithms.h"
#include "conv2d_depthwise.h"
#include "../common/index_math.h"
#include "isa_loops.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Output channels computed together in the forward pass: each input row
// loaded once feeds this many output rows.
constexpr int64_t kOcBlock = 4;

// out_rows[b][ow] += w[b] * in_row[ow * stride] over ow in [begin, end), b < count.
template <typename T>
FASTCONV_LOOP_INLINE void axpy_rows(T* const* out_rows, const T* w, int64_t count, const T* __restrict in_row,
                                    int64_t stride, int64_t begin, int64_t end) {
  if (count == kOcBlock && stride == 1) {
    T* __restrict o0 = out_rows[0];
    T* __restrict o1 = out_rows[1];
    T* __restrict o2 = out_rows[2];
    T* __restrict o3 = out_rows[3];
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    for (int64_t ow = begin; ow < end; ++ow) {
      const T x = in_row[ow];
      o0[ow] += w0 * x;
      o1[ow] += w1 * x;
      o2[ow] += w2 * x;
      o3[ow] += w3 * x;
    }
    return;
  }
  for (int64_t b = 0; b < count; ++b) {
    T* __restrict o = out_rows[b];
    const T wb = w[b];
    if (stride == 1) {
      for (int64_t ow = begin; ow < end; ++ow) o[ow] += wb * in_row[ow];
    } else {
      for (int64_t ow = begin; ow < end; ++ow) o[ow] += wb * in_row[ow * stride];
    }
  }
}

// torch's ReLU in place (NaN passes); a branch-free select that vectorises.
template <typename T>
FASTCONV_LOOP_INLINE void relu_inplace(T* __restrict data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = data[i] < T(0) ? T(0) : data[i];
}

// One block of up to kOcBlock output planes of one image and group.
struct ForwardBlock {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, const T* weight, const T* bias, T* output,
                                       const Conv2dParams* params, bool relu, int64_t item) {
    const Conv2dParams& p = *params;
    const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
    const int64_t pixels = p.out_pixels(), plane = p.in_h * p.in_w;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t blocks_per_group = (og + kOcBlock - 1) / kOcBlock;
    const int64_t n = item / (p.groups * blocks_per_group);
    const int64_t g = item / blocks_per_group % p.groups;
    const int64_t oc0 = g * og + item % blocks_per_group * kOcBlock;
    const int64_t count = std::min(kOcBlock, (g + 1) * og - oc0);
    T* out = output + (n * p.out_channels + oc0) * pixels;
    for (int64_t b = 0; b < count; ++b) std::fill_n(out + b * pixels, pixels, bias ? bias[oc0 + b] : T(0));
    for (int64_t ic = 0; ic < cg; ++ic) {
      const T* in_plane = input + (n * p.in_channels + g * cg + ic) * plane;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          T w[kOcBlock];
          for (int64_t b = 0; b < count; ++b) w[b] = weight[((oc0 + b) * cg + ic) * taps + kh * p.kernel_w + kw];
          const int64_t shift_w = kw * p.dilation_w - p.pad_w;
          const IndexRange cols = outputs_inside(shift_w, p.stride_w, p.in_w, p.out_w);
          for (int64_t oh = 0; oh < p.out_h; ++oh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_h) continue;
            T* rows[kOcBlock];
            for (int64_t b = 0; b < count; ++b) rows[b] = out + b * pixels + oh * p.out_w;
            axpy_rows(rows, w, count, in_plane + ih * p.in_w + shift_w, p.stride_w, cols.begin, cols.end);
          }
        }
      }
    }
    // conv2d_relu's epilogue: the block's planes are final (and still in
    // cache) once the last input channel has been added.
    if (relu) relu_inplace(out, count * pixels);
  }
};

// One input-gradient plane (n, c), gathered from every output channel of
// its group.
struct BackwardInputPlane {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* weight, T* grad_input,
                                       const Conv2dParams* params, int64_t item) {
    const Conv2dParams& p = *params;
    const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
    const int64_t pixels = p.out_pixels(), plane = p.in_h * p.in_w;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t n = item / p.in_channels, c = item % p.in_channels;
    const int64_t g = c / cg, ic = c % cg;
    T* grad_plane = grad_input + item * plane;
    std::fill_n(grad_plane, plane, T(0));
    for (int64_t oc = g * og; oc < (g + 1) * og; ++oc) {
      const T* grad_out = grad_output + (n * p.out_channels + oc) * pixels;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const T w = weight[(oc * cg + ic) * taps + kh * p.kernel_w + kw];
          const int64_t shift_w = kw * p.dilation_w - p.pad_w;
          const IndexRange cols = outputs_inside(shift_w, p.stride_w, p.in_w, p.out_w);
          for (int64_t oh = 0; oh < p.out_h; ++oh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_h) continue;
            T* __restrict dst = grad_plane + ih * p.in_w + shift_w;
            const T* __restrict src = grad_out + oh * p.out_w;
            if (p.stride_w == 1) {
              for (int64_t ow = cols.begin; ow < cols.end; ++ow) dst[ow] += w * src[ow];
            } else {
              for (int64_t ow = cols.begin; ow < cols.end; ++ow) dst[ow * p.stride_w] += w * src[ow];
            }
          }
        }
      }
    }
  }
};

// The weights of one output channel. A row of per-pixel partial sums
// (acc[ow]) turns the reduction over pixels into vectorisable multiply-adds;
// the row is summed once per weight.
struct BackwardWeightChannel {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* input, T* grad_weight,
                                       const Conv2dParams* params, int64_t oc, T* acc) {
    const Conv2dParams& p = *params;
    const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
    const int64_t pixels = p.out_pixels(), plane = p.in_h * p.in_w;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t g = oc / og;
    for (int64_t ic = 0; ic < cg; ++ic) {
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          std::fill_n(acc, p.out_w, T(0));
          const int64_t shift_w = kw * p.dilation_w - p.pad_w;
          const IndexRange cols = outputs_inside(shift_w, p.stride_w, p.in_w, p.out_w);
          for (int64_t n = 0; n < p.batch; ++n) {
            const T* grad_out = grad_output + (n * p.out_channels + oc) * pixels;
            const T* in_plane = input + (n * p.in_channels + g * cg + ic) * plane;
            for (int64_t oh = 0; oh < p.out_h; ++oh) {
              const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
              if (ih < 0 || ih >= p.in_h) continue;
              const T* __restrict src = in_plane + ih * p.in_w + shift_w;
              const T* __restrict dy = grad_out + oh * p.out_w;
              T* __restrict a = acc;
              if (p.stride_w == 1) {
                for (int64_t ow = cols.begin; ow < cols.end; ++ow) a[ow] += dy[ow] * src[ow];
              } else {
                for (int64_t ow = cols.begin; ow < cols.end; ++ow) a[ow] += dy[ow] * src[ow * p.stride_w];
              }
            }
          }
          T sum = T(0);
          for (int64_t ow = 0; ow < p.out_w; ++ow) sum += acc[ow];
          grad_weight[(oc * cg + ic) * taps + kh * p.kernel_w + kw] = sum;
        }
      }
    }
  }
};

}  // namespace

template <typename T>
void direct_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                    bool relu) {
  if (depthwise_runs(p, DepthwisePass::kForward)) return depthwise_forward(input, weight, bias, output, p, relu);
  const int64_t blocks = p.batch * p.groups * ((p.out_channels_per_group() + kOcBlock - 1) / kOcBlock);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      run_widest<ForwardBlock>(input, weight, bias, output, &p, relu, item);
    }
  });
}

// Each task owns one input-gradient plane (n, ic), so no two tasks write the
// same element.
template <typename T>
void direct_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  if (depthwise_runs(p, DepthwisePass::kBackwardInput)) {
    return depthwise_backward_input(grad_output, weight, grad_input, p);
  }
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      run_widest<BackwardInputPlane>(grad_output, weight, grad_input, &p, item);
    }
  });
}

// Each task owns one output channel's weights.
template <typename T>
void direct_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  if (depthwise_runs(p, DepthwisePass::kBackwardWeight)) {
    return depthwise_backward_weight(grad_output, input, grad_weight, p);
  }
  at::parallel_for(0, p.out_channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(p.out_w);
    for (int64_t oc = begin; oc < end; ++oc)
      run_widest<BackwardWeightChannel>(grad_output, input, grad_weight, &p, oc, acc.data());
  });
}

#define FASTCONV_INSTANTIATE_DIRECT(T)                                                                 \
  template void direct_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool);        \
  template void direct_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);                 \
  template void direct_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_DIRECT(float)
FASTCONV_INSTANTIATE_DIRECT(double)

}  // namespace cpu
}  // namespace fastconv
