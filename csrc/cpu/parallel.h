// Parallel loops for the CPU kernels: at::parallel_for with grain sizes chosen
// so that small tensors stay on one thread, and deterministic parallel sums.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fastconv {
namespace cpu {

// Elementwise loops are memory-bound: split only when each thread gets at
// least this many elements.
constexpr int64_t kElementwiseGrain = 32768;

template <typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& body) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(begin, end); });
}

// A sum over `units` work items (a weight gradient over (image, block)
// units): the units are cut into one chunk per thread, in order; chunk 0 sums
// into `result`, the others into private buffers of `numel` that are added to
// it afterwards in chunk order, so the result is deterministic for a given
// thread count and no two threads write the same element.
// body(sum, unit_begin, unit_end) overwrites `sum` with its units' sum.
template <typename T, typename F>
void sum_over_chunks(int64_t units, int64_t numel, T* result, const F& body) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(units, at::get_num_threads()));
  std::vector<T> partials((chunks - 1) * numel);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* sum = chunk == 0 ? result : partials.data() + (chunk - 1) * numel;
      const int64_t unit_begin = units * chunk / chunks, unit_end = units * (chunk + 1) / chunks;
      if (unit_begin == unit_end) {
        std::fill_n(sum, numel, T(0));
      } else {
        body(sum, unit_begin, unit_end);
      }
    }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const T* part = partials.data() + (chunk - 1) * numel;
    for (int64_t i = 0; i < numel; ++i) result[i] += part[i];
  }
}

}  // namespace cpu
}  // namespace fastconv
