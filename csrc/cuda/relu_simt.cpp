// Host build of csrc/cuda/relu.cuh: the same kernels, run by the SIMT runtime.
#include "relu.cuh"

namespace fastconv {
namespace simt {
FASTCONV_INSTANTIATE_RELU(float)
FASTCONV_INSTANTIATE_RELU(double)
}  // namespace simt
}  // namespace fastconv
