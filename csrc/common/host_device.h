// FASTCONV_HD marks helpers that CPU code, the SIMT runtime and CUDA device
// code all call: __host__ __device__ under nvcc, plain inline elsewhere.
#pragma once

#if defined(__CUDACC__)
#define FASTCONV_HD __host__ __device__ __forceinline__
#else
#define FASTCONV_HD inline
#endif
