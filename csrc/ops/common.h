// Shared by the ATen glue in csrc/ops: backend selection, argument checks,
// the ATen -> kernel type mapping and launch-error handling.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/string_view.h>

#include "../common/dtypes.h"

namespace fastconv {

// Where an op's kernels run. CPU tensors use the C++ kernels ("cpu") or the
// CUDA kernels on the SIMT runtime ("simt"); CUDA tensors use the CUDA kernels.
// "simt:tf32" is "simt" with float32 convolutions on (emulated) TF32 tensor
// cores, which torch's rule gives CUDA tensors by default (csrc/ops/conv2d.cpp).
enum class Backend { kCpu, kSimt, kCuda };

// The values the ops' string and probability arguments accept; anything else
// raises ValueError naming `op` and what is accepted. The Python layer calls these too
// (through fastconv._C), so a bad name fails where it is given, with the same
// message, and the lists live only here.
void check_backend_name(c10::string_view name, const char* op);
void check_algorithm_name(c10::string_view name, const char* op);
// Dropout's p, in [0, 1] (ValueError otherwise, as torch's dropout).
void check_dropout_probability(double p, const char* op);

// Resolves the `backend` argument of every op ("auto", "cpu", "simt",
// "simt:tf32", "cuda") against the tensor's device. Unknown names raise ValueError; a name
// that cannot serve the device raises RuntimeError.
Backend select_backend(const at::Tensor& like, c10::string_view requested, const char* op);

// The backend a name picks for `like`, unchecked: "auto" is cpu for CPU
// tensors and cuda for the others. For the autograd kernels, which choose how
// to record an op before the op checks its arguments: an unknown name gives
// kSimt, and the op then refuses it; a meta tensor (no kernels of ours) goes
// the cuda way, to the op's fake kernel.
Backend requested_backend(const at::Tensor& like, c10::string_view requested);

// select_backend for the ops that store compact state for backward (masks,
// pooling taps), which only the cpu backend has: RuntimeError for any other,
// naming what is stored (`stored`: "relu masks") and, in `alternative`, the
// ops to use instead.
Backend select_state_storing_backend(const at::Tensor& like, c10::string_view requested, const char* op,
                                     const char* stored, const char* alternative);

// float32/float64 everywhere, plus float16/bfloat16 on the CUDA and SIMT backends (TypeError otherwise).
void check_floating(const at::Tensor& t, Backend backend, const char* op, const char* arg);

// Same device and dtype as `reference` (RuntimeError naming both otherwise).
void check_same_device_dtype(const at::Tensor& t, const at::Tensor& reference, const char* op,
                             const char* arg, const char* reference_arg);

// `t` with exactly `like`'s strides: itself when they already agree, a copy
// otherwise. Elementwise kernels then walk both buffers in storage order.
at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like);

// The kernels write NCHW-contiguous outputs; torch hands back a channels_last
// input's results in channels_last. This returns `output` in the layout torch
// would give for `input` (itself when that is already its layout).
at::Tensor in_layout_of(const at::Tensor& output, const at::Tensor& input);

// Turns a launcher's error message (nullptr on success) into an exception.
void check_launch(const char* error, const char* op);

// The current CUDA stream of the tensor's device, as the launchers take it.
void* cuda_stream_for(const at::Tensor& t);

// ATen's half types and the torch-free kernel types share their bit layout.
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<at::Half> {
  using type = half_t;
};
template <>
struct KernelType<at::BFloat16> {
  using type = bfloat16_t;
};
template <typename T>
using kernel_t = typename KernelType<T>::type;

}  // namespace fastconv
