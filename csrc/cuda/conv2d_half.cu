// nvcc unit: the half and bfloat16 convolution launchers (fp32 accumulation).
#include "conv2d.cuh"

namespace fastconv {
namespace cuda {
FASTCONV_INSTANTIATE_CONV2D(half_t)
FASTCONV_INSTANTIATE_CONV2D(bfloat16_t)
}  // namespace cuda
}  // namespace fastconv
