// nvcc unit: instantiates the max pooling launchers for every CUDA dtype.
#include "max_pool2d.cuh"

namespace fastconv {
namespace cuda {
FASTCONV_INSTANTIATE_MAX_POOL2D(float)
FASTCONV_INSTANTIATE_MAX_POOL2D(double)
FASTCONV_INSTANTIATE_MAX_POOL2D(half_t)
FASTCONV_INSTANTIATE_MAX_POOL2D(bfloat16_t)
}  // namespace cuda
}  // namespace fastconv
