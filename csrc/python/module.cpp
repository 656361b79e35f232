// The Python module fastconv._C. Importing it runs the op registrations
// (TORCH_LIBRARY in csrc/fastconv.cpp, TORCH_LIBRARY_IMPL in csrc/ops); the
// module itself only reports how the extension was built and what it
// selected at run time (fastconv.build_info(), python -m fastconv.info).
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/headeronly/version.h>

#include <atomic>
#include <string>
#include <vector>

#include "../cpu/cpu_isa.h"
#include "../cpu/max_pool2d.h"
#include "../cpu/streaming_stores.h"
#include "../ops/common.h"
#include "../ops/conv2d.h"
#include "../ops/conv2d_auto.h"
#include "../ops/output_buffers.h"
#include "../simt/simt.h"

namespace py = pybind11;

namespace {

#define FASTCONV_STRINGIFY_(x) #x
#define FASTCONV_STRINGIFY(x) FASTCONV_STRINGIFY_(x)

// How many threads one of our at::parallel_for loops really runs on. It is
// an inline OpenMP loop in torch's headers, so an extension compiled without
// OpenMP silently runs every CPU kernel on one thread; the tests check this.
int parallel_for_threads() {
  std::atomic<int> threads{1};
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
    const int mine = at::get_thread_num() + 1;
    int seen = threads.load();
    while (mine > seen && !threads.compare_exchange_weak(seen, mine)) {
    }
  });
  return threads.load();
}

const char* simt_order_name(simt::Order order) {
  switch (order) {
    case simt::Order::Forward: return "forward";
    case simt::Order::Reversed: return "reversed";
    case simt::Order::Shuffled: return "shuffled";
  }
  return "unknown";
}

py::dict build_info() {
  py::dict info;
#if defined(FASTCONV_WITH_CUDA)
  info["cuda_compiled"] = true;
#else
  info["cuda_compiled"] = false;
#endif
  info["torch_headers"] = FASTCONV_STRINGIFY(TORCH_VERSION_MAJOR) "." FASTCONV_STRINGIFY(
      TORCH_VERSION_MINOR) "." FASTCONV_STRINGIFY(TORCH_VERSION_PATCH);
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  // The instruction set every CPU kernel with vector paths runs (csrc/cpu/cpu_isa.h).
  info["cpu_isa"] = fastconv::cpu::cpu_isa_name(fastconv::cpu::cpu_isa());
  // Elementwise kernels touching more bytes than this write with streaming stores (streaming_stores.h).
  info["cpu_streaming_stores_from_bytes"] = fastconv::cpu::streaming_threshold_bytes();
  info["threads"] = at::get_num_threads();
  info["parallel_for_threads"] = parallel_for_threads();
  py::dict simt_settings;
  simt_settings["order"] = simt_order_name(simt::order());
  simt_settings["seed"] = simt::seed();
  simt_settings["workers"] = simt::num_workers();
  simt_settings["multiprocessors"] = simt::multiprocessor_count();
  simt_settings["compute_capability"] = simt::compute_capability();
  info["simt"] = simt_settings;
  return info;
}

// The offset of a kernel's code in this library: unlike its address, it matches
// the library's symbol table, which lists every kernel variant built
// (fastconv/simt.py names kernels from it).
uintptr_t code_offset(const void* kernel) {
  Dl_info where{};
  const uintptr_t base = dladdr(kernel, &where) ? reinterpret_cast<uintptr_t>(where.dli_fbase) : 0;
  return reinterpret_cast<uintptr_t>(kernel) - base;
}

// Launches per SIMT kernel so far: (code offset, name, launches).
py::list simt_launch_counts() {
  py::list out;
  for (const simt::KernelLaunches& k : simt::launch_counts()) {
    out.append(py::make_tuple(code_offset(k.kernel), k.name, k.launches));
  }
  return out;
}

// Launches recorded since the last call (see simt::set_recording): (code offset,
// launch expression, grid, block, dynamic shared memory bytes), offsets as in
// simt_launch_counts.
py::list simt_take_recorded_launches() {
  py::list out;
  for (const simt::LaunchRecord& r : simt::take_recorded_launches()) {
    out.append(py::make_tuple(code_offset(r.kernel), r.name, py::make_tuple(r.grid.x, r.grid.y, r.grid.z),
                              py::make_tuple(r.block.x, r.block.y, r.block.z), r.smem));
  }
  return out;
}

