// SIMT portability layer for the CUDA kernels in csrc/cuda/*.cuh.
//
// Under nvcc this is a thin shim over the CUDA runtime. With a host compiler
// it provides a CPU runtime that executes the same kernel source: every CUDA
// thread becomes a fiber, a block's fibers run cooperatively on one OS thread,
// and blocks are spread over a pool of worker threads. That lets the kernels
// (including their barriers and warp collectives) be tested without a GPU.
#pragma once

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define SIMT_KERNEL_NS cuda
#define SIMT_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
// One byte array per use site: differently typed `extern __shared__` arrays
// with the same name would clash inside one translation unit.
#define SIMT_DYNAMIC_SHARED(T, name)                                \
  extern __shared__ __align__(16) unsigned char name##_raw[];       \
  T* name = reinterpret_cast<T*>(name##_raw)

#else  // host compiler: CPU runtime

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define SIMT_KERNEL_NS simt

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#if !defined(__GNUC__)
#define __restrict__ __restrict
#endif
// Static shared memory must be per block. One OS thread runs one block at a
// time (with all of that block's fibers), so a thread_local static is exactly
// "one copy per resident block".
#define __shared__ static thread_local

// ---------------------------------------------------------------- vector types
// Alignments follow CUDA's vector_types.h so struct layouts match the GPU.
#define SIMT_VEC1(N, T, A)                                                    \
  struct alignas(A) N { T x; };                                               \
  inline N make_##N(T x) { return N{x}; }
#define SIMT_VEC2(N, T, A)                                                    \
  struct alignas(A) N { T x, y; };                                            \
  inline N make_##N(T x, T y) { return N{x, y}; }
#define SIMT_VEC3(N, T)                                                       \
  struct N { T x, y, z; };                                                    \
  inline N make_##N(T x, T y, T z) { return N{x, y, z}; }
#define SIMT_VEC4(N, T, A)                                                    \
  struct alignas(A) N { T x, y, z, w; };                                      \
  inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }

SIMT_VEC2(char2, signed char, 2)
SIMT_VEC4(char4, signed char, 4)
SIMT_VEC2(uchar2, unsigned char, 2)
SIMT_VEC4(uchar4, unsigned char, 4)
SIMT_VEC2(short2, short, 4)
SIMT_VEC4(short4, short, 8)
SIMT_VEC2(ushort2, unsigned short, 4)
SIMT_VEC4(ushort4, unsigned short, 8)
SIMT_VEC1(int1, int, 4)
SIMT_VEC2(int2, int, 8)
SIMT_VEC3(int3, int)
SIMT_VEC4(int4, int, 16)
SIMT_VEC2(uint2, unsigned int, 8)
SIMT_VEC3(uint3, unsigned int)
SIMT_VEC4(uint4, unsigned int, 16)
SIMT_VEC1(float1, float, 4)
SIMT_VEC2(float2, float, 8)
SIMT_VEC3(float3, float)
SIMT_VEC4(float4, float, 16)
SIMT_VEC2(double2, double, 16)
SIMT_VEC2(longlong2, long long, 16)
SIMT_VEC2(ulonglong2, unsigned long long, 16)

#undef SIMT_VEC1
#undef SIMT_VEC2
#undef SIMT_VEC3
#undef SIMT_VEC4

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// Set by the scheduler before it resumes each fiber. Constant-initialized
// inline thread_locals, so reading them needs no TLS init wrapper.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ------------------------------------------------------------- runtime errors
typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

