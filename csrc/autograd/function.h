// What the autograd kernels of csrc/autograd share. Each op family registers,
// for the Autograd dispatch key, a kernel that records a
// torch::autograd::Function (as torchvision's csrc/ops/autograd do): its
// forward steps below autograd and calls the op again, its backward calls our
// backward ops. Autograd glue in C++ costs a few microseconds a call, where a
// Python autograd.Function costs tens, which is most of a small op's time.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../ops/common.h"
#include "op_calls.h"

namespace fastconv::autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// True when the op must be recorded: grad mode is on and an argument requires grad.
template <typename... Tensors>
bool needs_recording(const Tensors&... tensors) {
  return torch::autograd::compute_requires_grad(tensors...);
}

// The forward's backend, so that backward runs where forward did ("simt" stays
// "simt" after the `with fastconv.backend(...)` block has closed).
inline void save_backend(AutogradContext* ctx, c10::string_view backend) {
  ctx->saved_data["backend"] = std::string(backend);
}
inline const std::string& saved_backend(AutogradContext* ctx) { return ctx->saved_data["backend"].toStringRef(); }

// Whether the forward of a dropout or ReLU runs on the backend that stores
// masks for backward (the cpu one: csrc/ops/keep_bits.h), on a tensor it
// accepts. Anything else goes to the plain op, which runs it or refuses it
// with an error naming that op: not select_backend here, and no mask op for
// a CUDA, meta or float16 tensor (requested_backend in csrc/ops/common.h).
inline bool on_mask_storing_backend(const at::Tensor& input, c10::string_view backend) {
  const at::ScalarType type = input.scalar_type();
  return input.is_cpu() && (type == at::kFloat || type == at::kDouble) &&
         requested_backend(input, backend) == Backend::kCpu;
}

// The rule for every Function's backward: it holds one of these while it
// computes its gradients, opened after it has unpacked its saved tensors (so
// that saved-tensor hooks run as they would anywhere else). When no graph is
// being built (create_graph=False), the ops it calls step straight below
// autograd: the fastconv ops' own autograd kernels would only do that and
// call them again, a second dispatcher pass per op (50 to 80 ns a call on a
// 2-core Zen 5, about 1% of a 3->4 3x3 convolution's backward on an 8x8
// image). The ATen ops a backward calls (reshape, expand, fill_) run below
// autograd too: their views and in-place writes are then not tracked as
// such, which nothing needs when no graph is built, and the engine copies a
// gradient it cannot keep as it is (AccumulateGrad clones an expanded one).
// With create_graph=True it does nothing, and each call goes through its op's
// autograd kernel, which records it for double backward.
class BackwardOpsGuard {
 public:
  BackwardOpsGuard() {
    if (!at::GradMode::is_enabled()) below_autograd_.emplace();
  }

 private:
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd_;
};

// The one tensor a forward saved (by value: get_saved_variables() builds a new list on every call).
inline at::Tensor saved_tensor(AutogradContext* ctx) { return ctx->get_saved_variables()[0]; }

inline void save_ints(AutogradContext* ctx, const char* key, at::IntArrayRef values) {
  ctx->saved_data[key] = values.vec();
}
inline std::vector<int64_t> saved_ints(AutogradContext* ctx, const char* key) {
  return ctx->saved_data[key].toIntVector();
}

// Records an in-place op: torch's checks first (a leaf that requires grad, or
// a view of one, may not be overwritten), so that, as with torch's own
// in-place ops, a refused call leaves the data untouched; Function::apply
// alone would check only after the kernel had run.
template <typename Function, typename... Args>
void record_in_place(at::Tensor& self, Args&&... args) {
  torch::autograd::check_inplace(self, /*requires_grad=*/true);
  Function::apply(self, std::forward<Args>(args)...);
}

// Runs an in-place op below autograd when nothing is recorded. Our ops have no
// ADInplaceOrView kernel, so the version bump torch's in-place ops get there
// happens here: a tensor saved for some backward must be seen as modified.
template <typename Op>
void run_in_place_unrecorded(const at::Tensor& self, const Op& op) {
  {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    op();
  }
  torch::autograd::impl::bump_version(self);
}

}  // namespace fastconv::autograd
