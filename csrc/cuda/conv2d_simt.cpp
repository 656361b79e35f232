// Host build of csrc/cuda/conv2d.cuh: the same kernels, run by the SIMT runtime.
#include "conv2d.cuh"

namespace fastconv {
namespace simt {
FASTCONV_DEFINE_CONV2D_WORKSPACE
FASTCONV_INSTANTIATE_CONV2D(float)
FASTCONV_INSTANTIATE_CONV2D(double)
FASTCONV_INSTANTIATE_CONV2D(half_t)
FASTCONV_INSTANTIATE_CONV2D(bfloat16_t)
int device_compute_capability() { return ::simt::compute_capability(); }
}  // namespace simt
}  // namespace fastconv
