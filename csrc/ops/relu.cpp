// ReLU ops: argument checks, output allocation, and one call into the
// kernels of the chosen backend (csrc/cpu/relu.cpp, csrc/cuda/relu.cuh).
//
// relu_with_mask, relu_with_mask_ and relu_backward_from_mask (the cpu
// backend only) store and read the keep bits (csrc/ops/keep_bits.h) in place
// of the output, so backward reads n / 8 bytes instead of the n-element
// output. As dropout's, the mask is in row-major (logical) order whatever the
// layout, so these kernels run on contiguous buffers.
#include <tuple>

#include "../cpu/relu.h"
#include "../cuda/relu.h"
#include "dispatch.h"
#include "elementwise.h"
#include "keep_bits.h"
#include "output_buffers.h"

namespace fastconv {
namespace {

// Writes relu(input) into `output`, which has input's shape (input itself for the in-place op).
void relu_into(const at::Tensor& input, const at::Tensor& output, Backend backend, const char* op) {
  run_elementwise(input, output, FlatOrder::kStorage, [&](const at::Tensor& in, const at::Tensor& out) {
    run_kernels(backend, in, op, [&]<typename T>(auto target) {
      return relu_forward(target, in_ptr<T>(in), out_ptr<T>(out), out.numel());
    });
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
  relu_into(self, self, backend, "relu_");
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

Backend select_relu_mask_backend(const at::Tensor& input, c10::string_view backend_name, const char* op) {
  return select_state_storing_backend(input, backend_name, op, "relu masks",
                                      "the other backends read the output: use relu and relu_backward");
}

// relu(input) into `output` (input's shape; input itself for the in-place
// op), the keep bits, in row-major order, into `mask`.
void relu_storing_mask_into(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask,
                            const char* op) {
  run_elementwise(input, output, FlatOrder::kRowMajor, [&](const at::Tensor& in, const at::Tensor& out) {
    run_cpu_kernels(in, op, [&]<typename T>(auto target) {
      relu_forward_storing_mask(target, in_ptr<T>(in), out_ptr<T>(out), mask.mutable_data_ptr<uint8_t>(),
                                in.numel());
    });
  });
}

std::tuple<at::Tensor, at::Tensor> relu_with_mask(const at::Tensor& input, c10::string_view backend_name) {
  constexpr const char* op = "relu_with_mask";
  const Backend backend = select_relu_mask_backend(input, backend_name, op);
  check_floating(input, backend, op, "input");
  at::Tensor output = empty_output_like(input);
  at::Tensor mask = empty_mask_for(input);
  relu_storing_mask_into(input, output, mask, op);
  return {output, mask};
}

at::Tensor relu_with_mask_(at::Tensor& self, c10::string_view backend_name) {
  constexpr const char* op = "relu_with_mask_";
  const Backend backend = select_relu_mask_backend(self, backend_name, op);
  check_floating(self, backend, op, "input");
  at::Tensor mask = empty_mask_for(self);
  relu_storing_mask_into(self, self, mask, op);
  return mask;
}

at::Tensor relu_backward_from_mask(const at::Tensor& grad_output, const at::Tensor& mask,
                                   c10::string_view backend_name) {
  constexpr const char* op = "relu_backward_from_mask";
  const Backend backend = select_relu_mask_backend(grad_output, backend_name, op);
  check_floating(grad_output, backend, op, "grad_output");
  check_mask(mask, grad_output, op);
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor keep_bits = mask.contiguous();
  at::Tensor grad_input = empty_output_like(grad_output, at::MemoryFormat::Contiguous);
  run_cpu_kernels(grad, op, [&]<typename T>(auto target) {
    relu_backward_from_mask(target, in_ptr<T>(grad), keep_bits.const_data_ptr<uint8_t>(), out_ptr<T>(grad_input),
                            grad.numel());
  });
  return grad_input;
}

void register_entry_points(torch::Library& m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward);
  m.impl("relu_with_mask", &relu_with_mask);
  m.impl("relu_with_mask_", &relu_with_mask_);
  m.impl("relu_backward_from_mask", &relu_backward_from_mask);
}

}  // namespace

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
