// Dropout ops. The mask is never stored: forward and backward regenerate it
// from the (seed, offset) pair held in a two-element int64 tensor, which the
// Python layer draws from torch's generator for the input's device.
//
// Element i of the mask belongs to the i-th element in row-major (logical)
// order, whatever the memory layout, so that backward sees the forward mask
// even when grad_output arrives with other strides. Kernels therefore run on
// contiguous buffers; a channels_last input gets a channels_last output, as in torch.
#include <cmath>

#include "../cpu/dropout.h"
#include "../cuda/dropout.h"
#include "dispatch.h"
#include "output_buffers.h"

namespace fastconv {
namespace {

void check_dropout_args(const at::Tensor& input, double p, const at::Tensor& seed, const char* op) {
  check_dropout_probability(p, op);
  TORCH_CHECK(seed.scalar_type() == at::kLong && seed.numel() == 2 && seed.dim() == 1, op,
              ": seed must be an int64 tensor of two elements (seed, offset), got ",
              seed.scalar_type(), " of shape ", seed.sizes());
  TORCH_CHECK(seed.device() == input.device(), op, ": seed must be on the input's device (",
              input.device(), "), got ", seed.device());
}

// ceil(p * 2^24): an element is kept when the top 24 bits of its Philox word reach it.
uint32_t drop_threshold(double p) { return static_cast<uint32_t>(std::ceil(p * 16777216.0)); }

// output = input * mask * 1/(1-p); `output` is contiguous with input's shape.
void dropout_into(const at::Tensor& input, const at::Tensor& output, double p, const at::Tensor& seed,
                  Backend backend, const char* op) {
  const at::Tensor in = input.contiguous();
  const at::Tensor seed_offset = seed.contiguous();
  const int64_t n = output.numel();
  const uint32_t threshold = drop_threshold(p);
  const double scale = p >= 1 ? 0.0 : 1.0 / (1.0 - p);
  run_kernels(backend, in, op, [&]<typename T>(auto target) {
    return dropout_apply(target, in_ptr<T>(in), out_ptr<T>(output), n, seed_offset.const_data_ptr<int64_t>(),
                         threshold, static_cast<acc_t<T>>(scale));
  });
}

at::Tensor dropout(const at::Tensor& input, double p, const at::Tensor& seed, c10::string_view backend_name) {
  const Backend backend = select_backend(input, backend_name, "dropout");
  check_floating(input, backend, "dropout", "input");
  check_dropout_args(input, p, seed, "dropout");
  at::Tensor output = empty_output_like(input, at::MemoryFormat::Contiguous);
  dropout_into(input, output, p, seed, backend, "dropout");
  return in_layout_of(output, input);
}

void dropout_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend_name) {
  const Backend backend = select_backend(self, backend_name, "dropout_");
  check_floating(self, backend, "dropout_", "input");
  check_dropout_args(self, p, seed, "dropout_");
  if (self.is_contiguous()) {
    dropout_into(self, self, p, seed, backend, "dropout_");
  } else {
    at::Tensor dense = at::empty_like(self, at::MemoryFormat::Contiguous);
    dropout_into(self, dense, p, seed, backend, "dropout_");
    self.copy_(dense);
  }
}

// The gradient of input * mask * scale is grad_output * mask * scale: the
// same map with the same mask.
at::Tensor dropout_backward(const at::Tensor& grad_output, double p, const at::Tensor& seed,
                            c10::string_view backend_name) {
  const Backend backend = select_backend(grad_output, backend_name, "dropout_backward");
  check_floating(grad_output, backend, "dropout_backward", "grad_output");
  check_dropout_args(grad_output, p, seed, "dropout_backward");
  at::Tensor grad_input = empty_output_like(grad_output, at::MemoryFormat::Contiguous);
  dropout_into(grad_output, grad_input, p, seed, backend, "dropout_backward");
  return grad_input;
}

void register_entry_points(torch::Library& m) {
  m.impl("dropout", &dropout);
  m.impl("dropout_", &dropout_);
  m.impl("dropout_backward", &dropout_backward);
}

}  // namespace

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
