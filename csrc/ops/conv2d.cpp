// Convolution ops: argument checks, output allocation, the choice of
// algorithm, and dispatch to the CPU kernels (csrc/cpu/conv2d*.cpp) or the
// CUDA kernels (csrc/cuda/conv2d*.cuh) on a GPU or on the SIMT runtime.
//
// padding is [top, bottom, left, right]; the kernels take top/left and an
// output size, which fixes bottom/right (see csrc/common/conv2d_params.h).
// All kernels read and write contiguous NCHW buffers, so inputs of any
// layout (channels_last included) are made contiguous and outputs are NCHW.
#include <ATen/Context.h>
#include <ATen/ops/empty.h>

#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <utility>

#include "../common/conv2d_params.h"
#include "../cpu/conv2d.h"
#include "../cuda/conv2d.h"
#include "conv2d.h"
#include "conv2d_auto.h"
#include "dispatch.h"
#include "output_buffers.h"

#if defined(FASTCONV_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#endif

namespace fastconv {
namespace {

// Geometry arguments shared by every conv op, checked once.
struct ConvGeometry {
  at::IntArrayRef stride, padding, dilation;
  int64_t groups;
};

void check_geometry(const ConvGeometry& geo, const char* op) {
  TORCH_CHECK(geo.stride.size() == 2, op, ": expected stride to have 2 values, but got ", geo.stride);
  TORCH_CHECK(geo.padding.size() == 4, op, ": expected padding [top, bottom, left, right], but got ",
              geo.padding);
  TORCH_CHECK(geo.dilation.size() == 2, op, ": expected dilation to have 2 values, but got ", geo.dilation);
  TORCH_CHECK(geo.groups > 0, op, ": non-positive groups is not supported (got groups=", geo.groups, ")");
  for (int64_t s : geo.stride)
    TORCH_CHECK(s > 0, op, ": non-positive stride is not supported (got stride=", geo.stride, ")");
  for (int64_t d : geo.dilation)
    TORCH_CHECK(d > 0, op, ": dilation should be greater than zero, but got dilation=", geo.dilation);
  for (int64_t p : geo.padding)
    TORCH_CHECK(p >= 0, op, ": negative padding is not supported (got padding=", geo.padding, ")");
}

// Checks that input and weight shapes fit together and computes the output
// size; every op goes through here so they all agree on the geometry.
Conv2dParams make_params(at::IntArrayRef input_size, at::IntArrayRef weight_size, const ConvGeometry& geo,
                         const char* op) {
  check_geometry(geo, op);
  TORCH_CHECK(input_size.size() == 4, op, ": expected a 4-D input [batch, channels, height, width], but got ",
              input_size.size(), "-D input of size ", input_size);
  TORCH_CHECK(weight_size.size() == 4, op,
              ": expected a 4-D weight [out_channels, in_channels/groups, kernel_h, kernel_w], but got ",
              weight_size.size(), "-D weight of size ", weight_size);
  for (int64_t s : weight_size)
    TORCH_CHECK(s >= 0, op, ": weight size has a negative dimension: ", weight_size);
  Conv2dParams p{};
  p.batch = input_size[0];
  p.in_channels = input_size[1];
  p.in_h = input_size[2];
  p.in_w = input_size[3];
  p.out_channels = weight_size[0];
  p.kernel_h = weight_size[2];
  p.kernel_w = weight_size[3];
  p.stride_h = geo.stride[0];
  p.stride_w = geo.stride[1];
  p.pad_h = geo.padding[0];
  p.pad_w = geo.padding[2];
  p.dilation_h = geo.dilation[0];
  p.dilation_w = geo.dilation[1];
  p.groups = geo.groups;
  TORCH_CHECK(p.out_channels % p.groups == 0, op, ": given groups=", p.groups,
              ", expected weight to be divisible by ", p.groups, " at dimension 0, but got weight of size ",
              weight_size, " instead");
  TORCH_CHECK(weight_size[1] * p.groups == p.in_channels, op, ": given groups=", p.groups,
              ", weight of size ", weight_size, " expects input to have ", weight_size[1] * p.groups,
              " channels, but got input of size ", input_size, " with ", p.in_channels, " channels instead");
  const int64_t padded_h = p.in_h + geo.padding[0] + geo.padding[1];
  const int64_t padded_w = p.in_w + geo.padding[2] + geo.padding[3];
  const int64_t reach_h = p.dilation_h * (p.kernel_h - 1) + 1;
  const int64_t reach_w = p.dilation_w * (p.kernel_w - 1) + 1;
  TORCH_CHECK(padded_h >= reach_h && padded_w >= reach_w && p.kernel_h > 0 && p.kernel_w > 0, op,
              ": calculated padded input size per channel: (", padded_h, " x ", padded_w,
              "). Kernel size (dilated): (", reach_h, " x ", reach_w,
              "). Kernel size can't be greater than actual input size");
  p.out_h = (padded_h - reach_h) / p.stride_h + 1;
  p.out_w = (padded_w - reach_w) / p.stride_w + 1;
  return p;
}

ConvAlgorithm parse_algorithm(c10::string_view name, Backend backend, ConvPass pass, const Conv2dParams& p,
                              GemmMath math, const char* op) {
  check_algorithm_name(name, op);
  if (name == "direct") return ConvAlgorithm::kDirect;
  if (name == "im2col") return ConvAlgorithm::kIm2col;
  if (name == "winograd") {
    // A CPU algorithm: the CUDA kernels (on a GPU or the SIMT runtime) have
    // no Winograd path, and running another one silently would hide that.
    TORCH_CHECK_VALUE(backend == Backend::kCpu, op, ": algorithm 'winograd' runs on the 'cpu' backend only, but got the '",
                      backend == Backend::kCuda ? "cuda" : "simt", "' backend");
    const char* why_not = cpu::winograd_ineligibility(p);
    TORCH_CHECK_VALUE(why_not == nullptr, op, ": algorithm 'winograd' cannot run this convolution: ", why_not,
                      " (got kernel ", p.kernel_h, "x", p.kernel_w, ", stride (", p.stride_h, ", ", p.stride_w,
                      "), dilation (", p.dilation_h, ", ", p.dilation_w, "))");
    return ConvAlgorithm::kWinograd;
  }
  return auto_algorithm(backend, pass, p, math == GemmMath::kTensorCore);
}

// torch checks that operands agree before it looks at the dtype itself, so a
// Long input with a float weight raises RuntimeError ("should be the same"),
// not TypeError: code that catches torch's exception keeps working.
void check_operands(const at::Tensor& reference, const char* reference_arg,
                    std::initializer_list<std::pair<const at::Tensor*, const char*>> others, Backend backend,
                    const char* op) {
  for (const auto& [t, arg] : others) check_same_device_dtype(*t, reference, op, arg, reference_arg);
  check_floating(reference, backend, op, reference_arg);
}

// Whether float32 convolutions may run on TF32 tensor cores. CUDA tensors
// follow torch's rule for convolutions exactly: torch.backends.cudnn.allow_tf32
// (default True), read at every call as torch reads it. On the SIMT runtime
// float32 stays full precision unless the backend is named "simt:tf32"
// (fastconv.backend("simt", allow_tf32=True)): a name, not a global, so the
// choice travels with the op's arguments into its backward pass and through
// torch.compile.
bool allows_tf32(Backend backend, c10::string_view backend_name) {
  if (backend == Backend::kCuda) return at::globalContext().allowTF32CuDNN();
  return backend == Backend::kSimt && backend_name == "simt:tf32";
}

// mma.sync m16n8k16 (f16/bf16) and m16n8k8 (tf32) need sm_80. On CUDA this
// reads the current device, which run_kernels has set to the tensors' one.
bool has_tensor_cores(Backend backend) {
  if (backend == Backend::kSimt) return simt::device_compute_capability() >= 80;
#if defined(FASTCONV_WITH_CUDA)
  if (backend == Backend::kCuda) return at::cuda::getCurrentDeviceProperties()->major >= 8;
#endif
  return false;
}

// The im2col GEMMs of a call on tensors like `like`: tensor cores for half and
// bfloat16 wherever there are any (what autocast asks for), for float under
// the TF32 rule, never for double. Decided before the dtype dispatch, since
// the auto rule depends on it too.
GemmMath gemm_math(Backend backend, const at::Tensor& like, bool tf32) {
  const at::ScalarType dtype = like.scalar_type();
  if (dtype == at::kDouble || (dtype == at::kFloat && !tf32)) return GemmMath::kCudaCore;
  const c10::DeviceGuard guard(like.device());  // has_tensor_cores reads the current device
  return has_tensor_cores(backend) ? GemmMath::kTensorCore : GemmMath::kCudaCore;
}

// Calls a kernel entry point with scratch memory from torch's allocator
// (sized by the launchers' own workspace query) as its last argument on the
// CUDA and SIMT backends; the CPU kernels keep their own scratch and get none.
// How much depends on the GEMM math (a tensor-core forward needs no columns).
//   with_workspace(target, pass, algorithm, math, p, like, [&](auto... workspace) {
//     return conv2d_backward_bias(target, ..., workspace...);
//   });
template <typename Target, typename Call>
auto with_workspace(Target target, ConvPass pass, ConvAlgorithm algorithm, GemmMath math, const Conv2dParams& p,
                    const at::Tensor& like, const Call& call) {
  if constexpr (std::is_same_v<Target, cpu::Target>) {
    return call();
  } else {
    const int64_t bytes = conv2d_workspace_bytes(target, pass, algorithm, p, like.element_size(), math);
    const at::Tensor workspace = at::empty({bytes}, like.options().dtype(at::kByte));
    return call(bytes == 0 ? nullptr : workspace.data_ptr());
  }
}

// The same for the convolution passes, whose CUDA and SIMT launchers also take
// the GEMM math before the workspace; the CPU kernels multiply on the CPU.
template <typename Target, typename Call>
auto with_launch_args(Target target, ConvPass pass, ConvAlgorithm algorithm, GemmMath math, const Conv2dParams& p,
                      const at::Tensor& like, const Call& call) {
  return with_workspace(target, pass, algorithm, math, p, like, [&](auto... workspace) {
    if constexpr (sizeof...(workspace) == 0) {
      return call();
    } else {
      return call(math, workspace...);
    }
  });
}

// The forward pass of conv2d and conv2d_relu: `relu` asks every kernel to
// apply ReLU in its epilogue, before the store (no second pass over the output).
at::Tensor run_conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm_name,
                              c10::string_view backend_name, bool relu, const char* op) {
  const Backend backend = select_backend(input, backend_name, op);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    check_operands(input, "input", {{&weight, "weight"}, {&*bias, "bias"}}, backend, op);
  } else {
    check_operands(input, "input", {{&weight, "weight"}}, backend, op);
  }
  const Conv2dParams p = make_params(input.sizes(), weight.sizes(), {stride, padding, dilation, groups}, op);
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == p.out_channels, op, ": given weight of size ",
                weight.sizes(), ", expected bias to be 1-dimensional with ", p.out_channels,
                " elements, but got bias of size ", bias->sizes(), " instead");
  }
  const GemmMath math = gemm_math(backend, input, allows_tf32(backend, backend_name));
  const ConvAlgorithm algorithm = parse_algorithm(algorithm_name, backend, ConvPass::kForward, p, math, op);
  at::Tensor output = empty_output({p.batch, p.out_channels, p.out_h, p.out_w}, input.options());
  if (output.numel() == 0) return in_layout_of(output, input);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  run_kernels(backend, x, op, [&]<typename T>(auto target) {
    return with_launch_args(target, ConvPass::kForward, algorithm, math, p, x, [&](auto... launch_args) {
      return conv2d_forward(target, algorithm, in_ptr<T>(x), in_ptr<T>(w), has_bias ? in_ptr<T>(b) : nullptr,
                            out_ptr<T>(output), p, relu, launch_args...);
    });
  });
  return in_layout_of(output, input);
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view algorithm_name, c10::string_view backend_name) {
  return run_conv2d_forward(input, weight, bias, stride, padding, dilation, groups, algorithm_name, backend_name,
                            /*relu=*/false, "conv2d");
}

