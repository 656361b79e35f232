// Max pooling ops: torch's argument rules and output shapes, allocation, and
// dispatch to the CPU kernels (csrc/cpu/max_pool2d.cpp) or the CUDA kernels
// (csrc/cuda/max_pool2d.cuh) on a GPU or on the SIMT runtime. The ops take
// 4-D NCHW tensors of any strides and compute on contiguous copies; the
// Python layer handles unbatched 3-D input.

#include <tuple>
#include <vector>

#include "../common/index_math.h"
#include "../common/pool2d_params.h"
#include "../cpu/max_pool2d.h"
#include "../cuda/max_pool2d.h"
#include "dispatch.h"
#include "max_pool2d.h"
#include "output_buffers.h"

namespace fastconv {
namespace {

struct Pair {
  int64_t h;
  int64_t w;
};

// An int[2] argument as torch reads it: one value for both sides or two.
// `fallback` serves an empty list where that is allowed (stride).
Pair pair_arg(at::IntArrayRef values, const char* message, const Pair* fallback = nullptr) {
  if (values.empty() && fallback != nullptr) return *fallback;
  TORCH_CHECK(values.size() == 1 || values.size() == 2, message, " (got ", values.size(), " values)");
  return values.size() == 1 ? Pair{values[0], values[0]} : Pair{values[0], values[1]};
}

struct PoolArgs {
  Pair kernel, stride, padding, dilation;
};

PoolArgs parse_args(at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                    at::IntArrayRef dilation) {
  PoolArgs a;
  a.kernel = pair_arg(kernel_size, "max_pool2d: kernel_size must either be a single int, or a tuple of two ints");
  a.stride = pair_arg(stride, "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints",
                      &a.kernel);
  a.padding = pair_arg(padding, "max_pool2d: padding must either be a single int, or a tuple of two ints");
  a.dilation = pair_arg(dilation, "max_pool2d: dilation must be either a single int, or a tuple of two ints");
  TORCH_CHECK(a.kernel.h > 0 && a.kernel.w > 0, "max_pool2d: kernel_size should be greater than zero, but got (",
              a.kernel.h, ", ", a.kernel.w, ")");
  TORCH_CHECK(a.stride.h > 0 && a.stride.w > 0, "max_pool2d: stride should be greater than zero, but got (",
              a.stride.h, ", ", a.stride.w, ")");
  TORCH_CHECK(a.dilation.h > 0 && a.dilation.w > 0,
              "max_pool2d: dilation should be greater than zero, but got (", a.dilation.h, ", ",
              a.dilation.w, ")");
  TORCH_CHECK(a.padding.h >= 0 && a.padding.w >= 0, "max_pool2d: pad must be non-negative, but got (",
              a.padding.h, ", ", a.padding.w, ")");
  TORCH_CHECK(a.padding.h <= a.kernel.h / 2 && a.padding.w <= a.kernel.w / 2,
              "max_pool2d: pad should be at most half of kernel size, but got pad=(", a.padding.h, ", ",
              a.padding.w, ") and kernel_size=(", a.kernel.h, ", ", a.kernel.w, ")");
  return a;
}

// torch's pooling_output_shape: in ceil mode the last window must still start
// inside the input or its left padding.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = floor_div(span, stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

void check_input_dims(at::IntArrayRef sizes, const char* op) {
  TORCH_CHECK(sizes.size() == 4, op, ": expected a 4-D (N, C, H, W) input, but got ", sizes.size(),
              " dimensions (fastconv.functional.max_pool2d also takes unbatched 3-D input)");
  TORCH_CHECK(sizes[1] > 0 && sizes[2] > 0 && sizes[3] > 0, op,
              ": expected an input with non-zero channels, height and width (only the batch may be "
              "0), but got ", sizes);
}

Pool2dParams make_params(at::IntArrayRef input_sizes, const PoolArgs& a, bool ceil_mode) {
  Pool2dParams p{};
  p.planes = input_sizes[0] * input_sizes[1];
  p.in_h = input_sizes[2];
  p.in_w = input_sizes[3];
  p.kernel_h = a.kernel.h;
  p.kernel_w = a.kernel.w;
  p.stride_h = a.stride.h;
  p.stride_w = a.stride.w;
  p.pad_h = a.padding.h;
  p.pad_w = a.padding.w;
  p.dilation_h = a.dilation.h;
  p.dilation_w = a.dilation.w;
  p.out_h = pooled_size(p.in_h, p.kernel_h, p.pad_h, p.stride_h, p.dilation_h, ceil_mode);
  p.out_w = pooled_size(p.in_w, p.kernel_w, p.pad_w, p.stride_w, p.dilation_w, ceil_mode);
  TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "max_pool2d: given input size (", input_sizes[1], "x", p.in_h,
              "x", p.in_w, "), the calculated output size (", input_sizes[1], "x", p.out_h, "x", p.out_w,
              ") is too small");
  return p;
}

// Taps are the cpu backend's: on a GPU, int64 indices cost no more to gather.
Backend select_taps_backend(const at::Tensor& like, c10::string_view backend_name, const char* op) {
  return select_state_storing_backend(like, backend_name, op, "max_pool2d taps",
                                      "the other backends use indices: use max_pool2d and max_pool2d_backward");
}

void check_window_taps(const Pool2dParams& p, const char* op) {
  // kernel_w <= kMaxTaps / kernel_h: the product of two huge sizes would overflow.
  TORCH_CHECK(p.kernel_w <= cpu::kMaxTaps / p.kernel_h, op, ": taps fit windows of up to ", cpu::kMaxTaps,
              " taps, got a ", p.kernel_h, "x", p.kernel_w, " window (use max_pool2d and max_pool2d_backward)");
}

// What a backward reads beside grad_output (`what`: int64 indices or uint8
// taps, as its forward returned them): of `dtype`, on grad_output's device,
// and both of the pooled shape of input_size.
void check_pooled_pair(const at::Tensor& grad_output, const at::Tensor& stored, at::ScalarType dtype,
                       const char* dtype_name, const char* what, at::IntArrayRef input_size, const Pool2dParams& p,
                       const char* op) {
  TORCH_CHECK(stored.scalar_type() == dtype, op, ": ", what, " must be ", dtype_name,
              " (what the forward returned), but got ", stored.scalar_type());
  TORCH_CHECK(stored.device() == grad_output.device(), op, ": expected ", what,
              " on the same device as grad_output (", grad_output.device(), "), but got ", stored.device());
  const std::vector<int64_t> out_sizes{input_size[0], input_size[1], p.out_h, p.out_w};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(out_sizes) && stored.sizes() == grad_output.sizes(), op,
              ": expected grad_output and ", what, " of shape ", at::IntArrayRef(out_sizes), " (the pooled shape of ",
              "input_size ", input_size, "), but got ", grad_output.sizes(), " and ", stored.sizes());
}

}  // namespace

