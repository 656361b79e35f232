// Op schemas of the `fastconv` namespace.
//
// In-place ops return nothing (functionalization, and so torch.compile,
// cannot handle custom ops that return an alias of an input); the Python
// layer returns the mutated tensor.
//
// Every op takes a trailing `backend` string ("auto", "cpu", "simt", "cuda"):
// the Python layer passes the backend chosen by `fastconv.backend(...)` at
// forward time, and autograd passes the same one to the backward ops, so a
// forward run on the SIMT runtime is differentiated on it too.
#include <torch/library.h>


TORCH_LIBRARY(fastconv, m) {
  m.def("relu(Tensor input, str backend=\"auto\") -> Tensor");
  m.def("relu_(Tensor(a!) input, str backend=\"auto\") -> ()");
  m.def("relu_backward(Tensor grad_output, Tensor output, str backend=\"auto\") -> Tensor");
  // The same, storing the keep bits for backward in place of the output (the
  // cpu backend only; the mask as dropout_with_mask's, below).
  m.def("relu_with_mask(Tensor input, str backend=\"auto\") -> (Tensor, Tensor)");
  m.def("relu_with_mask_(Tensor(a!) input, str backend=\"auto\") -> Tensor");
  m.def("relu_backward_from_mask(Tensor grad_output, Tensor mask, str backend=\"auto\") -> Tensor");

  // seed: int64[2] = (Philox seed, counter offset), on the input's device.
  m.def("dropout(Tensor input, float p, Tensor seed, str backend=\"auto\") -> Tensor");
  m.def("dropout_(Tensor(a!) input, float p, Tensor seed, str backend=\"auto\") -> ()");
  m.def("dropout_backward(Tensor grad_output, float p, Tensor seed, str backend=\"auto\") -> Tensor");
  // The same, storing the mask for backward (the cpu backend only): mask is
  // uint8[ceil(n / 8)], bit i % 8 of byte i / 8 set when element i (row-major
  // order) is kept, the padding bits zero. dropout_backward_from_mask reads it.
  m.def("dropout_with_mask(Tensor input, float p, Tensor seed, str backend=\"auto\") -> (Tensor, Tensor)");
  m.def("dropout_with_mask_(Tensor(a!) input, float p, Tensor seed, str backend=\"auto\") -> Tensor");
  m.def("dropout_backward_from_mask(Tensor grad_output, float p, Tensor mask, str backend=\"auto\") -> Tensor");

  // padding = [top, bottom, left, right]; algorithm: "auto", "direct", "im2col", "winograd".
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
        "int groups, str algorithm=\"auto\", str backend=\"auto\") -> Tensor");
  m.def("conv2d_backward_input(Tensor grad_output, Tensor weight, int[] input_size, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups, str algorithm=\"auto\", str backend=\"auto\") -> Tensor");
  m.def("conv2d_backward_weight(Tensor grad_output, Tensor input, int[] weight_size, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups, str algorithm=\"auto\", str backend=\"auto\") -> Tensor");
  m.def("conv2d_backward_bias(Tensor grad_output, str backend=\"auto\") -> Tensor");
  // relu(conv2d(...)) with the ReLU applied in the kernels' epilogue.
  m.def("conv2d_relu(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
        "int groups, str algorithm=\"auto\", str backend=\"auto\") -> Tensor");

  // Returns (output, indices): indices are int64 flat positions ih * W + iw in
  // the input plane, as torch's return_indices. NCHW only (the Python layer
  // adds the batch of unbatched input).
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, str backend=\"auto\") -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor indices, int[] input_size, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, str backend=\"auto\") -> Tensor");
  // What training saves instead of indices (csrc/cpu/max_pool2d.h): (output,
  // taps), taps uint8, the maximum's position kh * kernel_w + kw within its
  // window (255: a window with no input in it). CPU only, windows of up to
  // 255 taps.
  m.def(
      "max_pool2d_with_taps(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, str backend=\"auto\") -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_backward_from_taps(Tensor grad_output, Tensor taps, int[] input_size, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, str backend=\"auto\") -> Tensor");
}
