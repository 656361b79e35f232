// Autograd of max_pool2d: backward scatters the gradient to the saved indices
// (max_pool2d_backward) or taps (max_pool2d_backward_from_taps); the indices
// or taps output is not differentiable.
// max_pool2d_backward is linear in grad_output, and its adjoint (double
// backward) gathers: each output reads the incoming gradient at its index,
// except windows without an in-bounds tap, which passed nothing.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/floor_divide.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "../common/index_math.h"
#include "../ops/max_pool2d.h"
#include "function.h"

namespace fastconv::autograd {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

// Forward saves what its second output is: int64 indices (max_pool2d) or
// one-byte taps (max_pool2d_with_taps, what fastconv.functional.max_pool2d
// uses on the cpu backend when the indices are not asked for).
enum class Stored { kIndices, kTaps };

template <Stored kStored>
struct MaxPool2d : torch::autograd::Function<MaxPool2d<kStored>> {
  static TensorPair pool(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                         c10::string_view backend) {
    if constexpr (kStored == Stored::kTaps) {
      return op_calls::max_pool2d_with_taps(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
    } else {
      return op_calls::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
    }
  }

  template <typename... Args>
  static at::Tensor unpool(Args&&... args) {
    if constexpr (kStored == Stored::kTaps) {
      return op_calls::max_pool2d_backward_from_taps(std::forward<Args>(args)...);
    } else {
      return op_calls::max_pool2d_backward(std::forward<Args>(args)...);
    }
  }

  // The indices (or taps) come out through `stored_out`, not as an output of
  // the Function: they have no gradient, and compiled autograd refuses a
  // C++ Function that marks an output non-differentiable.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            bool ceil_mode, c10::string_view backend, at::Tensor* stored_out) {
    at::Tensor output, stored;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(output, stored) = pool(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
    }
    *stored_out = stored;
    ctx->save_for_backward({stored});
    save_ints(ctx, "input_size", input.sizes());
    save_ints(ctx, "kernel_size", kernel_size);
    save_ints(ctx, "stride", stride);
    save_ints(ctx, "padding", padding);
    save_ints(ctx, "dilation", dilation);
    ctx->saved_data["ceil_mode"] = ceil_mode;
    save_backend(ctx, backend);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor none;
    const at::Tensor stored = saved_tensor(ctx);
    const BackwardOpsGuard guard;
    const at::Tensor grad_input =
        unpool(grad_outputs[0], stored, saved_ints(ctx, "input_size"), saved_ints(ctx, "kernel_size"),
               saved_ints(ctx, "stride"), saved_ints(ctx, "padding"), saved_ints(ctx, "dilation"),
               ctx->saved_data["ceil_mode"].toBool(), saved_backend(ctx));
    return {grad_input, none, none, none, none, none, none, none};
  }
};

// Along one axis: whether output window o holds an input tap (not always, with dilation and padding),
// by the kernels' rule (taps_inside). Filled a run of windows at a time (usually one run: all of them)
// with ATen ops, not through a host pointer, so that torch.compile traces it with fake tensors.
at::Tensor window_has_taps(int64_t out_size, int64_t in_size, int64_t kernel, int64_t stride, int64_t pad,
                           int64_t dilation, at::Device device) {
  const auto has_taps = [&](int64_t o) {
    const IndexRange taps = taps_inside(o, stride, pad, kernel, dilation, in_size);
    return taps.begin < taps.end;
  };
  at::Tensor mask = at::zeros({out_size}, at::TensorOptions(at::kBool).device(device));
  for (int64_t begin = 0; begin < out_size; ++begin) {
    if (!has_taps(begin)) continue;
    int64_t end = begin + 1;
    while (end < out_size && has_taps(end)) ++end;
    mask.slice(0, begin, end).fill_(true);
    begin = end;  // window `end` has no taps (or is past the last)
  }
  return mask;
}

// max_pool2d_backward(grad_output, indices, ...): differentiable in grad_output only.
struct MaxPool2dBackward : torch::autograd::Function<MaxPool2dBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& indices,
                            at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                            c10::string_view backend) {
    at::Tensor grad_input;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      grad_input = op_calls::max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding,
                                                 dilation, ceil_mode, backend);
    }
    // The op has checked the arguments, so the geometry is valid here.
    const Pool2dParams p = max_pool2d_params(input_size, kernel_size, stride, padding, dilation, ceil_mode,
                                             "max_pool2d_backward");
    ctx->save_for_backward({indices});
    save_ints(ctx, "rows", {p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h});
    save_ints(ctx, "cols", {p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w});
    return grad_input;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const at::Tensor indices = saved_tensor(ctx);
    const std::vector<int64_t> rows = saved_ints(ctx, "rows"), cols = saved_ints(ctx, "cols");
    const at::Device device = indices.device();
    const BackwardOpsGuard guard;
    const at::Tensor has_taps =
        window_has_taps(indices.size(2), rows[0], rows[1], rows[2], rows[3], rows[4], device).unsqueeze(1) &
        window_has_taps(indices.size(3), cols[0], cols[1], cols[2], cols[3], cols[4], device);
    const at::Tensor inside = has_taps & (indices >= 0) & (indices < rows[0] * cols[0]);
    const at::Tensor picked =
        at::gather(grad_outputs[0].flatten(2), 2, at::where(inside, indices, 0).flatten(2)).view_as(indices);
    const at::Tensor none;
    return {at::where(inside, picked, at::zeros_like(picked)), none, none, none, none, none, none, none, none};
  }
};

