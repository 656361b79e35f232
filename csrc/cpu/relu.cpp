#include "relu.h"

#include "parallel.h"

namespace fastconv {
namespace cpu {

// Branch-free select so the compiler vectorises both loops.
template <typename T>
void relu_forward(Target, const T* input, T* output, int64_t n) {
  parallel_chunks(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) output[i] = input[i] < T(0) ? T(0) : input[i];
  });
}

template <typename T>
void relu_backward(Target, const T* grad_output, const T* output, T* grad_input, int64_t n) {
  parallel_chunks(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Both loads unconditional: a load inside the select would stop GCC from vectorising.
      const T grad = grad_output[i];
      const T out = output[i];
      grad_input[i] = out <= T(0) ? T(0) : grad;
    }
  });
}

template void relu_forward<float>(Target, const float*, float*, int64_t);
template void relu_forward<double>(Target, const double*, double*, int64_t);
template void relu_backward<float>(Target, const float*, const float*, float*, int64_t);
template void relu_backward<double>(Target, const double*, const double*, double*, int64_t);

}  // namespace cpu
}  // namespace fastconv