// relu(conv2d(input, weight) + bias), fused: same checks, kernels and
// algorithm choice as conv2d. Its gradients are relu_backward followed by
// the conv2d backward ops (fastconv/_ops.py).
at::Tensor conv2d_relu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       c10::string_view algorithm_name, c10::string_view backend_name) {
  return run_conv2d_forward(input, weight, bias, stride, padding, dilation, groups, algorithm_name, backend_name,
                            /*relu=*/true, "conv2d_relu");
}

// grad_output must have exactly the shape the forward pass produced.
void check_grad_output(const at::Tensor& grad_output, const Conv2dParams& p, const char* op) {
  const std::vector<int64_t> expected{p.batch, p.out_channels, p.out_h, p.out_w};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), op, ": expected grad_output of size ",
              at::IntArrayRef(expected), ", but got ", grad_output.sizes());
}

// What both backward ops settle before computing: the backend, the checked
// geometry, the algorithm and the TF32 rule. `operand` is the tensor besides
// grad_output (weight for the input gradient, input for the weight gradient).
struct BackwardPlan {
  Backend backend;
  Conv2dParams p;
  ConvAlgorithm algorithm;
  GemmMath math;
};

BackwardPlan plan_backward(ConvPass pass, const at::Tensor& grad_output, const at::Tensor& operand,
                          const char* operand_name,
                           at::IntArrayRef input_size, at::IntArrayRef weight_size, const ConvGeometry& geo,
                           c10::string_view algorithm_name, c10::string_view backend_name, const char* op) {
  const Backend backend = select_backend(grad_output, backend_name, op);
  check_operands(grad_output, "grad_output", {{&operand, operand_name}}, backend, op);
  const Conv2dParams p = make_params(input_size, weight_size, geo, op);
  check_grad_output(grad_output, p, op);
  const GemmMath math = gemm_math(backend, grad_output, allows_tf32(backend, backend_name));
  return {backend, p, parse_algorithm(algorithm_name, backend, pass, p, math, op), math};
}

