// Where a kernel call runs, as a tag type per backend namespace. Every entry
// point of the CPU kernels (namespace cpu) and every launcher of the CUDA
// kernels (namespace cuda on a GPU, namespace simt on the SIMT runtime) takes
// its namespace's Target first. The ATen glue then writes each kernel call
// once, unqualified (`relu_forward(target, ...)`), and argument-dependent
// lookup picks the backend's function from the target's type
// (csrc/ops/dispatch.h). Torch-free.
#pragma once

namespace fastconv {
namespace cpu {
struct Target {};
}  // namespace cpu
namespace cuda {
struct Target {
  void* stream;  // the cudaStream_t to launch on
};
}  // namespace cuda
namespace simt {
struct Target {
  void* stream;  // accepted for symmetry with cuda::Target: SIMT launches are synchronous
};
}  // namespace simt
}  // namespace fastconv
