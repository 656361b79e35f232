// ReLU ops: argument checks, output allocation, and one call into the
// kernels of the chosen backend (csrc/cpu/relu.cpp, csrc/cuda/relu.cuh).
#include "../cpu/relu.h"
#include "../cuda/relu.h"
#include "dispatch.h"
#include "output_buffers.h"

namespace fastconv {
namespace {

// Writes relu(input) into `output`, which has input's shape and is dense.
void relu_into(const at::Tensor& input, const at::Tensor& output, Backend backend, const char* op) {
  const at::Tensor in = with_layout_of(input, output);
  const int64_t n = output.numel();
  run_kernels(backend, in, op, [&]<typename T>(auto target) {
    return relu_forward(target, in_ptr<T>(in), out_ptr<T>(output), n);
  });
}

at::Tensor relu(const at::Tensor& input, c10::string_view backend_name) {
  const Backend backend = select_backend(input, backend_name, "relu");
  check_floating(input, backend, "relu", "input");
  at::Tensor output = empty_output_like(input);
  relu_into(input, output, backend, "relu");
  return output;
}

void relu_(at::Tensor& self, c10::string_view backend_name) {
  const Backend backend = select_backend(self, backend_name, "relu_");
  check_floating(self, backend, "relu_", "input");
  if (self.is_non_overlapping_and_dense()) {
    relu_into(self, self, backend, "relu_");
  } else {
    // Kernels need one dense buffer; compute beside it and write back.
    at::Tensor dense = at::empty_like(self);
    relu_into(self, dense, backend, "relu_");
    self.copy_(dense);
  }
}

at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output,
                         c10::string_view backend_name) {
  constexpr const char* op = "relu_backward";
  const Backend backend = select_backend(output, backend_name, op);
  check_same_device_dtype(grad_output, output, op, "grad_output", "output");
  check_floating(output, backend, op, "output");
  TORCH_CHECK(grad_output.sizes() == output.sizes(), op, ": grad_output has shape ", grad_output.sizes(),
              " but output has shape ", output.sizes());
  at::Tensor grad_input = empty_output_like(output);
  const at::Tensor out = with_layout_of(output, grad_input);
  const at::Tensor grad = with_layout_of(grad_output, grad_input);
  const int64_t n = grad_input.numel();
  run_kernels(backend, out, op, [&]<typename T>(auto target) {
    return relu_backward(target, in_ptr<T>(grad), in_ptr<T>(out), out_ptr<T>(grad_input), n);
  });
  return grad_input;
}

void register_entry_points(torch::Library& m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward);
}

}  // namespace

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
