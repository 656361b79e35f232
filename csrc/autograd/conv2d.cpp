// Autograd of conv2d and conv2d_relu, on the forward's algorithm and backend.
// conv2d_relu's output is all the ReLU's gradient needs (output <= 0 masks
// it), so its backward is relu_backward followed by conv2d's own gradients.
#include "function.h"

namespace fastconv::autograd {
namespace {

// The op itself: conv2d, or conv2d_relu.
template <bool kFusedRelu>
at::Tensor call_op(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                   c10::string_view algorithm, c10::string_view backend) {
  if constexpr (kFusedRelu) {
    return op_calls::conv2d_relu(input, weight, bias, stride, padding, dilation, groups, algorithm, backend);
  } else {
    return op_calls::conv2d(input, weight, bias, stride, padding, dilation, groups, algorithm, backend);
  }
}

template <bool kFusedRelu>
struct Conv2d : torch::autograd::Function<Conv2d<kFusedRelu>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
                            c10::string_view backend) {
    at::Tensor output;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = call_op<kFusedRelu>(input, weight, bias, stride, padding, dilation, groups, algorithm, backend);
    }
    // Keep only what the requested gradients read: the input for the weight's, the weight for the input's.
    const at::Tensor none;
    ctx->save_for_backward({ctx->needs_input_grad(1) ? input : none, ctx->needs_input_grad(0) ? weight : none,
                            kFusedRelu ? output : none});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    save_ints(ctx, "input_size", input.sizes());
    save_ints(ctx, "weight_size", weight.sizes());
    save_ints(ctx, "stride", stride);
    save_ints(ctx, "padding", padding);
    save_ints(ctx, "dilation", dilation);
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["algorithm"] = std::string(algorithm);
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &output = saved[2];
    const std::string& backend = saved_backend(ctx);
    const BackwardOpsGuard guard;
    const at::Tensor grad = kFusedRelu ? op_calls::relu_backward(grad_outputs[0], output, backend) : grad_outputs[0];

    const std::vector<int64_t> stride = saved_ints(ctx, "stride"), padding = saved_ints(ctx, "padding"),
                               dilation = saved_ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::string& algorithm = ctx->saved_data["algorithm"].toStringRef();
    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = op_calls::conv2d_backward_input(grad, weight, saved_ints(ctx, "input_size"), stride, padding,
                                                   dilation, groups, algorithm, backend);
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = op_calls::conv2d_backward_weight(grad, input, saved_ints(ctx, "weight_size"), stride, padding,
                                                     dilation, groups, algorithm, backend);
    }
    // An absent bias is no input of the node, so edge 2 exists only with a bias.
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = op_calls::conv2d_backward_bias(grad, backend);
    }
    const at::Tensor none;
    return {grad_input, grad_weight, grad_bias, none, none, none, none, none, none};
  }
};

template <bool kFusedRelu>
at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view algorithm, c10::string_view backend) {
  if (needs_recording(input, weight, bias)) {
    return Conv2d<kFusedRelu>::apply(input, weight, bias, stride, padding, dilation, groups, algorithm, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return call_op<kFusedRelu>(input, weight, bias, stride, padding, dilation, groups, algorithm, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("conv2d", &conv2d<false>);
  m.impl("conv2d_relu", &conv2d<true>);
}

}  // namespace fastconv::autograd
