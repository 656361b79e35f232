// Autograd of the dropout ops. Every one of them is the linear map
// input * mask / (1 - p), and its gradient is the same map, with the same
// mask, on the incoming gradient: one Function serves all of them, double
// backward included.
//
// Backward finds the mask in one of two ways, chosen when the forward is
// recorded (on_mask_storing_backend):
//  - on the cpu backend the forward stores the keep bits, one bit per element
//    (dropout_with_mask, dropout_with_mask_), and backward reads them
//    (dropout_backward_from_mask): Philox costs the CPU as much as the data
//    movement, reading n / 8 bytes next to nothing;
//  - the cuda and simt backends regenerate the mask from the (seed, offset)
//    pair (dropout_backward): Philox is cheap on a GPU, and no mask is kept.
// Both give the same mask for the same pair, so the choice changes no result.
#include "function.h"

namespace fastconv::autograd {
namespace {

enum class Map { kDropout, kDropoutInPlace, kDropoutBackward };
enum class Mask { kRegenerated, kStored };

// The map applied to a gradient; `key` is the seed pair or the stored keep bits.
template <Mask kMask>
at::Tensor apply_to_gradient(const at::Tensor& grad, double p, const at::Tensor& key, c10::string_view backend) {
  if constexpr (kMask == Mask::kStored) {
    return op_calls::dropout_backward_from_mask(grad, p, key, backend);
  } else {
    return op_calls::dropout_backward(grad, p, key, backend);
  }
}

// `key` is the seed pair, except for the backward map with a stored mask,
// whose key is that mask. Where the forward stores the mask, `stored_mask`
// (when given) receives it. The mask is not an output of the Function: it has
// no gradient, and autograd refuses an in-place Function on a view that
// returns more than the view.
template <Map kMap, Mask kMask>
struct Dropout : torch::autograd::Function<Dropout<kMap, kMask>> {
  static constexpr bool kWritesMask = kMask == Mask::kStored && kMap != Map::kDropoutBackward;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, double p, const at::Tensor& key,
                            c10::string_view backend, at::Tensor* stored_mask = nullptr) {
    at::Tensor output, mask;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      if constexpr (kMap == Map::kDropoutBackward) {
        output = apply_to_gradient<kMask>(input, p, key, backend);
      } else if constexpr (kMap == Map::kDropoutInPlace) {
        at::Tensor self = input;
        if constexpr (kWritesMask) {
          mask = op_calls::dropout_with_mask_(self, p, key, backend);
        } else {
          op_calls::dropout_(self, p, key, backend);
        }
        output = input;
      } else if constexpr (kWritesMask) {
        std::tie(output, mask) = op_calls::dropout_with_mask(input, p, key, backend);
      } else {
        output = op_calls::dropout(input, p, key, backend);
      }
    }
    if constexpr (kMap == Map::kDropoutInPlace) ctx->mark_dirty({input});
    if (stored_mask != nullptr) *stored_mask = mask;
    ctx->save_for_backward({kWritesMask ? mask : key});
    ctx->saved_data["p"] = p;
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor key = saved_tensor(ctx);
    const double p = ctx->saved_data["p"].toDouble();
    const std::string& backend = saved_backend(ctx);
    const BackwardOpsGuard guard;
    return {apply_to_gradient<kMask>(grad_outputs[0], p, key, backend), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor dropout(const at::Tensor& input, double p, const at::Tensor& seed, c10::string_view backend) {
  if (needs_recording(input)) {
    return on_mask_storing_backend(input, backend)
               ? Dropout<Map::kDropout, Mask::kStored>::apply(input, p, seed, backend)
               : Dropout<Map::kDropout, Mask::kRegenerated>::apply(input, p, seed, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::dropout(input, p, seed, backend);
}

void dropout_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend) {
  if (!needs_recording(self)) {
    run_in_place_unrecorded(self, [&] { op_calls::dropout_(self, p, seed, backend); });
  } else if (on_mask_storing_backend(self, backend)) {
    record_in_place<Dropout<Map::kDropoutInPlace, Mask::kStored>>(self, p, seed, backend);
  } else {
    record_in_place<Dropout<Map::kDropoutInPlace, Mask::kRegenerated>>(self, p, seed, backend);
  }
}

std::tuple<at::Tensor, at::Tensor> dropout_with_mask(const at::Tensor& input, double p, const at::Tensor& seed,
                                                     c10::string_view backend) {
  if (needs_recording(input)) {
    at::Tensor mask;
    at::Tensor output = Dropout<Map::kDropout, Mask::kStored>::apply(input, p, seed, backend, &mask);
    return {output, mask};
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::dropout_with_mask(input, p, seed, backend);
}

at::Tensor dropout_with_mask_(at::Tensor& self, double p, const at::Tensor& seed, c10::string_view backend) {
  at::Tensor mask;
  if (needs_recording(self)) {
    record_in_place<Dropout<Map::kDropoutInPlace, Mask::kStored>>(self, p, seed, backend, &mask);
  } else {
    run_in_place_unrecorded(self, [&] { mask = op_calls::dropout_with_mask_(self, p, seed, backend); });
  }
  return mask;
}

// dropout_backward (kRegenerated, key: the seed pair) and
// dropout_backward_from_mask (kStored, key: the mask).
template <Mask kMask>
at::Tensor dropout_backward(const at::Tensor& grad_output, double p, const at::Tensor& key,
                            c10::string_view backend) {
  if (needs_recording(grad_output)) {
    return Dropout<Map::kDropoutBackward, kMask>::apply(grad_output, p, key, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return apply_to_gradient<kMask>(grad_output, p, key, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("dropout", &dropout);
  m.impl("dropout_", &dropout_);
  m.impl("dropout_backward", &dropout_backward<Mask::kRegenerated>);
  m.impl("dropout_with_mask", &dropout_with_mask);
  m.impl("dropout_with_mask_", &dropout_with_mask_);
  m.impl("dropout_backward_from_mask", &dropout_backward<Mask::kStored>);
}

}  // namespace fastconv::autograd
