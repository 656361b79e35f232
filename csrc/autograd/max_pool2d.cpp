// Autograd of max_pool2d: backward scatters the gradient to the saved indices
// (max_pool2d_backward). The indices output is not differentiable.
// max_pool2d_backward's own gradient, a gather, is written with torch ops in
// fastconv/_ops.py.
#include "function.h"

namespace fastconv::autograd {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

struct MaxPool2d : torch::autograd::Function<MaxPool2d> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode, c10::string_view backend) {
    at::Tensor output, indices;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(output, indices) =
          op_calls::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
    }
    ctx->mark_non_differentiable({indices});
    ctx->save_for_backward({indices});
    save_ints(ctx, "input_size", input.sizes());
    save_ints(ctx, "kernel_size", kernel_size);
    save_ints(ctx, "stride", stride);
    save_ints(ctx, "padding", padding);
    save_ints(ctx, "dilation", dilation);
    ctx->saved_data["ceil_mode"] = ceil_mode;
    save_backend(ctx, backend);
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor indices = ctx->get_saved_variables()[0];  // a copy: the list is a temporary
    const at::Tensor grad_input = op_calls::max_pool2d_backward(
        grad_outputs[0], indices, saved_ints(ctx, "input_size"), saved_ints(ctx, "kernel_size"),
        saved_ints(ctx, "stride"), saved_ints(ctx, "padding"), saved_ints(ctx, "dilation"),
        ctx->saved_data["ceil_mode"].toBool(), saved_backend(ctx));
    const at::Tensor none;
    return {grad_input, none, none, none, none, none, none};
  }
};

TensorPair max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, c10::string_view backend) {
  if (needs_recording(input)) {
    const variable_list outputs =
        MaxPool2d::apply(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
    return {outputs[0], outputs[1]};
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) { m.impl("max_pool2d", &max_pool2d); }

}  // namespace fastconv::autograd
