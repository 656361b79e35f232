// The Python module fastconv._C. Importing it runs the op registrations
// (TORCH_LIBRARY in csrc/fastconv.cpp, TORCH_LIBRARY_IMPL in csrc/ops); the
// module itself only reports how the extension was built and what it
// selected at run time (fastconv.build_info(), python -m fastconv.info).
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <torch/headeronly/version.h>

#include <atomic>
#include <string>

#include "../cpu/gemm.h"
#include "../ops/common.h"
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
  info["cpu_isa"] = fastconv::cpu::gemm_isa();
  info["threads"] = at::get_num_threads();
  info["parallel_for_threads"] = parallel_for_threads();
  py::dict simt_settings;
  simt_settings["order"] = simt_order_name(simt::order());
  simt_settings["seed"] = simt::seed();
  simt_settings["workers"] = simt::num_workers();
  simt_settings["multiprocessors"] = simt::multiprocessor_count();
  info["simt"] = simt_settings;
  return info;
}

// Launches per SIMT kernel so far: (offset of the kernel's code in this
// library, name, launches). Offsets, unlike addresses, match the library's
// symbol table, which lists every kernel variant built (tests/kernel_coverage.py).
py::list simt_launch_counts() {
  py::list out;
  for (const simt::KernelLaunches& k : simt::launch_counts()) {
    Dl_info where{};
    const auto address = reinterpret_cast<uintptr_t>(k.kernel);
    const uintptr_t base = dladdr(k.kernel, &where) ? reinterpret_cast<uintptr_t>(where.dli_fbase) : 0;
    out.append(py::make_tuple(address - base, k.name, k.launches));
  }
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
  m.def("simt_set_multiprocessor_count", &simt::set_multiprocessor_count, py::arg("count"),
        "Sets the multiprocessor count the SIMT device reports (<= 0: FASTCONV_SIMT_SMS, else 132).");
  m.def("parallel_for_threads", &parallel_for_threads,
        "Number of threads an at::parallel_for loop of the CPU kernels runs on.");
}
