// Host build of csrc/cuda/dropout.cuh: the same kernels, run by the SIMT runtime.
#include "dropout.cuh"

namespace fastconv {
namespace simt {
FASTCONV_INSTANTIATE_DROPOUT(float)
FASTCONV_INSTANTIATE_DROPOUT(double)
FASTCONV_INSTANTIATE_DROPOUT(half_t)
FASTCONV_INSTANTIATE_DROPOUT(bfloat16_t)
}  // namespace simt
}  // namespace fastconv
