#include "cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace fastconv {
namespace cpu {
namespace {

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

CpuIsa requested_cap() {
  const char* cap = std::getenv("FASTCONV_CPU_ISA");
  if (cap == nullptr) return CpuIsa::kAvx512;
  if (std::strcmp(cap, "baseline") == 0) return CpuIsa::kBaseline;
  if (std::strcmp(cap, "avx2") == 0) return CpuIsa::kAvx2;
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