at::Tensor conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm_name,
                                 c10::string_view backend_name) {
  constexpr const char* op = "conv2d_backward_input";
  const auto [backend, p, algorithm, math] = plan_backward(ConvPass::kBackwardInput, grad_output, weight, "weight",
                                                           input_size, weight.sizes(),
                                                     {stride, padding, dilation, groups}, algorithm_name,
                                                     backend_name, op);
  at::Tensor grad_input = empty_output(input_size, grad_output.options());
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();
  const at::Tensor dy = grad_output.contiguous(), w = weight.contiguous();
  run_kernels(backend, dy, op, [&]<typename T>(auto target) {
    return with_launch_args(target, ConvPass::kBackwardInput, algorithm, math, p, dy, [&](auto... launch_args) {
      return conv2d_backward_input(target, algorithm, in_ptr<T>(dy), in_ptr<T>(w), out_ptr<T>(grad_input), p,
                                   launch_args...);
    });
  });
  return grad_input;
}

at::Tensor conv2d_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm_name,
                                  c10::string_view backend_name) {
  constexpr const char* op = "conv2d_backward_weight";
  const auto [backend, p, algorithm, math] = plan_backward(ConvPass::kBackwardWeight, grad_output, input, "input",
                                                           input.sizes(), weight_size,
                                                     {stride, padding, dilation, groups}, algorithm_name,
                                                     backend_name, op);
  at::Tensor grad_weight = at::empty(weight_size, grad_output.options());
  if (grad_weight.numel() == 0) return grad_weight;
  if (grad_output.numel() == 0) return grad_weight.zero_();
  const at::Tensor dy = grad_output.contiguous(), x = input.contiguous();
  run_kernels(backend, dy, op, [&]<typename T>(auto target) {
    return with_launch_args(target, ConvPass::kBackwardWeight, algorithm, math, p, dy, [&](auto... launch_args) {
      return conv2d_backward_weight(target, algorithm, in_ptr<T>(dy), in_ptr<T>(x), out_ptr<T>(grad_weight), p,
                                    launch_args...);
    });
  });
  return grad_weight;
}