namespace simt {

enum class Order { Forward, Reversed, Shuffled };

// Order in which a block's threads run between barriers. Forward mimics the
// "lucky" schedule; Reversed and Shuffled expose missing __syncthreads().
// Shuffled draws a new permutation at every barrier round, derived from
// (seed, block index) so results do not depend on the worker count.
void set_order(Order order, uint64_t seed = 0);
Order order();
uint64_t seed();
// OS threads that run blocks in parallel; n <= 0 means hardware_concurrency.
void set_num_workers(int n);
int num_workers();
// Name of the kernel being launched (for messages); "" outside a launch.
const char* current_kernel();

cudaError_t get_last_error(bool clear);
const char* error_string(cudaError_t e);

namespace detail {

inline thread_local unsigned char* dyn_smem = nullptr;

using KernelBody = void (*)(const void* ctx);
void launch(const char* name, dim3 grid, dim3 block, size_t smem_bytes,
            KernelBody body, const void* ctx);

void syncthreads(const char* file, int line);
int syncthreads_count(const char* file, int line, int pred);

enum WarpOp : int { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };
uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width);

template <class T>
inline T shfl(int op, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_op(op, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Kernel arguments are evaluated once, at the launch site (as with <<<>>>),
// then every CUDA thread calls the kernel with copies of them.
template <class Call, class Stream, class... Args>
void launch_with_args(const char* name, dim3 grid, dim3 block, size_t smem_bytes,
                      const Stream&, const Call& call, Args&&... args) {
  const std::tuple<std::decay_t<Args>...> packed(std::forward<Args>(args)...);
  auto body = [&] { std::apply(call, packed); };
  launch(name, grid, block, smem_bytes,
         [](const void* ctx) { (*static_cast<const decltype(body)*>(ctx))(); }, &body);
}

}  // namespace detail
}  // namespace simt

// The kernel is named inside a generic lambda so that template argument
// deduction and function-pointer variables both work as with <<<>>>.
#define SIMT_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)             \
  ::simt::detail::launch_with_args(                                           \
      #kernel, ::dim3(grid), ::dim3(block), static_cast<size_t>(smem_bytes),  \
      (stream), [&](const auto&... simt_args_) { kernel(simt_args_...); },    \
      ##__VA_ARGS__)

#define SIMT_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::simt::detail::dyn_smem)

inline cudaError_t cudaGetLastError() { return ::simt::get_last_error(true); }
inline cudaError_t cudaPeekAtLastError() { return ::simt::get_last_error(false); }
inline const char* cudaGetErrorString(cudaError_t e) { return ::simt::error_string(e); }
// Launches are synchronous on the host.
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// ------------------------------------------------------ barriers and warps
// A macro so that the barrier's call site (file:line) identifies it: threads
// of a block must all wait at the same __syncthreads() to be released.
#define __syncthreads() ::simt::detail::syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(p) ::simt::detail::syncthreads_count(__FILE__, __LINE__, (p))
#define __syncthreads_and(p) \
  (::simt::detail::syncthreads_count(__FILE__, __LINE__, (p) ? 0 : 1) == 0)
#define __syncthreads_or(p) \
  (::simt::detail::syncthreads_count(__FILE__, __LINE__, (p) ? 1 : 0) != 0)

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::simt::detail::warp_op(::simt::detail::kSync, mask, 0, 0, 32);
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::simt::detail::shfl(::simt::detail::kShflIdx, mask, v, src_lane, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::simt::detail::shfl(::simt::detail::kShflUp, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::simt::detail::shfl(::simt::detail::kShflDown, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::simt::detail::shfl(::simt::detail::kShflXor, mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(
      ::simt::detail::warp_op(::simt::detail::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(::simt::detail::warp_op(::simt::detail::kAny, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(::simt::detail::warp_op(::simt::detail::kAll, mask, pred != 0, 0, 32));
}

// Fibers of one block share an OS thread and switch only at barriers and
// collectives; fences matter only between blocks (different OS threads).
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// -------------------------------------------------------------------- atomics
// Blocks run on different OS threads, so these must be real atomics.
// Relaxed ordering, like CUDA's atomic*().
#define SIMT_ATOMIC_INT(T)                                                        \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); } \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); } \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); } \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }   \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); } \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); } \
  inline T atomicCAS(T* p, T expected, T desired) {                              \
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED,   \
                                __ATOMIC_RELAXED);                                \
    return expected;                                                              \
  }                                                                               \
  inline T atomicMax(T* p, T v) {                                                 \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                 \
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, \
                                                   __ATOMIC_RELAXED)) {           \
    }                                                                             \
    return old;                                                                   \
  }                                                                               \
  inline T atomicMin(T* p, T v) {                                                 \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                 \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, \
                                                   __ATOMIC_RELAXED)) {           \
    }                                                                             \
    return old;                                                                   \
  }
SIMT_ATOMIC_INT(int)
SIMT_ATOMIC_INT(unsigned int)
SIMT_ATOMIC_INT(unsigned long long)
#undef SIMT_ATOMIC_INT
inline long long atomicMax(long long* p, long long v) {
  long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v &&
         !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline long long atomicMin(long long* p, long long v) {
  long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < old &&
         !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// Floating-point adds have no hardware fetch-add on x86: CAS on the bits
// (bitwise comparison, so a NaN in memory cannot make the loop spin forever).
template <class F>
inline F simt_atomic_fadd(F* p, F v) {
  F old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  F desired;
  do {
    desired = old + v;
  } while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return old;
}
inline float atomicAdd(float* p, float v) { return simt_atomic_fadd(p, v); }
inline double atomicAdd(double* p, double v) { return simt_atomic_fadd(p, v); }
inline float atomicExch(float* p, float v) {
  float old;
  __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED);
  return old;
}

// ------------------------------------------------------------ math intrinsics
template <class T>
inline T __ldg(const T* p) { return *p; }

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}

// CUDA provides unqualified min/max overloads in device code.
#define SIMT_MINMAX(T)                                  \
  inline T min(T a, T b) { return b < a ? b : a; }      \
  inline T max(T a, T b) { return a < b ? b : a; }
SIMT_MINMAX(int)
SIMT_MINMAX(unsigned int)
SIMT_MINMAX(long)
SIMT_MINMAX(unsigned long)
SIMT_MINMAX(long long)
SIMT_MINMAX(unsigned long long)
SIMT_MINMAX(float)
SIMT_MINMAX(double)
#undef SIMT_MINMAX

#endif  // __CUDACC__
