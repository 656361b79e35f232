#include "dropout.h"

#include "../common/philox.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {

template <typename T>
void dropout_apply(Target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale) {
  const auto seed = static_cast<uint64_t>(seed_offset[0]);
  const auto offset = static_cast<uint64_t>(seed_offset[1]);
  const int64_t groups = (n + 3) / 4;
  // Chunks are whole Philox groups, so no group is split between threads.
  parallel_chunks(groups, kElementwiseGrain / 4, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const Philox4x32 r = philox_group(seed, offset, static_cast<uint64_t>(g));
      const int64_t base = g * 4;
      const int count = base + 4 <= n ? 4 : static_cast<int>(n - base);
      for (int k = 0; k < count; ++k) {
        const T factor = dropout_keep(r.v[k], drop_threshold) ? scale : T(0);
        output[base + k] = input[base + k] * factor;
      }
    }
  });
}

template void dropout_apply<float>(Target, const float*, float*, int64_t, const int64_t*, uint32_t, float);
template void dropout_apply<double>(Target, const double*, double*, int64_t, const int64_t*, uint32_t, double);

}  // namespace cpu
}  // namespace fastconv
