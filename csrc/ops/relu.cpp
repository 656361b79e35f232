// ReLU ops: argument checks, output allocation, and dispatch to the CPU
// kernels (csrc/cpu/relu.cpp) or the CUDA kernels (csrc/cuda/relu.cuh) on a
// GPU or on the SIMT runtime.
#include <torch/library.h>

#include "../cpu/relu.h"
#include "../cuda/relu.h"
#include "common.h"

namespace fastconv {
namespace {

// Writes relu(input) into `output`, which has input's shape and is dense.
void relu_into(const at::Tensor& input, const at::Tensor& output, Backend backend) {
  const at::Tensor in = with_layout_of(input, output);
  const int64_t n = output.numel();
  switch (backend) {
    case Backend::kCpu:
      AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "relu", [&] {
        cpu::relu_forward(in.const_data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), n);
      });
      break;
    case Backend::kSimt:
      AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "relu", [&] {
        check_launch(simt::relu_forward(kernel_ptr<scalar_t>(in), kernel_ptr<scalar_t>(output), n, nullptr),
                     "relu");
      });
      break;
    case Backend::kCuda:
      FASTCONV_CUDA_ONLY({
        const c10::DeviceGuard guard(in.device());
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "relu", [&] {
          check_launch(cuda::relu_forward(kernel_ptr<scalar_t>(in), kernel_ptr<scalar_t>(output), n,
                                          cuda_stream_for(in)),
                       "relu");
        });
      });
      break;
  }
}

at::Tensor relu(const at::Tensor& input, c10::string_view backend_name) {
  const Backend backend = select_backend(input, backend_name, "relu");
  check_floating(input, backend, "relu", "input");
  at::Tensor output = at::empty_like(input);
  relu_into(input, output, backend);
  return output;
}

void relu_(at::Tensor& self, c10::string_view backend_name) {
  const Backend backend = select_backend(self, backend_name, "relu_");
  check_floating(self, backend, "relu_", "input");
  if (self.is_non_overlapping_and_dense()) {
    relu_into(self, self, backend);
  } else {
    // Kernels need one dense buffer; compute beside it and write back.
    at::Tensor dense = at::empty_like(self);
    relu_into(self, dense, backend);
    self.copy_(dense);
  }
}

at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output,
                         c10::string_view backend_name) {
  const Backend backend = select_backend(output, backend_name, "relu_backward");
  check_floating(output, backend, "relu_backward", "output");
  check_same_device_dtype(grad_output, output, "relu_backward", "grad_output", "output");
  TORCH_CHECK(grad_output.sizes() == output.sizes(), "relu_backward: grad_output has shape ",
              grad_output.sizes(), " but output has shape ", output.sizes());
  at::Tensor grad_input = at::empty_like(output);
  const at::Tensor out = with_layout_of(output, grad_input);
  const at::Tensor grad = with_layout_of(grad_output, grad_input);
  const int64_t n = grad_input.numel();
  switch (backend) {
    case Backend::kCpu:
      AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "relu_backward", [&] {
        cpu::relu_backward(grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
                           grad_input.data_ptr<scalar_t>(), n);
      });
      break;
    case Backend::kSimt:
      AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "relu_backward", [&] {
        check_launch(simt::relu_backward(kernel_ptr<scalar_t>(grad), kernel_ptr<scalar_t>(out),
                                         kernel_ptr<scalar_t>(grad_input), n, nullptr),
                     "relu_backward");
      });
      break;
    case Backend::kCuda:
      FASTCONV_CUDA_ONLY({
        const c10::DeviceGuard guard(out.device());
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "relu_backward", [&] {
          check_launch(cuda::relu_backward(kernel_ptr<scalar_t>(grad), kernel_ptr<scalar_t>(out),
                                           kernel_ptr<scalar_t>(grad_input), n, cuda_stream_for(out)),
                       "relu_backward");
        });
      });
      break;
  }
  return grad_input;
}

}  // namespace

// The same entry points serve both dispatch keys: the backend argument and
// the tensor's device pick the kernels.
TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward);
}
TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward);
}

}  // namespace fastconv
