// Dropout ops. The mask comes from the (seed, offset) pair held in a
// two-element int64 tensor, which the Python layer draws from torch's
// generator for the input's device. Backward either regenerates it from the
// pair (dropout_backward, every backend) or reads the keep bits a forward
// stored (dropout_with_mask and dropout_with_mask_ write them,
// dropout_backward_from_mask reads them; the cpu backend only, see
// csrc/autograd/dropout.cpp for which path autograd takes).
//
// Element i of the mask belongs to the i-th element in row-major (logical)
// order, whatever the memory layout, so that backward sees the forward mask
// even when grad_output arrives with other strides. Kernels therefore run on
// contiguous buffers; a channels_last input gets a channels_last output, as in torch.
#include <cmath>
#include <tuple>

#include "../cpu/dropout.h"
#include "../cuda/dropout.h"
#include "dispatch.h"
#include "elementwise.h"
#include "keep_bits.h"
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

// Stored masks are the cpu backend's: its Philox costs as much as the data
// movement, where on a GPU it is nearly free (the CUDA and SIMT kernels regenerate).
Backend select_dropout_mask_backend(const at::Tensor& input, c10::string_view backend_name, const char* op) {
  return select_state_storing_backend(input, backend_name, op, "dropout masks",
                                      "the other backends regenerate the mask: use dropout and dropout_backward");
}

// ceil(p * 2^24): an element is kept when the top 24 bits of its Philox word reach it.
uint32_t drop_threshold(double p) { return static_cast<uint32_t>(std::ceil(p * 16777216.0)); }

double keep_scale(double p) { return p >= 1 ? 0.0 : 1.0 / (1.0 - p); }

// output = input * mask * 1/(1-p); `output` has input's shape (input itself
// for the in-place ops). With a defined `mask` (cpu backend only) the keep
// bits are stored there too.
void dropout_into(const at::Tensor& input, const at::Tensor& output, double p, const at::Tensor& seed,
                  Backend backend, const char* op, const at::Tensor& mask = {}) {
  const at::Tensor seed_pair = seed.contiguous();
  const int64_t* seed_offset = seed_pair.const_data_ptr<int64_t>();
  const uint32_t threshold = drop_threshold(p);
  const double scale = keep_scale(p);
  run_elementwise(input, output, FlatOrder::kRowMajor, [&](const at::Tensor& in, const at::Tensor& out) {
    const int64_t n = out.numel();
    if (mask.defined()) {
      run_cpu_kernels(in, op, [&]<typename T>(auto target) {
        dropout_apply(target, in_ptr<T>(in), out_ptr<T>(out), n, seed_offset, threshold,
                      static_cast<acc_t<T>>(scale), mask.mutable_data_ptr<uint8_t>());
      });
      return;
    }
    run_kernels(backend, in, op, [&]<typename T>(auto target) {
      return dropout_apply(target, in_ptr<T>(in), out_ptr<T>(out), n, seed_offset, threshold,
                           static_cast<acc_t<T>>(scale));
    });
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

std::tuple<at::Tensor, at::Tensor> dropout_with_mask(const at::Tensor& input, double p, const at::Tensor& seed,
                                                     c10::string_view backend_name) {
  const char* op = "dropout_with_mask";
  const Backend backend = select_dropout_mask_backend(input, backend_name, op);
  check_floating(input, backend, op, "input");
  check_dropout_args(input, p, seed, op);
  at::Tensor output = empty_output_like(input, at::MemoryFormat::Contiguous);
  at::Tensor mask = empty_mask_for(input);
  dropout_into(input, output, p, seed, backend, op, mask);
  return {in_layout_of(output, input), mask};
}

void dropout_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend_name) {
  const Backend backend = select_backend(self, backend_name, "dropout_");
  check_floating(self, backend, "dropout_", "input");
  check_dropout_args(self, p, seed, "dropout_");
  dropout_into(self, self, p, seed, backend, "dropout_");
}

at::Tensor dropout_with_mask_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend_name) {
  const char* op = "dropout_with_mask_";
  const Backend backend = select_dropout_mask_backend(self, backend_name, op);
  check_floating(self, backend, op, "input");
  check_dropout_args(self, p, seed, op);
  at::Tensor mask = empty_mask_for(self);
  dropout_into(self, self, p, seed, backend, op, mask);
  return mask;
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

at::Tensor dropout_backward_from_mask(const at::Tensor& grad_output, double p, const at::Tensor& mask,
                                      c10::string_view backend_name) {
  const char* op = "dropout_backward_from_mask";
  const Backend backend = select_dropout_mask_backend(grad_output, backend_name, op);
  check_floating(grad_output, backend, op, "grad_output");
  check_dropout_probability(p, op);
  check_mask(mask, grad_output, op);
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor keep_bits = mask.contiguous();
  at::Tensor grad_input = empty_output_like(grad_output, at::MemoryFormat::Contiguous);
  run_cpu_kernels(grad, op, [&]<typename T>(auto target) {
    dropout_apply_mask(target, in_ptr<T>(grad), out_ptr<T>(grad_input), grad.numel(),
                       keep_bits.const_data_ptr<uint8_t>(), static_cast<acc_t<T>>(keep_scale(p)));
  });
  return grad_input;
}

void register_entry_points(torch::Library& m) {
  m.impl("dropout", &dropout);
  m.impl("dropout_", &dropout_);
  m.impl("dropout_backward", &dropout_backward);
  m.impl("dropout_with_mask", &dropout_with_mask);
  m.impl("dropout_with_mask_", &dropout_with_mask_);
  m.impl("dropout_backward_from_mask", &dropout_backward_from_mask);
}

}  // namespace

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
