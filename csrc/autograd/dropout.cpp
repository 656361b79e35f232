// Autograd of the dropout ops. dropout and dropout_backward are one linear
// map, input * mask / (1 - p), whose mask the (seed, offset) pair regenerates:
// each one's gradient is dropout_backward of the incoming gradient, so one
// formula serves dropout, dropout_ and dropout_backward (double backward too).
#include "function.h"

namespace fastconv::autograd {
namespace {

enum class Map { kDropout, kDropoutInPlace, kDropoutBackward };

template <Map kMap>
struct Dropout : torch::autograd::Function<Dropout<kMap>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, double p, const at::Tensor& seed,
                            c10::string_view backend) {
    at::Tensor output;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      if constexpr (kMap == Map::kDropoutInPlace) {
        at::Tensor self = input;
        op_calls::dropout_(self, p, seed, backend);
        output = input;
      } else if constexpr (kMap == Map::kDropout) {
        output = op_calls::dropout(input, p, seed, backend);
      } else {
        output = op_calls::dropout_backward(input, p, seed, backend);
      }
    }
    if constexpr (kMap == Map::kDropoutInPlace) ctx->mark_dirty({input});
    ctx->save_for_backward({seed});
    ctx->saved_data["p"] = p;
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor seed = saved_tensor(ctx);
    const double p = ctx->saved_data["p"].toDouble();
    return {op_calls::dropout_backward(grad_outputs[0], p, seed, saved_backend(ctx)), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor dropout(const at::Tensor& input, double p, const at::Tensor& seed, c10::string_view backend) {
  if (needs_recording(input)) return Dropout<Map::kDropout>::apply(input, p, seed, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::dropout(input, p, seed, backend);
}

void dropout_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend) {
  if (needs_recording(self)) {
    record_in_place<Dropout<Map::kDropoutInPlace>>(self, p, seed, backend);
  } else {
    run_in_place_unrecorded(self, [&] { op_calls::dropout_(self, p, seed, backend); });
  }
}

at::Tensor dropout_backward(const at::Tensor& grad_output, double p, const at::Tensor& seed,
                            c10::string_view backend) {
  if (needs_recording(grad_output)) return Dropout<Map::kDropoutBackward>::apply(grad_output, p, seed, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::dropout_backward(grad_output, p, seed, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("dropout", &dropout);
  m.impl("dropout_", &dropout_);
  m.impl("dropout_backward", &dropout_backward);
}

}  // namespace fastconv::autograd
