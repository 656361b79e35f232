// nvcc unit: instantiates the ReLU launchers for every CUDA dtype.
#include "relu.cuh"

namespace fastconv {
namespace cuda {
FASTCONV_INSTANTIATE_RELU(float)
FASTCONV_INSTANTIATE_RELU(double)
FASTCONV_INSTANTIATE_RELU(half_t)
FASTCONV_INSTANTIATE_RELU(bfloat16_t)
}  // namespace cuda
}  // namespace fastconv
