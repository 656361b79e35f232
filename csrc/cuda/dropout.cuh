// Dropout: each thread draws one Philox4x32-10 block (four 32-bit words) and
// applies it to four consecutive elements, so element i always uses word i % 4
// of counter i / 4 — the mapping the CPU kernel uses too. A dropped element
// becomes input * 0 (so NaN stays NaN, as in torch); a kept one input * scale.
#pragma once

#include "../common/philox.h"
#include "common.cuh"
#include "dropout.h"

namespace fastconv {
namespace SIMT_KERNEL_NS {

template <typename T, bool kVectorized>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    dropout_kernel(const T* input, T* output, int64_t n, const int64_t* seed_offset,
                   uint32_t drop_threshold, acc_t<T> scale) {
  using A = acc_t<T>;
  const uint64_t seed = static_cast<uint64_t>(__ldg(seed_offset));
  const uint64_t offset = static_cast<uint64_t>(__ldg(seed_offset + 1));
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const Philox4x32 r = philox_group(seed, offset, static_cast<uint64_t>(g));
    const int64_t base = g * 4;
    if (kVectorized && base + 4 <= n) {
      Pack<T, 4> p = reinterpret_cast<const Pack<T, 4>*>(input)[g];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        p.v[k] = from_acc<T>(to_acc(p.v[k]) * (dropout_keep(r.v[k], drop_threshold) ? scale : A(0)));
      }
      reinterpret_cast<Pack<T, 4>*>(output)[g] = p;
    } else {
      for (int k = 0; k < 4 && base + k < n; ++k) {
        const A factor = dropout_keep(r.v[k], drop_threshold) ? scale : A(0);
        output[base + k] = from_acc<T>(to_acc(input[base + k]) * factor);
      }
    }
  }
}

template <typename T>
const char* dropout_apply(Target target, const T* input, T* output, int64_t n, const int64_t* seed_offset,
                          uint32_t drop_threshold, acc_t<T> scale) {
  if (n == 0) return nullptr;
  const unsigned blocks = grid_stride_blocks((n + 3) / 4);
  const int bytes = 4 * static_cast<int>(sizeof(T));
  auto kernel = dropout_kernel<T, false>;
  if (is_aligned(input, bytes) && is_aligned(output, bytes)) kernel = dropout_kernel<T, true>;
  SIMT_LAUNCH(kernel, blocks, kElementwiseThreads, 0, stream_of(target), input, output, n, seed_offset,
              drop_threshold, scale);
  return launch_status();
}

#define FASTCONV_INSTANTIATE_DROPOUT(T) \
  template const char* dropout_apply<T>(Target, const T*, T*, int64_t, const int64_t*, uint32_t, acc_t<T>);

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
