#include "relu.h"

#include "isa_loops.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Branch-free selects so the compiler vectorises both loops (run_widest
// compiles them for AVX-512 or AVX2 where the CPU has it). NaN and -0.0 pass
// through the forward select unchanged, as in torch.
template <typename T>
struct ReluForward {
  static FASTCONV_LOOP_INLINE void run(const T* input, T* output, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) output[i] = input[i] < T(0) ? T(0) : input[i];
  }
};

template <typename T>
struct ReluBackward {
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* output, T* grad_input, int64_t begin,
                                       int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Both loads unconditional: a load inside the select would stop GCC from vectorising.
      const T grad = grad_output[i];
      const T out = output[i];
      grad_input[i] = out <= T(0) ? T(0) : grad;
    }
  }
};

}  // namespace

template <typename T>
void relu_forward(Target, const T* input, T* output, int64_t n) {
  parallel_chunks(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    run_widest<ReluForward<T>>(input, output, begin, end);
  });
}

template <typename T>
void relu_backward(Target, const T* grad_output, const T* output, T* grad_input, int64_t n) {
  parallel_chunks(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    run_widest<ReluBackward<T>>(grad_output, output, grad_input, begin, end);
  });
}

template void relu_forward<float>(Target, const float*, float*, int64_t);
template void relu_forward<double>(Target, const double*, double*, int64_t);
template void relu_backward<float>(Target, const float*, const float*, float*, int64_t);
template void relu_backward<double>(Target, const double*, const double*, double*, int64_t);

}  // namespace cpu
}  // namespace fastconv
