// The x86 vector ISA the CPU kernels may use, chosen once per process at run
// time, so that one binary runs everywhere and still uses the widest vectors
// the CPU has. FASTCONV_CPU_ISA=baseline|avx2|avx512 caps the choice (the
// tests force each path that way and compare it with the portable one); a cap
// above what the CPU supports falls back to the best it does support; an
// unknown value is reported on stderr and ignored.
#pragma once

// Function attributes that compile one function for a level above the
// baseline, so the build needs no -mavx*; callers check cpu_isa() first. Each
// names exactly the features cpu_isa() checks for its level, so code under it
// may use any of them.
#if defined(__x86_64__) || defined(__i386__)
#define FASTCONV_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2")))
#define FASTCONV_TARGET_AVX512 __attribute__((target("avx2,fma,bmi2,avx512f,avx512dq,avx512bw,avx512vl")))
#endif

namespace fastconv {
namespace cpu {

// Ordered: each level includes the ones before it.
enum class CpuIsa {
  kBaseline,  // portable C++ only
  kAvx2,      // AVX2 + FMA + BMI2
  kAvx512,    // AVX-512 F, DQ, BW, VL + BMI2
};

CpuIsa cpu_isa();
// "baseline", "avx2" or "avx512": the FASTCONV_CPU_ISA value that selects `isa`.
const char* cpu_isa_name(CpuIsa isa);

}  // namespace cpu
}  // namespace fastconv