Pool2dParams max_pool2d_params(at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, const char* op) {
  const PoolArgs args = parse_args(kernel_size, stride, padding, dilation);
  check_input_dims(input_size, op);
  return make_params(input_size, args, ceil_mode);
}

Pool2dParams check_backward_from_taps(const at::Tensor& grad_output, const at::Tensor& taps,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                                      c10::string_view backend_name) {
  const char* op = "max_pool2d_backward_from_taps";
  const PoolArgs args = parse_args(kernel_size, stride, padding, dilation);
  check_input_dims(input_size, op);
  const Backend backend = select_taps_backend(grad_output, backend_name, op);
  check_floating(grad_output, backend, op, "grad_output");
  const Pool2dParams p = make_params(input_size, args, ceil_mode);
  check_window_taps(p, op);
  check_pooled_pair(grad_output, taps, at::kByte, "uint8", "taps", input_size, p, op);
  return p;
}

namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode,
                                              c10::string_view backend_name) {
  const PoolArgs args = parse_args(kernel_size, stride, padding, dilation);
  check_input_dims(input.sizes(), "max_pool2d");
  const Backend backend = select_backend(input, backend_name, "max_pool2d");
  check_floating(input, backend, "max_pool2d", "input");
  const Pool2dParams p = make_params(input.sizes(), args, ceil_mode);

  const at::Tensor in = input.contiguous();
  const std::vector<int64_t> out_sizes{input.size(0), input.size(1), p.out_h, p.out_w};
  at::Tensor output = empty_output(out_sizes, input.options());
  at::Tensor indices = empty_output(out_sizes, input.options().dtype(at::kLong));
  run_kernels(backend, in, "max_pool2d", [&]<typename T>(auto target) {
    return max_pool2d_forward(target, in_ptr<T>(in), out_ptr<T>(output), indices.data_ptr<int64_t>(), p);
  });
  return {in_layout_of(output, input), in_layout_of(indices, input)};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                               at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                               c10::string_view backend_name) {
  const PoolArgs args = parse_args(kernel_size, stride, padding, dilation);
  check_input_dims(input_size, "max_pool2d_backward");
  const Backend backend = select_backend(grad_output, backend_name, "max_pool2d_backward");
  check_floating(grad_output, backend, "max_pool2d_backward", "grad_output");
  const Pool2dParams p = make_params(input_size, args, ceil_mode);
  check_pooled_pair(grad_output, indices, at::kLong, "int64", "indices", input_size, p, "max_pool2d_backward");

  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor idx_t = indices.contiguous();
  at::Tensor grad_input = empty_output(input_size, grad_output.options());
  run_kernels(backend, grad, "max_pool2d_backward", [&]<typename T>(auto target) {
    return max_pool2d_backward(target, in_ptr<T>(grad), idx_t.const_data_ptr<int64_t>(), out_ptr<T>(grad_input), p);
  });
  return grad_input;
}

