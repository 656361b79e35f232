// The x86 intrinsics, for kernels that carry their own target attributes
// (cpu_isa.h); FASTCONV_CPU_X86 marks the builds that have them.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define FASTCONV_CPU_X86 1

// GCC 12 reports its own _mm512_undefined_* placeholders as "maybe
// uninitialized" once they are inlined; the warnings are located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
