#include "cpu_isa.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fastconv {
namespace cpu {
namespace {

// __builtin_cpu_supports also checks that the OS saves the vector state.
CpuIsa supported_isa() {
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (avx512) return CpuIsa::kAvx512;
  if (avx2) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kBaseline;
}

// An unknown value is reported on stderr and ignored, rather than silently
// taken as some level.
CpuIsa requested_cap() {
  const char* cap = std::getenv("FASTCONV_CPU_ISA");
  if (cap == nullptr || *cap == '\0') return CpuIsa::kAvx512;
  if (std::strcmp(cap, "baseline") == 0) return CpuIsa::kBaseline;
  if (std::strcmp(cap, "avx2") == 0) return CpuIsa::kAvx2;
  if (std::strcmp(cap, "avx512") == 0) return CpuIsa::kAvx512;
  std::fprintf(stderr, "fastconv: ignoring FASTCONV_CPU_ISA=%s (expected baseline, avx2 or avx512)\n", cap);
  return CpuIsa::kAvx512;
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const CpuIsa cap = requested_cap();
    const CpuIsa best = supported_isa();
    return cap < best ? cap : best;
  }();
  return isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kBaseline:
      break;
  }
  return "baseline";
}

}  // namespace cpu
}  // namespace fastconv
