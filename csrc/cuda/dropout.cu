// nvcc unit: instantiates the dropout launchers for every CUDA dtype.
#include "dropout.cuh"

namespace fastconv {
namespace cuda {
FASTCONV_INSTANTIATE_DROPOUT(float)
FASTCONV_INSTANTIATE_DROPOUT(double)
FASTCONV_INSTANTIATE_DROPOUT(half_t)
FASTCONV_INSTANTIATE_DROPOUT(bfloat16_t)
}  // namespace cuda
}  // namespace fastconv
