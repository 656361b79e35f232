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

// Which gradient a backward op computes. Its second tensor is the other
// operand of the forward: backward_input takes the weight, backward_weight
// the input.
enum class Grad { kInput, kWeight };

// backward_input(grad_output, weight, input_size) or
// backward_weight(grad_output, input, weight_size).
template <Grad kGrad>
at::Tensor call_backward(const at::Tensor& grad_output, const at::Tensor& other, at::IntArrayRef size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         c10::string_view algorithm, c10::string_view backend) {
  if constexpr (kGrad == Grad::kInput) {
    return op_calls::conv2d_backward_input(grad_output, other, size, stride, padding, dilation, groups, algorithm,
                                           backend);
  } else {
    return op_calls::conv2d_backward_weight(grad_output, other, size, stride, padding, dilation, groups, algorithm,
                                            backend);
  }
}

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
  template <Grad kGrad>
  at::Tensor backward(const at::Tensor& grad_output, const at::Tensor& other, at::IntArrayRef size) const {
    return call_backward<kGrad>(grad_output, other, size, stride, padding, dilation, groups, algorithm, backend);
  }
};

// backward_input (kGrad = kInput) or backward_weight (kWeight), recorded, with
// the gradients listed at the top of this file: conv2d with g in the place of
// the op's result, and the other backward op on (gO, g).
template <Grad kGrad>
struct ConvBackward : torch::autograd::Function<ConvBackward<kGrad>> {
  static constexpr Grad kOther = kGrad == Grad::kInput ? Grad::kWeight : Grad::kInput;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& other,
                            at::IntArrayRef size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
                            c10::string_view backend) {
    ctx->save_for_backward({grad_output, other});
    Geometry{stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm), std::string(backend)}
        .save(ctx);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_backward<kGrad>(grad_output, other, size, stride, padding, dilation, groups, algorithm, backend);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &other = saved[1];
    const Geometry g = Geometry::saved(ctx);
    const BackwardOpsGuard guard;
    at::Tensor grad_grad_output, grad_other;
    if (ctx->needs_input_grad(0)) {
      grad_grad_output = kGrad == Grad::kInput ? g.conv2d(grads[0], other) : g.conv2d(other, grads[0]);
    }
    if (ctx->needs_input_grad(1)) grad_other = g.backward<kOther>(grad_output, grads[0], other.sizes());
    const at::Tensor none;
    return {grad_grad_output, grad_other, none, none, none, none, none, none, none};
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
    const BackwardOpsGuard guard;
    return {grads[0].reshape({1, size[1], 1, 1}).expand(size), at::Tensor()};
  }
};

// The Autograd kernel of conv2d_backward_input (kInput) or conv2d_backward_weight (kWeight).
template <Grad kGrad>
at::Tensor conv2d_backward(const at::Tensor& grad_output, const at::Tensor& other, at::IntArrayRef size,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           c10::string_view algorithm, c10::string_view backend) {
  if (needs_recording(grad_output, other)) {
    return ConvBackward<kGrad>::apply(grad_output, other, size, stride, padding, dilation, groups, algorithm,
                                      backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return call_backward<kGrad>(grad_output, other, size, stride, padding, dilation, groups, algorithm, backend);
}

at::Tensor conv2d_backward_bias(const at::Tensor& grad_output, c10::string_view backend) {
  if (needs_recording(grad_output)) return BackwardBias::apply(grad_output, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::conv2d_backward_bias(grad_output, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("conv2d_backward_input", &conv2d_backward<Grad::kInput>);
  m.impl("conv2d_backward_weight", &conv2d_backward<Grad::kWeight>);
  m.impl("conv2d_backward_bias", &conv2d_backward_bias);
}

}  // namespace fastconv::autograd
