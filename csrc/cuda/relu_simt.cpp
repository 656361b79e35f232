// Host build of csrc/cuda/relu.cuh: the same kernels, run by the SIMT runtime.
#include "relu.cuh"

namespace fastconv {
namespace simt {
FASTCONV_INSTANTIATE_RELU(float)
FASTCONV_INSTANTIATE_RELU(double)
FASTCONV_INSTANTIATE_RELU(half_t)
FASTCONV_INSTANTIATE_RELU(bfloat16_t)
}  // namespace simt
}  // namespace fastconv
