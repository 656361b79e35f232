#include "common.h"

#if defined(FASTCONV_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#endif

namespace fastconv {

void check_backend_name(c10::string_view name, const char* op) {
  TORCH_CHECK_VALUE(name == "auto" || name == "cpu" || name == "simt" || name == "simt:tf32" || name == "cuda", op,
                    ": unknown backend '", name, "' (expected 'auto', 'cpu', 'simt', 'simt:tf32' or 'cuda')");
}

void check_algorithm_name(c10::string_view name, const char* op) {
  TORCH_CHECK_VALUE(name == "auto" || name == "direct" || name == "im2col" || name == "winograd", op,
                    ": unknown algorithm '", name, "' (expected 'auto', 'direct', 'im2col' or 'winograd')");
}

void check_dropout_probability(double p, const char* op) {
  TORCH_CHECK_VALUE(p >= 0 && p <= 1, op, ": dropout probability has to be between 0 and 1, but got ", p);
}

Backend requested_backend(const at::Tensor& like, c10::string_view requested) {
  if (requested == "auto") return like.is_cpu() ? Backend::kCpu : Backend::kCuda;
  if (requested == "cpu") return Backend::kCpu;
  if (requested == "cuda") return Backend::kCuda;
  return Backend::kSimt;
}

Backend select_state_storing_backend(const at::Tensor& like, c10::string_view requested, const char* op,
                                     const char* stored, const char* alternative) {
  const Backend backend = select_backend(like, requested, op);
  TORCH_CHECK(backend == Backend::kCpu, op, ": only the 'cpu' backend stores ", stored, ", got backend '",
              requested, "' for a tensor on ", like.device(), " (", alternative, ")");
  return backend;
}

Backend select_backend(const at::Tensor& like, c10::string_view requested, const char* op) {
  check_backend_name(requested, op);
  const bool on_cuda = like.is_cuda();
  TORCH_CHECK(on_cuda || like.is_cpu(), op, ": tensors on ", like.device(),
              " are not supported (only cpu and cuda)");
  const Backend backend = requested_backend(like, requested);
  if (backend == Backend::kCuda) {
    TORCH_CHECK(on_cuda, op, ": backend 'cuda' needs CUDA tensors, but got a tensor on ", like.device());
  } else {
    TORCH_CHECK(!on_cuda, op, ": backend '", requested, "' runs CPU tensors, but got a tensor on ",
                like.device());
  }
  return backend;
}

void check_floating(const at::Tensor& t, Backend backend, const char* op, const char* arg) {
  const auto type = t.scalar_type();
  const bool wide = type == at::kFloat || type == at::kDouble;
  const bool half = type == at::kHalf || type == at::kBFloat16;
  // The C++ kernels are built for float and double; the CUDA kernels, on a GPU
  // or on the SIMT runtime, for float16 and bfloat16 too (csrc/ops/dispatch.h).
  TORCH_CHECK_TYPE(wide || (half && backend != Backend::kCpu), op, ": ", arg, " has dtype ", type,
                   ", but fastconv supports float32 and float64",
                   backend == Backend::kCpu ? " on the 'cpu' backend (float16 and bfloat16 run on the 'cuda' and "
                                              "'simt' backends)"
                                            : ", float16 and bfloat16");
}

void check_same_device_dtype(const at::Tensor& t, const at::Tensor& reference, const char* op,
                             const char* arg, const char* reference_arg) {
  TORCH_CHECK(t.device() == reference.device(), op, ": expected ", arg, " on the same device as ",
              reference_arg, " (", reference.device(), "), but got ", t.device());
  TORCH_CHECK(t.scalar_type() == reference.scalar_type(), op, ": expected ", arg,
              " to have the same dtype as ", reference_arg, " (", reference.scalar_type(),
              "), but got ", t.scalar_type());
}

at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

at::Tensor in_layout_of(const at::Tensor& output, const at::Tensor& input) {
  if (input.dim() != 4) return output;
  return output.contiguous(input.suggest_memory_format());
}

void check_launch(const char* error, const char* op) {
  TORCH_CHECK(error == nullptr, op, ": kernel launch failed: ", error);
}

void* cuda_stream_for(const at::Tensor& t) {
#if defined(FASTCONV_WITH_CUDA)
  if (t.is_cuda()) return at::cuda::getCurrentCUDAStream(t.device().index()).stream();
#endif
  (void)t;
  return nullptr;
}

}  // namespace fastconv
