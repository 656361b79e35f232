// One path from an op's glue to its kernels on every backend, and one
// registration of its entry points for every device.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/target.h"
#include "common.h"

namespace fastconv {

// A tensor's data as the kernels' element type T (float, double, half_t or
// bfloat16_t), for tensors whose dtype run_kernels has dispatched on.
template <typename T>
const T* in_ptr(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}
template <typename T>
T* out_ptr(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

namespace detail {

// The CPU kernels return nothing; the CUDA and SIMT launchers return an
// error message (nullptr on success), which becomes an exception.
template <typename T, typename Target, typename Launch>
void call_kernels(const Launch& launch, Target target, const char* op) {
  if constexpr (std::is_void_v<decltype(launch.template operator()<T>(target))>) {
    launch.template operator()<T>(target);
  } else {
    check_launch(launch.template operator()<T>(target), op);
  }
}

}  // namespace detail

// Runs `launch` once, on the kernels of `backend`, for the dtype of `like`:
// launch.template operator()<T>(target), with T the kernels' element type and
// target the backend's Target (csrc/common/target.h). An op writes its kernel
// call once, unqualified, and argument-dependent lookup picks the backend:
//
//   run_kernels(backend, x, "relu", [&]<typename T>(auto target) {
//     return relu_forward(target, in_ptr<T>(x), out_ptr<T>(y), n);
//   });
//
// The dtypes each backend's kernels are built for are listed here and in
// check_floating (which reports the others before anything is allocated).
// CUDA launches guard the tensor's device and use its current stream.
//
// run_cpu_kernels is the CPU case alone, for CPU-only kernels (ADL then needs
// no CUDA or SIMT overload of the call).
template <typename Launch>
void run_cpu_kernels(const at::Tensor& like, const char* op, const Launch& launch) {
  AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "fastconv_cpu", [&] {
    detail::call_kernels<kernel_t<scalar_t>>(launch, cpu::Target{}, op);
  });
}

template <typename Launch>
void run_kernels(Backend backend, const at::Tensor& like, const char* op, const Launch& launch) {
  switch (backend) {
    case Backend::kCpu:
      run_cpu_kernels(like, op, launch);
      return;
    case Backend::kSimt:
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "fastconv_simt", [&] {
        detail::call_kernels<kernel_t<scalar_t>>(launch, simt::Target{nullptr}, op);
      });
      return;
    case Backend::kCuda: {
#if defined(FASTCONV_WITH_CUDA)
      const c10::DeviceGuard guard(like.device());
      const cuda::Target target{cuda_stream_for(like)};
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "fastconv_cuda", [&] {
        detail::call_kernels<kernel_t<scalar_t>>(launch, target, op);
      });
      return;
#else
      TORCH_CHECK(false, op, ": fastconv was built without CUDA kernels");
#endif
    }
  }
}

}  // namespace fastconv

// Registers an op family's entry points (a function taking the
// torch::Library) for every dispatch key fastconv serves. The same entry
// points serve all of them: the backend argument and the tensors' device
// pick the kernels inside.
#define FASTCONV_REGISTER_KERNELS(register_entry_points)                    \
  TORCH_LIBRARY_IMPL(fastconv, CPU, m) { register_entry_points(m); }      \
  TORCH_LIBRARY_IMPL(fastconv, CUDA, m) { register_entry_points(m); }
