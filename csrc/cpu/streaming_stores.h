// Non-temporal ("streaming") stores for elementwise kernels whose data does
// not fit the last-level cache. Then a kernel's output is evicted before
// anyone reads it back, and an ordinary store first reads every output line
// in (read-for-ownership) only to overwrite it: a third of the DRAM traffic of
// a one-input kernel. Streaming stores write around the caches and skip that
// read. glibc's memcpy makes the same choice above a threshold tied to the
// cache size. Below it, ordinary stores win: the output stays in cache for
// the next layer.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu_isa.h"  // FASTCONV_TARGET_AVX2, FASTCONV_TARGET_AVX512
#include "isa_loops.h"
#include "x86_intrinsics.h"

namespace fastconv {
namespace cpu {

// Whether a kernel that reads and writes `bytes_touched` bytes in all should
// write `output` with streaming stores: more than the last-level cache, and
// `output` 64-byte aligned (the stores need whole aligned vectors; kernels
// storing in 64-element blocks from an aligned start stay aligned).
bool stream_output(int64_t bytes_touched, const void* output);

// The threshold on bytes_touched: the last-level cache of CPU 0 (sysfs).
int64_t streaming_threshold_bytes();

#if defined(FASTCONV_CPU_X86)
// One vector store: streaming or ordinary (unaligned allowed).
template <bool kStream>
FASTCONV_TARGET_AVX512 inline void store_vector(float* p, __m512 v) {
  if constexpr (kStream) _mm512_stream_ps(p, v); else _mm512_storeu_ps(p, v);
}
template <bool kStream>
FASTCONV_TARGET_AVX512 inline void store_vector(double* p, __m512d v) {
  if constexpr (kStream) _mm512_stream_pd(p, v); else _mm512_storeu_pd(p, v);
}
template <bool kStream>
FASTCONV_TARGET_AVX2 inline void store_vector(float* p, __m256 v) {
  if constexpr (kStream) _mm256_stream_ps(p, v); else _mm256_storeu_ps(p, v);
}
template <bool kStream>
FASTCONV_TARGET_AVX2 inline void store_vector(double* p, __m256d v) {
  if constexpr (kStream) _mm256_stream_pd(p, v); else _mm256_storeu_pd(p, v);
}
#endif

// Orders a thread's streaming stores before whatever it does next (they are
// weakly ordered).
void end_streaming_stores();

// A thread's share of a kernel, body(std::bool_constant<kStream>{}), with
// streaming stores (then fenced) or ordinary ones.
template <typename Body>
FASTCONV_LOOP_INLINE void with_stores(bool stream, const Body& body) {
  if (stream) {
    body(std::true_type{});
    end_streaming_stores();
  } else {
    body(std::false_type{});
  }
}

}  // namespace cpu
}  // namespace fastconv
