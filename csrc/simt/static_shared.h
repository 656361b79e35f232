// Where the static shared memory of the running block is: in sanitizer builds
// every `__shared__` variable lies in one of two TLS sections (see simt.h's
// __shared__), so an OS thread's copies of them, which serve the block it
// runs, are two address ranges. Nothing else lives there: the runtime's own
// thread_locals and the built-in variables (threadIdx, ...) are elsewhere, so
// the memory checker may overwrite the ranges and the race checker and access
// counters may call every address in them shared memory.
//
// The sections are those of the module the runtime is linked into (the
// extension library, or a test program), which holds the kernels too.
#pragma once

#include <cstddef>

namespace simt {
namespace detail {

struct StaticShared {
  struct Range {
    unsigned char* begin = nullptr;
    size_t bytes = 0;
  };
  Range sections[2];  // simt_shared, simt_shared_template; empty when absent

  bool holds(const void* p) const {
    const unsigned char* a = static_cast<const unsigned char*>(p);
    for (const Range& r : sections)
      if (a >= r.begin && a < r.begin + r.bytes) return true;
    return false;
  }
};

// The calling OS thread's copy. Empty in builds without sanitizers.
StaticShared this_thread_static_shared();

}  // namespace detail
}  // namespace simt
