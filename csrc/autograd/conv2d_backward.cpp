// Autograd of conv2d's backward ops, which is what double backward through a
// convolution (gradient penalties, Hessian-vector products) differentiates.
// Each backward op is bilinear in its two tensors, so each of its gradients is
// another convolution op on the same geometry, algorithm and backend:
//   grad_input  = backward_input(gO, W):  d/dgO = conv2d(g, W),        d/dW = backward_weight(gO, g)
//   grad_weight = backward_weight(gO, X): d/dgO = conv2d(X, g),        d/dX = backward_input(gO, g)
//   grad_bias   = backward_bias(gO):      d/dgO = g broadcast over batch and pixels
// (g: the incoming gradient, shaped like the op's result).
#include "function.h"

namespace fastconv::autograd {
namespace {

// The geometry every convolution op of one layer shares.
struct Geometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
  std::string algorithm, backend;

  void save(AutogradContext* ctx) const {
    save_ints(ctx, "stride", stride);
    save_ints(ctx, "padding", padding);
    save_ints(ctx, "dilation", dilation);
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["algorithm"] = algorithm;
    ctx->saved_data["backend"] = backend;
  }

  static Geometry saved(AutogradContext* ctx) {
    return {saved_ints(ctx, "stride"), saved_ints(ctx, "padding"), saved_ints(ctx, "dilation"),
            ctx->saved_data["groups"].toInt(), ctx->saved_data["algorithm"].toStringRef(),
            ctx->saved_data["backend"].toStringRef()};
  }

  at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight) const {
    return op_calls::conv2d(input, weight, std::nullopt, stride, padding, dilation, groups, algorithm, backend);
  }
  at::Tensor backward_input(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef size) const {
    return op_calls::conv2d_backward_input(grad_output, weight, size, stride, padding, dilation, groups, algorithm,
                                           backend);
  }
  at::Tensor backward_weight(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef size) const {
    return op_calls::conv2d_backward_weight(grad_output, input, size, stride, padding, dilation, groups, algorithm,
                                            backend);
  }
};

Geometry geometry(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view algorithm, c10::string_view backend) {
  return {stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm), std::string(backend)};
}

struct BackwardInput : torch::autograd::Function<BackwardInput> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
                            c10::string_view backend) {
    const Geometry g = geometry(stride, padding, dilation, groups, algorithm, backend);
    ctx->save_for_backward({grad_output, weight});
    g.save(ctx);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return g.backward_input(grad_output, weight, input_size);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Geometry g = Geometry::saved(ctx);
    at::Tensor grad_grad_output, grad_weight;
    if (ctx->needs_input_grad(0)) grad_grad_output = g.conv2d(grads[0], saved[1]);
    if (ctx->needs_input_grad(1)) grad_weight = g.backward_weight(saved[0], grads[0], saved[1].sizes());
    const at::Tensor none;
    return {grad_grad_output, grad_weight, none, none, none, none, none, none, none};
  }
};

struct BackwardWeight : torch::autograd::Function<BackwardWeight> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                            at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
                            c10::string_view backend) {
    const Geometry g = geometry(stride, padding, dilation, groups, algorithm, backend);
    ctx->save_for_backward({grad_output, input});
    g.save(ctx);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return g.backward_weight(grad_output, input, weight_size);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Geometry g = Geometry::saved(ctx);
    at::Tensor grad_grad_output, grad_input;
    if (ctx->needs_input_grad(0)) grad_grad_output = g.conv2d(saved[1], grads[0]);
    if (ctx->needs_input_grad(1)) grad_input = g.backward_input(saved[0], grads[0], saved[1].sizes());
    const at::Tensor none;
    return {grad_grad_output, grad_input, none, none, none, none, none, none, none};
  }
};

struct BackwardBias : torch::autograd::Function<BackwardBias> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, c10::string_view backend) {
    save_ints(ctx, "grad_output_size", grad_output.sizes());
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op_calls::conv2d_backward_bias(grad_output, backend);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const std::vector<int64_t> size = saved_ints(ctx, "grad_output_size");
    return {grads[0].reshape({1, size[1], 1, 1}).expand(size), at::Tensor()};
  }
};

at::Tensor conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, c10::string_view algorithm, c10::string_view backend) {
  if (needs_recording(grad_output, weight)) {
    return BackwardInput::apply(grad_output, weight, input_size, stride, padding, dilation, groups, algorithm,
                                backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation, groups,
                                         algorithm, backend);
}

at::Tensor conv2d_backward_weight(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, c10::string_view algorithm, c10::string_view backend) {
  if (needs_recording(grad_output, input)) {
    return BackwardWeight::apply(grad_output, input, weight_size, stride, padding, dilation, groups, algorithm,
                                 backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::conv2d_backward_weight(grad_output, input, weight_size, stride, padding, dilation, groups,
                                          algorithm, backend);
}

at::Tensor conv2d_backward_bias(const at::Tensor& grad_output, c10::string_view backend) {
  if (needs_recording(grad_output)) return BackwardBias::apply(grad_output, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::conv2d_backward_bias(grad_output, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("conv2d_backward_input", &conv2d_backward_input);
  m.impl("conv2d_backward_weight", &conv2d_backward_weight);
  m.impl("conv2d_backward_bias", &conv2d_backward_bias);
}

}  // namespace fastconv::autograd
