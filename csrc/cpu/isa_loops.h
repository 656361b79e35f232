// Runs a loop compiled for the widest vector ISA that cpu_isa() allows. The
// build targets the baseline ISA (SSE2 on x86-64), so without this the
// compiler's vectorised loops are 128 bits wide even on AVX-512 CPUs; that
// matters for data in the caches, where the loop, not DRAM, is the limit.
//
// A loop is a struct with a static, always-inline `run(args...)`; each clone
// below inlines it into a function compiled for one ISA, where the compiler
// vectorises it at that width.
#pragma once

#include "cpu_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#define FASTCONV_ISA_CLONES 1
#endif

#define FASTCONV_LOOP_INLINE __attribute__((always_inline)) inline

namespace fastconv {
namespace cpu {

#if defined(FASTCONV_ISA_CLONES)
template <typename Loop, typename... Args>
FASTCONV_TARGET_AVX512 void run_avx512(Args... args) {
  Loop::run(args...);
}

template <typename Loop, typename... Args>
FASTCONV_TARGET_AVX2 void run_avx2(Args... args) {
  Loop::run(args...);
}
#endif

template <typename Loop, typename... Args>
void run_portable(Args... args) {
  Loop::run(args...);
}

template <typename Loop, typename... Args>
void run_widest(Args... args) {
#if defined(FASTCONV_ISA_CLONES)
  const CpuIsa isa = cpu_isa();
  if (isa >= CpuIsa::kAvx512) return run_avx512<Loop>(args...);
  if (isa >= CpuIsa::kAvx2) return run_avx2<Loop>(args...);
#endif
  run_portable<Loop>(args...);
}

}  // namespace cpu
}  // namespace fastconv
