// Runs a loop compiled for the widest vector ISA that cpu_isa() allows. The
// build targets the baseline ISA (SSE2 on x86-64), so without this the
// compiler's vectorised loops are 128 bits wide even on AVX-512 CPUs; that
// matters for data in the caches, where the loop, not DRAM, is the limit.
//
// A loop is a struct with a static, always-inline `run(args...)`; each clone
// below inlines it into a function compiled for one ISA, where the compiler
// vectorises it at that width (run_widest). A loop the compiler cannot
// vectorise is written with intrinsics as a template Loop<isa>, whose run
// picks its vector helpers by the clone's ISA (run_widest_isa). Those helpers
// carry their target attributes and must be plain `inline`, not
// always_inline: GCC inlines them once Loop<isa>::run sits inside the clone,
// whose target allows them; before that, the attribute-less run would refuse
// an always_inline one with an error.
#pragma once

#include "cpu_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#define FASTCONV_ISA_CLONES 1
#endif

#define FASTCONV_LOOP_INLINE __attribute__((always_inline)) inline
// The same for a lambda a loop passes on, `[&](...) FASTCONV_LAMBDA_INLINE {...}`:
// a lambda left out of line would keep the vector helpers it calls out of line too.
#define FASTCONV_LAMBDA_INLINE __attribute__((always_inline))

namespace fastconv {
namespace cpu {

#if defined(FASTCONV_ISA_CLONES)
template <template <CpuIsa> class Loop, typename... Args>
FASTCONV_TARGET_AVX512 void run_avx512(Args... args) {
  Loop<CpuIsa::kAvx512>::run(args...);
}

template <template <CpuIsa> class Loop, typename... Args>
FASTCONV_TARGET_AVX2 void run_avx2(Args... args) {
  Loop<CpuIsa::kAvx2>::run(args...);
}
#endif

template <template <CpuIsa> class Loop, typename... Args>
void run_widest_isa(Args... args) {
#if defined(FASTCONV_ISA_CLONES)
  const CpuIsa isa = cpu_isa();
  if (isa >= CpuIsa::kAvx512) return run_avx512<Loop>(args...);
  if (isa >= CpuIsa::kAvx2) return run_avx2<Loop>(args...);
#endif
  Loop<CpuIsa::kBaseline>::run(args...);
}

// A portable loop: the same source in every clone.
template <typename Loop>
struct SameInEveryIsa {
  template <CpuIsa>
  struct Clone {
    template <typename... Args>
    static FASTCONV_LOOP_INLINE void run(Args... args) {
      Loop::run(args...);
    }
  };
};

template <typename Loop, typename... Args>
void run_widest(Args... args) {
  run_widest_isa<SameInEveryIsa<Loop>::template Clone>(args...);
}

}  // namespace cpu
}  // namespace fastconv
