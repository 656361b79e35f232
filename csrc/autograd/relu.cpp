// Autograd of the ReLU ops. The gradient of relu is relu_backward(grad,
// output), which reads only the output, so the in-place op needs nothing the
// write destroys. relu_backward is linear in grad_output with the same mask,
// so its own gradient is relu_backward again: that gives double backward.
#include "function.h"

namespace fastconv::autograd {
namespace {

// relu and relu_ (kInPlace): the forward saves the output for the mask.
template <bool kInPlace>
struct Relu : torch::autograd::Function<Relu<kInPlace>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, c10::string_view backend) {
    at::Tensor output;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      if constexpr (kInPlace) {
        at::Tensor self = input;
        op_calls::relu_(self, backend);
        output = input;
      } else {
        output = op_calls::relu(input, backend);
      }
    }
    // mark_dirty makes autograd bump the version and rebase input's history on this node.
    if constexpr (kInPlace) ctx->mark_dirty({input});
    ctx->save_for_backward({output});
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor output = saved_tensor(ctx);
    return {op_calls::relu_backward(grad_outputs[0], output, saved_backend(ctx)), at::Tensor()};
  }
};

// relu_backward(grad_output, output): differentiable in grad_output only.
struct ReluBackward : torch::autograd::Function<ReluBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& output,
                            c10::string_view backend) {
    ctx->save_for_backward({output});
    save_backend(ctx, backend);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op_calls::relu_backward(grad_output, output, backend);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor output = saved_tensor(ctx);
    return {op_calls::relu_backward(grad_outputs[0], output, saved_backend(ctx)), at::Tensor(), at::Tensor()};
  }
};

at::Tensor relu(const at::Tensor& input, c10::string_view backend) {
  if (needs_recording(input)) return Relu<false>::apply(input, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::relu(input, backend);
}

void relu_(at::Tensor& self, c10::string_view backend) {
  if (needs_recording(self)) {
    record_in_place<Relu<true>>(self, backend);
  } else {
    run_in_place_unrecorded(self, [&] { op_calls::relu_(self, backend); });
  }
}

at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output, c10::string_view backend) {
  if (needs_recording(grad_output, output)) return ReluBackward::apply(grad_output, output, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::relu_backward(grad_output, output, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward);
}

}  // namespace fastconv::autograd
