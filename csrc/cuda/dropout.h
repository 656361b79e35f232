// Launchers of the dropout kernels (csrc/cuda/dropout.cuh) for the CUDA and
// SIMT builds. `seed_offset` points at two int64 values in device memory
// (the Philox seed and counter offset), so a captured graph replays with
// whatever seed the tensor holds. Each returns nullptr or the CUDA error.
#pragma once

#include <cstdint>

#include "../common/dtypes.h"
#include "../common/target.h"

#define FASTCONV_DECLARE_DROPOUT_LAUNCHERS                                                     \
  /* output = input * keep(i) * scale; dropout backward is the same map over grad_output. */ \
  template <typename T>                                                                        \
  const char* dropout_apply(Target target, const T* input, T* output, int64_t n,                \
                            const int64_t* seed_offset, uint32_t drop_threshold, acc_t<T> scale);

namespace fastconv {
namespace cuda {
FASTCONV_DECLARE_DROPOUT_LAUNCHERS
}
namespace simt {
FASTCONV_DECLARE_DROPOUT_LAUNCHERS
}
}  // namespace fastconv