at::Tensor conv2d_backward_bias(const at::Tensor& grad_output, c10::string_view backend_name) {
  constexpr const char* op = "conv2d_backward_bias";
  const Backend backend = select_backend(grad_output, backend_name, op);
  check_floating(grad_output, backend, op, "grad_output");
  TORCH_CHECK(grad_output.dim() == 4, op, ": expected a 4-D grad_output, but got size ", grad_output.sizes());
  // Only the output geometry matters for the bias gradient.
  Conv2dParams p{};
  p.batch = grad_output.size(0);
  p.out_channels = grad_output.size(1);
  p.out_h = grad_output.size(2);
  p.out_w = grad_output.size(3);
  p.groups = 1;
  at::Tensor grad_bias = at::empty({p.out_channels}, grad_output.options());
  if (grad_bias.numel() == 0) return grad_bias;
  if (grad_output.numel() == 0) return grad_bias.zero_();
  const at::Tensor dy = grad_output.contiguous();
  run_kernels(backend, dy, op, [&]<typename T>(auto target) {
    return with_workspace(target, ConvPass::kBackwardBias, ConvAlgorithm::kDirect, GemmMath::kCudaCore, p, dy,
                          [&](auto... workspace) {
      return conv2d_backward_bias(target, in_ptr<T>(dy), out_ptr<T>(grad_bias), p, workspace...);
    });
  });
  return grad_bias;
}

void register_entry_points(torch::Library& m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_relu", &conv2d_relu);
  m.impl("conv2d_backward_input", &conv2d_backward_input);
  m.impl("conv2d_backward_weight", &conv2d_backward_weight);
  m.impl("conv2d_backward_bias", &conv2d_backward_bias);
}

}  // namespace

Conv2dParams conv2d_params(at::IntArrayRef input_size, at::IntArrayRef weight_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, const char* op) {
  return make_params(input_size, weight_size, {stride, padding, dilation, groups}, op);
}

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
