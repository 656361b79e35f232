// Helpers shared by every kernel header in csrc/cuda. Torch-free: compiled by
// nvcc for GPUs and by the host compiler for the SIMT runtime.
#pragma once

#include <cstdint>

#include "../common/dtypes.h"
#include "../common/host_device.h"
#include "../common/target.h"
#include "../simt/simt.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastconv {
namespace SIMT_KERNEL_NS {

// Returns v, hiding where it came from: work derived from it inside a loop
// is then done there rather than hoisted out and kept in registers across
// the loop. The gathering GEMM loaders use it, so that a few integers a
// slice are recomputed where keeping them would spill (ptxas, 128 registers).
__device__ __forceinline__ int opaque_to_compiler(int v) {
#if defined(__CUDA_ARCH__)
  asm volatile("" : "+r"(v));
#endif
  return v;
}

// Load/store through the accumulation type: half and bfloat16 are widened to
// float so that all arithmetic is fp32 (fp64 for double).
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) {
  return static_cast<T>(v);
}
#if defined(__CUDACC__)
__device__ __forceinline__ float to_acc(half_t v) { return __half2float(__ushort_as_half(v.bits)); }
__device__ __forceinline__ float to_acc(bfloat16_t v) {
  return __bfloat162float(__ushort_as_bfloat16(v.bits));
}
template <>
__device__ __forceinline__ half_t from_acc<half_t>(float v) {
  return half_t{__half_as_ushort(__float2half_rn(v))};
}
template <>
__device__ __forceinline__ bfloat16_t from_acc<bfloat16_t>(float v) {
  return bfloat16_t{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
}
#else  // the SIMT runtime: the same conversions on the host (csrc/common/dtypes.h)
inline float to_acc(half_t v) { return half_bits_to_float(v.bits); }
inline float to_acc(bfloat16_t v) { return bfloat16_bits_to_float(v.bits); }
template <>
inline half_t from_acc<half_t>(float v) {
  return half_t{float_to_half_bits(v)};
}
template <>
inline bfloat16_t from_acc<bfloat16_t>(float v) {
  return bfloat16_t{float_to_bfloat16_bits(v)};
}
#endif

// N elements moved as one aligned load/store (16 bytes: a 128-bit access).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};
template <typename T>
constexpr int pack_width() {
  return 16 / static_cast<int>(sizeof(T));
}
inline bool is_aligned(const void* p, int bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// N elements written to or read from shared memory as one vector access
// (N * sizeof(A) = 8 or 16 bytes, aligned to that). nvcc turns the Pack copies
// into ld/st.shared.v2/v4. The host compiler of the SIMT runtime splits a Pack
// whose elements are used one by one into scalar accesses, which the access
// counters would count as narrow requests with lanes a vector apart (4-way
// conflicts the GPU never sees); a GCC vector type keeps each one access of
// the vector's width, as on the GPU.
#if defined(__CUDACC__)
template <typename A, int N>
using SmemVector = Pack<A, N>;
template <typename A, int N>
__device__ __forceinline__ A& smem_vector_lane(SmemVector<A, N>& v, int u) {
  return v.v[u];
}
#else
template <typename A, int N>
using SmemVector [[gnu::vector_size(sizeof(A) * N), gnu::aligned(sizeof(A) * N)]] = A;
template <typename A, int N>
inline auto smem_vector_lane(SmemVector<A, N>& v, int u) -> decltype(v[u]) {
  return v[u];
}
#endif
template <int N, typename A>
__device__ __forceinline__ void smem_store_vector(A* s, const A* in) {
  SmemVector<A, N> pk = {};
#pragma unroll
  for (int u = 0; u < N; ++u) smem_vector_lane<A, N>(pk, u) = in[u];
  *reinterpret_cast<SmemVector<A, N>*>(s) = pk;
}

// Four consecutive float or double values (in shared memory: tiles of the
// accumulation type), moved as 16-byte vectors (one for float, two for
// double). `s` is 16-byte aligned.
template <typename A>
__device__ __forceinline__ void smem_load4(const A* s, A (&out)[4]) {
  constexpr int W = pack_width<A>();
#pragma unroll
  for (int c = 0; c < 4 / W; ++c) {
    SmemVector<A, W> pk = *reinterpret_cast<const SmemVector<A, W>*>(s + c * W);
#pragma unroll
    for (int u = 0; u < W; ++u) out[c * W + u] = smem_vector_lane<A, W>(pk, u);
  }
}
template <typename A>
__device__ __forceinline__ void smem_store4(A* s, const A (&in)[4]) {
  constexpr int W = pack_width<A>();
#pragma unroll
  for (int c = 0; c < 4 / W; ++c) smem_store_vector<W>(s + c * W, in + c * W);
}

constexpr int kElementwiseThreads = 256;

// A kernel's __launch_bounds__ written as launch_bound<T>(threads), T being
// one of the kernel's template parameters. The value is `threads`; depending on
// T is what lets the SIMT runtime see the bound: it files the kernel under a
// code section named after it, and GCC names a section from a constant only
// when the constant depends on a template parameter (it silently ignores the
// attribute otherwise, and the launch would go unchecked).
template <typename T>
constexpr int launch_bound(int threads) {
  return threads;
}

// Blocks for a grid-stride loop over `work` items: enough to fill a GPU,
// capped so that huge tensors reuse threads instead of launching millions of
// blocks (which also keeps the SIMT runtime's fiber count bounded).
inline unsigned grid_stride_blocks(int64_t work, int threads = kElementwiseThreads) {
  const int64_t max_blocks = 4096;
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

// Images (or planes) per launch of an elementwise kernel that splits its flat
// index with 32-bit FastDivmods: as many as keep the launch under 2^30
// elements (0 when one image alone exceeds it), which leaves the 32-bit
// grid-stride index room to step past the end.
constexpr int64_t kElementwiseLaunchLimit = int64_t(1) << 30;
inline int64_t elementwise_images_per_launch(int64_t per_image) {
  return per_image > 0 ? kElementwiseLaunchLimit / per_image : kElementwiseLaunchLimit;
}
// Calls launch(first, count) for consecutive pieces of `images`, `step` at a
// time (elementwise_images_per_launch, > 0), and returns the first error.
template <typename Launch>
const char* launch_in_pieces(int64_t images, int64_t step, Launch&& launch) {
  for (int64_t first = 0; first < images; first += step) {
    if (const char* err = launch(first, images - first < step ? images - first : step)) return err;
  }
  return nullptr;
}

// An attribute of the current device, or `fallback` where the query fails.
inline int device_attribute(cudaDeviceAttr attr, int fallback) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, attr, device) != cudaSuccess) {
    cudaGetLastError();  // a failed query must not surface as a launch error
    return fallback;
  }
  return value;
}