// The algorithm conv2d's algorithm="auto" runs on `backend` ("cpu", "cuda" or
// "simt") in one pass ("fwd", "bwd_input", "bwd_weight") of a convolution of an
// NCHW input of `input_size` with a weight of `weight_size` (stride, dilation
// [h, w], symmetric padding [h, w]), its im2col GEMMs on tensor cores or not.
std::string conv2d_auto_algorithm(const std::string& backend, const std::string& pass,
                                  const std::vector<int64_t>& input_size,
                                  const std::vector<int64_t>& weight_size, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                                  int64_t groups, bool tensor_cores) {
  if (backend != "cpu" && backend != "cuda" && backend != "simt")
    throw py::value_error("conv2d_auto_algorithm: backend must be \"cpu\", \"cuda\" or \"simt\", got \"" +
                          backend + "\"");
  if (padding.size() != 2) throw py::value_error("conv2d_auto_algorithm: expected padding [h, w]");
  fastconv::ConvPass conv_pass;
  if (pass == "fwd") conv_pass = fastconv::ConvPass::kForward;
  else if (pass == "bwd_input") conv_pass = fastconv::ConvPass::kBackwardInput;
  else if (pass == "bwd_weight") conv_pass = fastconv::ConvPass::kBackwardWeight;
  else throw py::value_error("conv2d_auto_algorithm: pass must be \"fwd\", \"bwd_input\" or \"bwd_weight\", got \"" +
                             pass + "\"");
  fastconv::Conv2dParams p;
  try {
    p = fastconv::conv2d_params(input_size, weight_size, stride, {padding[0], padding[0], padding[1], padding[1]},
                                dilation, groups, "conv2d_auto_algorithm");
  } catch (const c10::Error& e) {
    throw py::value_error(e.what_without_backtrace());
  }
  const fastconv::Backend b = backend == "cpu" ? fastconv::Backend::kCpu : fastconv::Backend::kCuda;
  switch (fastconv::auto_algorithm(b, conv_pass, p, tensor_cores)) {
    case fastconv::ConvAlgorithm::kDirect: return "direct";
    case fastconv::ConvAlgorithm::kWinograd: return "winograd";
    default: return "im2col";
  }
}

py::dict cpu_output_cache_stats() {
  const fastconv::OutputCacheStats stats = fastconv::output_cache_stats();
  py::dict out;
  out["limit_bytes"] = stats.limit_bytes;
  out["held_bytes"] = stats.held_bytes;
  out["held_buffers"] = stats.held_buffers;
  return out;
}

// The ops' own argument checks, for the Python layer (fastconv.backend(...),
// fastconv.nn.Conv2d(algorithm=...), dropout's p where the op does not run):
// ValueError with the ops' message.
template <typename PyValue, auto check>
void check_value(const PyValue& value, const std::string& where) {
  try {
    check(value, where.c_str());
  } catch (const c10::ValueError& e) {
    throw py::value_error(e.what_without_backtrace());
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv's compiled kernels and op registrations";
  m.def("build_info", &build_info,
        "How the extension was built (CUDA, compiler, torch headers) and what it selected here (CPU ISA, "
        "threads, SIMT settings).");
  m.def("check_backend_name", &check_value<std::string, fastconv::check_backend_name>, py::arg("name"),
        py::arg("where"), "Raises ValueError unless `name` is a backend the ops accept.");
  m.def("check_algorithm_name", &check_value<std::string, fastconv::check_algorithm_name>, py::arg("name"),
        py::arg("where"), "Raises ValueError unless `name` is a convolution algorithm the ops accept.");
  m.def("check_dropout_probability", &check_value<double, fastconv::check_dropout_probability>, py::arg("p"),
        py::arg("where"), "Raises ValueError unless 0 <= p <= 1.");
  m.def("simt_launch_counts", &simt_launch_counts,
        "(code offset, kernel name, launches) of every kernel the SIMT runtime has launched in this process.");
  m.def("simt_set_recording", &simt::set_recording, py::arg("on"),
        "Records every SIMT launch (kernel, grid, block, dynamic shared memory) while on.");
  m.def("simt_set_dry_run", &simt::set_dry_run, py::arg("on"),
        "Dry run: SIMT launches are checked and recorded but do not run (outputs are garbage).");
  m.def("simt_dry_run", &simt::dry_run, "Whether SIMT launches are in a dry run.");
  m.def("simt_take_recorded_launches", &simt_take_recorded_launches,
        "(code offset, launch expression, grid, block, smem bytes) of the launches recorded since the last "
        "call; clears the list.");
  m.def("conv2d_auto_algorithm", &conv2d_auto_algorithm, py::arg("backend"), py::arg("conv_pass"), py::arg("input_size"),
        py::arg("weight_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("tensor_cores") = false,
        "The algorithm (\"direct\" or \"im2col\") conv2d's algorithm=\"auto\" runs on a backend in one pass "
        "(\"fwd\", \"bwd_input\", \"bwd_weight\"); symmetric padding [h, w]; tensor_cores: whether the im2col "
        "GEMMs would run on tensor cores.");
  m.def("simt_set_multiprocessor_count", &simt::set_multiprocessor_count, py::arg("count"),
        "Sets the multiprocessor count the SIMT device reports (<= 0: FASTCONV_SIMT_SM_COUNT, else 132).");
  m.def(
      "simt_set_compute_capability",
      [](int cc) {
        if (!simt::set_compute_capability(cc)) {
          throw py::value_error("compute capability " + std::to_string(cc) + ": give major * 10 + minor, such as 75");
        }
      },
      py::arg("cc"),
      "Sets the compute capability the SIMT device reports, major * 10 + minor (<= 0: FASTCONV_SIMT_ARCH, "
      "else 90): tensor cores from 80 on, the GEMM's tile weights by its FP32 lanes.");
  m.def("cpu_output_cache_stats", &cpu_output_cache_stats,
        "limit_bytes, held_bytes and held_buffers of the cache of released large CPU outputs.");
  m.def("empty_cpu_output_cache", &fastconv::empty_output_cache, py::call_guard<py::gil_scoped_release>(),
        "Frees the released CPU output buffers the cache holds.");
  // The largest pooling window whose maximum's position max_pool2d_with_taps keeps in a byte.
  m.attr("max_pool2d_max_taps") = fastconv::cpu::kMaxTaps;
  m.def("parallel_for_threads", &parallel_for_threads,
        "Number of threads an at::parallel_for loop of the CPU kernels runs on.");
}
