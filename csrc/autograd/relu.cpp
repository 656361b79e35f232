// Autograd of the ReLU ops. The gradient of relu is grad where the output is
// not <= 0 and 0 elsewhere, so backward needs only that mask; the in-place op
// needs nothing its write destroys. Backward is linear in the incoming
// gradient with the same mask, so its own gradient is the same backward map:
// that gives double backward.
//
// Backward finds the mask in one of two ways, chosen when the forward is
// recorded (stores_mask):
//  - on the cpu backend, for a contiguous input of 256 KiB or more,
//    the forward stores it, one bit per element (relu_with_mask,
//    relu_with_mask_), and backward reads it (relu_backward_from_mask): n / 8
//    bytes instead of the output's 4n or 8n, and the output need not outlive
//    the forward for autograd's sake;
//  - otherwise the forward saves the output and backward compares it with 0
//    (relu_backward). The stored mask is in row-major order, which other
//    layouts would reach only through copies; smaller tensors sit in L2
//    (kMaskFromBytes).
#include "function.h"

namespace fastconv::autograd {
namespace {

// From 256 KiB (64 Ki float32 elements). Below that, input, output and
// gradients stay in L2, where reading the output costs little, and the mask's
// allocation and packing cost as much as they save. float32 forward and
// backward on the 2-core AMD EPYC (Zen 5) of bench/results: 16x512 3.8 us with
// the mask and 3.7 without, 16x4096 7.6 either way, 16x6272 9.4 with and 10.6
// without.
constexpr int64_t kMaskFromBytes = int64_t{256} << 10;

// sym_numel: sizes may be symbolic while torch.compile traces; the comparison
// then guards on them, and a size without a hint (data-dependent) keeps the output.
bool stores_mask(const at::Tensor& input, c10::string_view backend) {
  if (!input.is_contiguous() || !on_mask_storing_backend(input, backend)) return false;
  const c10::SymInt bytes = input.sym_numel() * static_cast<int64_t>(input.element_size());
  return bytes.has_hint() && bytes >= kMaskFromBytes;
}

enum class Mask { kOutput, kStored };

// The backward map on a gradient; `key` is the saved output or the stored keep bits.
template <Mask kMask>
at::Tensor apply_to_gradient(const at::Tensor& grad, const at::Tensor& key, c10::string_view backend) {
  if constexpr (kMask == Mask::kStored) {
    return op_calls::relu_backward_from_mask(grad, key, backend);
  } else {
    return op_calls::relu_backward(grad, key, backend);
  }
}

// The backward of every ReLU Function: the backward map, with the key its
// forward saved, on the incoming gradient; its other two arguments get none.
template <Mask kMask>
variable_list gradient_of(AutogradContext* ctx, const variable_list& grad_outputs) {
  const at::Tensor key = saved_tensor(ctx);
  const std::string& backend = saved_backend(ctx);
  const BackwardOpsGuard guard;
  return {apply_to_gradient<kMask>(grad_outputs[0], key, backend), at::Tensor(), at::Tensor()};
}

// relu and relu_ (kInPlace). Where the forward stores the mask, `stored_mask`
// (when given) receives it; it is not an output of the Function (no gradient,
// and autograd refuses an in-place Function on a view that returns more than
// the view).
template <bool kInPlace, Mask kMask>
struct Relu : torch::autograd::Function<Relu<kInPlace, kMask>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, c10::string_view backend,
                            at::Tensor* stored_mask = nullptr) {
    at::Tensor output, mask;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      if constexpr (kInPlace) {
        at::Tensor self = input;
        if constexpr (kMask == Mask::kStored) {
          mask = op_calls::relu_with_mask_(self, backend);
        } else {
          op_calls::relu_(self, backend);
        }
        output = input;
      } else if constexpr (kMask == Mask::kStored) {
        std::tie(output, mask) = op_calls::relu_with_mask(input, backend);
      } else {
        output = op_calls::relu(input, backend);
      }
    }
    // mark_dirty makes autograd bump the version and rebase input's history on this node.
    if constexpr (kInPlace) ctx->mark_dirty({input});
    if (stored_mask != nullptr) *stored_mask = mask;
    ctx->save_for_backward({kMask == Mask::kStored ? mask : output});
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    return gradient_of<kMask>(ctx, grad_outputs);
  }
};

// relu_backward(grad_output, output) and relu_backward_from_mask(grad_output,
// mask): differentiable in grad_output only.
template <Mask kMask>
struct ReluBackward : torch::autograd::Function<ReluBackward<kMask>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& key,
                            c10::string_view backend) {
    ctx->save_for_backward({key});
    save_backend(ctx, backend);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return apply_to_gradient<kMask>(grad_output, key, backend);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    return gradient_of<kMask>(ctx, grad_outputs);
  }
};

at::Tensor relu(const at::Tensor& input, c10::string_view backend) {
  if (needs_recording(input)) {
    return stores_mask(input, backend) ? Relu<false, Mask::kStored>::apply(input, backend)
                                       : Relu<false, Mask::kOutput>::apply(input, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::relu(input, backend);
}

void relu_(at::Tensor& self, c10::string_view backend) {
  if (!needs_recording(self)) {
    run_in_place_unrecorded(self, [&] { op_calls::relu_(self, backend); });
  } else if (stores_mask(self, backend)) {
    record_in_place<Relu<true, Mask::kStored>>(self, backend);
  } else {
    record_in_place<Relu<true, Mask::kOutput>>(self, backend);
  }
}

std::tuple<at::Tensor, at::Tensor> relu_with_mask(const at::Tensor& input, c10::string_view backend) {
  if (needs_recording(input)) {
    at::Tensor mask;
    at::Tensor output = Relu<false, Mask::kStored>::apply(input, backend, &mask);
    return {output, mask};
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::relu_with_mask(input, backend);
}

at::Tensor relu_with_mask_(at::Tensor& self, c10::string_view backend) {
  at::Tensor mask;
  if (needs_recording(self)) {
    record_in_place<Relu<true, Mask::kStored>>(self, backend, &mask);
  } else {
    run_in_place_unrecorded(self, [&] { mask = op_calls::relu_with_mask_(self, backend); });
  }
  return mask;
}

// relu_backward (kOutput, key: the output) and relu_backward_from_mask (kStored, key: the mask).
template <Mask kMask>
at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& key, c10::string_view backend) {
  if (needs_recording(grad_output, key)) return ReluBackward<kMask>::apply(grad_output, key, backend);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return apply_to_gradient<kMask>(grad_output, key, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("relu", &relu);
  m.impl("relu_", &relu_);
  m.impl("relu_backward", &relu_backward<Mask::kOutput>);
  m.impl("relu_with_mask", &relu_with_mask);
  m.impl("relu_with_mask_", &relu_with_mask_);
  m.impl("relu_backward_from_mask", &relu_backward<Mask::kStored>);
}

}  // namespace fastconv::autograd