// Multiprocessors of the current device (the SIMT runtime reports
// FASTCONV_SIMT_SM_COUNT, default 132): launchers that split work to fill the GPU
// size the split from it. 1 if the query fails, which only ever under-splits.
inline int device_multiprocessors() {
  const int count = device_attribute(cudaDevAttrMultiProcessorCount, 1);
  return count < 1 ? 1 : count;
}

// FP32 lanes of one of the current device's SMs: 64 up to sm_80 (Turing,
// the A100), 128 from sm_86 on (GA10x, Ada, Hopper; the SIMT runtime reports
// FASTCONV_SIMT_ARCH, default 90). Launchers weigh shared-memory-bound tiles
// by it.
inline int device_fp32_lanes_per_sm() {
  const int major = device_attribute(cudaDevAttrComputeCapabilityMajor, 9);
  const int minor = device_attribute(cudaDevAttrComputeCapabilityMinor, 0);
  return major * 10 + minor > 80 ? 128 : 64;
}

// torch's ReLU on a GPU, for every kernel that applies it (relu.cuh, the
// conv2d_relu epilogue): NaN passes, and -0.0 gives +0.0, as torch's CUDA
// ReLU does (its CPU ReLU passes -0.0).
template <typename A>
FASTCONV_HD A relu_of(A x) {
  return x <= A(0) ? A(0) : x;
}

// The stream a launcher's Target names (cuda::Target or simt::Target, by the
// namespace these kernels are compiled into).
inline cudaStream_t stream_of(Target target) { return static_cast<cudaStream_t>(target.stream); }

// Converts the sticky launch error into the launcher's return value:
// nullptr on success, CUDA's message otherwise. The ATen glue turns a
// message into an exception.
inline const char* launch_status() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