// Argument errors name max_pool2d, the op users call (fastconv.functional.max_pool2d picks
// this one); only what is particular to taps names max_pool2d_with_taps.
std::tuple<at::Tensor, at::Tensor> max_pool2d_with_taps(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                                        at::IntArrayRef dilation, bool ceil_mode,
                                                        c10::string_view backend_name) {
  const char* op = "max_pool2d_with_taps";
  const PoolArgs args = parse_args(kernel_size, stride, padding, dilation);
  check_input_dims(input.sizes(), "max_pool2d");
  const Backend backend = select_taps_backend(input, backend_name, op);
  check_floating(input, backend, "max_pool2d", "input");
  const Pool2dParams p = make_params(input.sizes(), args, ceil_mode);
  check_window_taps(p, op);

  const at::Tensor in = input.contiguous();
  const std::vector<int64_t> out_sizes{input.size(0), input.size(1), p.out_h, p.out_w};
  at::Tensor output = empty_output(out_sizes, input.options());
  at::Tensor taps = empty_output(out_sizes, input.options().dtype(at::kByte));
  run_cpu_kernels(in, op, [&]<typename T>(auto target) {
    return cpu::max_pool2d_forward_taps(target, in_ptr<T>(in), out_ptr<T>(output), taps.data_ptr<uint8_t>(), p);
  });
  return {in_layout_of(output, input), in_layout_of(taps, input)};
}

at::Tensor max_pool2d_backward_from_taps(const at::Tensor& grad_output, const at::Tensor& taps,
                                         at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         bool ceil_mode, c10::string_view backend_name) {
  const Pool2dParams p = check_backward_from_taps(grad_output, taps, input_size, kernel_size, stride, padding,
                                                  dilation, ceil_mode, backend_name);
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor taps_c = taps.contiguous();
  at::Tensor grad_input = empty_output(input_size, grad_output.options());
  run_cpu_kernels(grad, "max_pool2d_backward_from_taps", [&]<typename T>(auto target) {
    return cpu::max_pool2d_backward_from_taps(target, in_ptr<T>(grad), taps_c.const_data_ptr<uint8_t>(),
                                              out_ptr<T>(grad_input), p);
  });
  return grad_input;
}

void register_entry_points(torch::Library& m) {
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("max_pool2d_with_taps", &max_pool2d_with_taps);
  m.impl("max_pool2d_backward_from_taps", &max_pool2d_backward_from_taps);
}

}  // namespace

FASTCONV_REGISTER_KERNELS(register_entry_points)

}  // namespace fastconv