template <Stored kStored>
TensorPair pool_entry(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, c10::string_view backend) {
  if (needs_recording(input)) {
    at::Tensor stored;
    at::Tensor output =
        MaxPool2d<kStored>::apply(input, kernel_size, stride, padding, dilation, ceil_mode, backend, &stored);
    return {output, stored};
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return MaxPool2d<kStored>::pool(input, kernel_size, stride, padding, dilation, ceil_mode, backend);
}

// The indices that taps name, with ATen ops (so that torch.compile traces
// them): -1 for kNoTap, taps past the window and positions outside the
// input, which the index kernels ignore as the tap kernels do.
at::Tensor indices_of_taps(const at::Tensor& taps, const Pool2dParams& p) {
  const at::TensorOptions longs = taps.options().dtype(at::kLong);
  const at::Tensor tap = taps.to(at::kLong);
  const at::Tensor ih = (at::arange(p.out_h, longs) * p.stride_h - p.pad_h).view({-1, 1}) +
                        at::floor_divide(tap, p.kernel_w) * p.dilation_h;
  const at::Tensor iw = at::arange(p.out_w, longs) * p.stride_w - p.pad_w + tap.remainder(p.kernel_w) * p.dilation_w;
  const at::Tensor valid = (tap < p.kernel_h * p.kernel_w) & (ih >= 0) & (ih < p.in_h) & (iw >= 0) & (iw < p.in_w);
  return at::where(valid, ih * p.in_w + iw, -1);
}

// Recorded, backward from taps is backward from the indices they name, whose
// autograd (MaxPool2dBackward) gives the double backward; the taps' memory
// saving is the first backward's.
at::Tensor max_pool2d_backward_from_taps(const at::Tensor& grad_output, const at::Tensor& taps,
                                         at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         bool ceil_mode, c10::string_view backend) {
  if (needs_recording(grad_output)) {
    const Pool2dParams p = check_backward_from_taps(grad_output, taps, input_size, kernel_size, stride, padding,
                                                    dilation, ceil_mode, backend);
    return op_calls::max_pool2d_backward(grad_output, indices_of_taps(taps, p), input_size, kernel_size, stride,
                                         padding, dilation, ceil_mode, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::max_pool2d_backward_from_taps(grad_output, taps, input_size, kernel_size, stride, padding,
                                                 dilation, ceil_mode, backend);
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode, c10::string_view backend) {
  if (needs_recording(grad_output)) {
    return MaxPool2dBackward::apply(grad_output, indices, input_size, kernel_size, stride, padding, dilation,
                                    ceil_mode, backend);
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op_calls::max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation,
                                       ceil_mode, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("max_pool2d", &pool_entry<Stored::kIndices>);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("max_pool2d_with_taps", &pool_entry<Stored::kTaps>);
  m.impl("max_pool2d_backward_from_taps", &max_pool2d_backward_from_taps);
}

}  // namespace fastconv::autograd
