// Parallel loops for the CPU kernels: at::parallel_for with grain sizes chosen
// so that small tensors stay on one thread.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace fastconv {
namespace cpu {

// Elementwise loops are memory-bound: split only when each thread gets at
// least this many elements.
constexpr int64_t kElementwiseGrain = 32768;

template <typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& body) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(begin, end); });
}

}  // namespace cpu
}  // namespace fastconv
