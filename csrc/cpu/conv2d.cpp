// Entry points of the CPU convolution: dispatch on the algorithm, and the
// bias gradient, which is the same for every algorithm.
#include "conv2d.h"

#include "conv2d_algorithms.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {

template <typename T>
void conv2d_forward(Target, ConvAlgorithm algorithm, const T* input, const T* weight, const T* bias, T* output,
                    const Conv2dParams& p, bool relu) {
  if (algorithm == ConvAlgorithm::kDirect) return direct_forward(input, weight, bias, output, p, relu);
  if (algorithm == ConvAlgorithm::kWinograd) return winograd_forward(input, weight, bias, output, p, relu);
  im2col_forward(input, weight, bias, output, p, relu);
}

template <typename T>
void conv2d_backward_input(Target, ConvAlgorithm algorithm, const T* grad_output, const T* weight, T* grad_input,
                           const Conv2dParams& p) {
  if (algorithm == ConvAlgorithm::kDirect) return direct_backward_input(grad_output, weight, grad_input, p);
  if (algorithm == ConvAlgorithm::kWinograd) return winograd_backward_input(grad_output, weight, grad_input, p);
  im2col_backward_input(grad_output, weight, grad_input, p);
}

template <typename T>
void conv2d_backward_weight(Target, ConvAlgorithm algorithm, const T* grad_output, const T* input, T* grad_weight,
                            const Conv2dParams& p) {
  if (algorithm == ConvAlgorithm::kDirect) return direct_backward_weight(grad_output, input, grad_weight, p);
  if (algorithm == ConvAlgorithm::kWinograd) return winograd_backward_weight(grad_output, input, grad_weight, p);
  im2col_backward_weight(grad_output, input, grad_weight, p);
}

// grad_bias[oc] = sum over batch and pixels of grad_output[n][oc]. Sixteen
// running partial sums per channel let the compiler vectorise the reduction
// (it may not reorder a single floating-point sum) and keep rounding error low.
template <typename T>
void conv2d_backward_bias(Target, const T* grad_output, T* grad_bias, const Conv2dParams& p) {
  constexpr int64_t kLanes = 16;
  const int64_t pixels = p.out_pixels();
  at::parallel_for(0, p.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      T lanes[kLanes] = {};
      T tail = T(0);
      for (int64_t n = 0; n < p.batch; ++n) {
        const T* plane = grad_output + (n * p.out_channels + oc) * pixels;
        int64_t i = 0;
        for (; i + kLanes <= pixels; i += kLanes)
          for (int64_t l = 0; l < kLanes; ++l) lanes[l] += plane[i + l];
        for (; i < pixels; ++i) tail += plane[i];
      }
      for (int64_t l = 0; l < kLanes; ++l) tail += lanes[l];
      grad_bias[oc] = tail;
    }
  });
}

#define FASTCONV_INSTANTIATE_CPU_CONV2D(T)                                                               \
  template void conv2d_forward<T>(Target, ConvAlgorithm, const T*, const T*, const T*, T*, const Conv2dParams&,  \
                                  bool);                                                                 \
  template void conv2d_backward_input<T>(Target, ConvAlgorithm, const T*, const T*, T*, const Conv2dParams&);    \
  template void conv2d_backward_weight<T>(Target, ConvAlgorithm, const T*, const T*, T*, const Conv2dParams&);   \
  template void conv2d_backward_bias<T>(Target, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_CPU_CONV2D(float)
FASTCONV_INSTANTIATE_CPU_CONV2D(double)

}  // namespace cpu
}  // namespace fastconv
