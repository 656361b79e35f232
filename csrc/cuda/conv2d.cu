// nvcc unit: the convolution workspace query and the float/double launchers
// (half/bfloat16 live in conv2d_half.cu so the two halves compile in parallel).
#include "conv2d.cuh"

namespace fastconv {
namespace cuda {
FASTCONV_DEFINE_CONV2D_WORKSPACE
FASTCONV_INSTANTIATE_CONV2D(float)
FASTCONV_INSTANTIATE_CONV2D(double)
}  // namespace cuda
}  // namespace fastconv
