// A grid-stride elementwise map with 128-bit vector loads, shared by the
// pointwise ops (ReLU forward and backward).
#pragma once

#include "common.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// out[i] = op(a[i], b[i]). Pointers may alias (in-place ops pass out == a),
// so they are not __restrict__. The first n / VEC elements move as packs,
// the tail element by element.
template <typename T, int VEC, typename Op>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    binary_map_kernel(const T* a, const T* b, T* out, int64_t n, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / VEC;
  for (int64_t p = first; p < packs; p += stride) {
    Pack<T, VEC> va = reinterpret_cast<const Pack<T, VEC>*>(a)[p];
    const Pack<T, VEC> vb = reinterpret_cast<const Pack<T, VEC>*>(b)[p];
#pragma unroll
    for (int k = 0; k < VEC; ++k) va.v[k] = from_acc<T>(op(to_acc(va.v[k]), to_acc(vb.v[k])));
    reinterpret_cast<Pack<T, VEC>*>(out)[p] = va;
  }
  for (int64_t i = packs * VEC + first; i < n; i += stride) {
    out[i] = from_acc<T>(op(to_acc(a[i]), to_acc(b[i])));
  }
}

// Launches binary_map_kernel with the widest pack all three pointers allow.
template <typename T, typename Op>
const char* launch_binary_map(const T* a, const T* b, T* out, int64_t n, Op op, Target target) {
  if (n == 0) return nullptr;
  constexpr int kVec = pack_width<T>();
  const unsigned blocks = grid_stride_blocks((n + kVec - 1) / kVec);
  const int bytes = kVec * static_cast<int>(sizeof(T));
  // A function pointer, because a template-id with commas can't pass through a macro.
  auto kernel = binary_map_kernel<T, 1, Op>;
  if (is_aligned(a, bytes) && is_aligned(b, bytes) && is_aligned(out, bytes)) {
    kernel = binary_map_kernel<T, kVec, Op>;
  }
  SIMT_LAUNCH(kernel, blocks, kElementwiseThreads, 0, stream_of(target), a, b, out, n, op);
  return launch_status();
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
