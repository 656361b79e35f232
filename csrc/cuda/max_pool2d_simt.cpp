// Host build of csrc/cuda/max_pool2d.cuh: the same kernels, run by the SIMT runtime.
#include "max_pool2d.cuh"

namespace fastconv {
namespace simt {
FASTCONV_INSTANTIATE_MAX_POOL2D(float)
FASTCONV_INSTANTIATE_MAX_POOL2D(double)
FASTCONV_INSTANTIATE_MAX_POOL2D(half_t)
FASTCONV_INSTANTIATE_MAX_POOL2D(bfloat16_t)
}  // namespace simt
}  // namespace fastconv
