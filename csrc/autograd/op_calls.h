// The fastconv ops as the autograd kernels call them: through the dispatcher,
// not straight into csrc/ops. A forward that has stepped below autograd then
// reaches the device kernels (or, while torch.compile traces, the fake ones),
// and a backward run with create_graph=True reaches the backward ops' own
// autograd kernels (every backward op has one), so double backward works
// through them.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fastconv::op_calls {

namespace detail {
// The typed handle of fastconv::`name`, whose C++ signature is `Signature`.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
}  // namespace detail

// One function per op, with the op's schema as C++ types; each looks its
// handle up once.
#define FASTCONV_OP_CALL(name, Return, ...)                                                      \
  template <typename... Args>                                                                   \
  Return name(Args&&... args) {                                                                 \
    static const auto handle = detail::find<Return(__VA_ARGS__)>("fastconv::" #name);           \
    return handle.call(std::forward<Args>(args)...);                                            \
  }

using Str = c10::string_view;
using Ints = at::IntArrayRef;
using OptionalTensor = const std::optional<at::Tensor>&;
using T = const at::Tensor&;

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

FASTCONV_OP_CALL(relu, at::Tensor, T, Str)
FASTCONV_OP_CALL(relu_, void, at::Tensor&, Str)
FASTCONV_OP_CALL(relu_backward, at::Tensor, T, T, Str)
FASTCONV_OP_CALL(relu_with_mask, TensorPair, T, Str)
FASTCONV_OP_CALL(relu_with_mask_, at::Tensor, at::Tensor&, Str)
FASTCONV_OP_CALL(relu_backward_from_mask, at::Tensor, T, T, Str)

FASTCONV_OP_CALL(dropout, at::Tensor, T, double, T, Str)
FASTCONV_OP_CALL(dropout_, void, at::Tensor&, double, T, Str)
FASTCONV_OP_CALL(dropout_backward, at::Tensor, T, double, T, Str)
FASTCONV_OP_CALL(dropout_with_mask, TensorPair, T, double, T, Str)
FASTCONV_OP_CALL(dropout_with_mask_, at::Tensor, at::Tensor&, double, T, Str)
FASTCONV_OP_CALL(dropout_backward_from_mask, at::Tensor, T, double, T, Str)

FASTCONV_OP_CALL(conv2d, at::Tensor, T, T, OptionalTensor, Ints, Ints, Ints, int64_t, Str, Str)
FASTCONV_OP_CALL(conv2d_relu, at::Tensor, T, T, OptionalTensor, Ints, Ints, Ints, int64_t, Str, Str)
FASTCONV_OP_CALL(conv2d_backward_input, at::Tensor, T, T, Ints, Ints, Ints, Ints, int64_t, Str, Str)
FASTCONV_OP_CALL(conv2d_backward_weight, at::Tensor, T, T, Ints, Ints, Ints, Ints, int64_t, Str, Str)
FASTCONV_OP_CALL(conv2d_backward_bias, at::Tensor, T, Str)

FASTCONV_OP_CALL(max_pool2d, TensorPair, T, Ints, Ints, Ints, Ints, bool, Str)
FASTCONV_OP_CALL(max_pool2d_backward, at::Tensor, T, T, Ints, Ints, Ints, Ints, Ints, bool, Str)
FASTCONV_OP_CALL(max_pool2d_with_taps, TensorPair, T, Ints, Ints, Ints, Ints, bool, Str)
FASTCONV_OP_CALL(max_pool2d_backward_from_taps, at::Tensor, T, T, Ints, Ints, Ints, Ints, Ints, bool, Str)

#undef FASTCONV_OP_CALL

}  // namespace fastconv::op_calls
