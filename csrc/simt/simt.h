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
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define SIMT_KERNEL_NS simt

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
// GCC's attribute rather than alignas: CUDA code writes it among the
// decl-specifiers (`__shared__ __align__(16) float tile[...]`), where the
// standard attribute is not allowed.
#define __align__(n) __attribute__((aligned(n)))
#if !defined(__GNUC__)
#define __restrict__ __restrict
#endif

// A kernel's __launch_bounds__ must reach the launch, which knows only the
// kernel's address: the kernel is placed in a section named after its bound
// ("simt_lb_0256"), and the runtime finds the section that holds the address
// (the linker's __start_/__stop_ symbols). GCC builds the name only from a
// constant that depends on a template parameter and silently drops the
// attribute otherwise, so the kernels of csrc/cuda (all templates) write
// their bound as launch_bound<T>(threads) or a Tile's member, and the tests
// check that every kernel variant lies in such a section. A kernel without a
// bound may run 1024 threads per block, as on a GPU.
#define __launch_bounds__(...) SIMT_LAUNCH_BOUNDS_(__VA_ARGS__, 0)
#define SIMT_LAUNCH_BOUNDS_(max_threads, ...) \
  __attribute__((section(::simt::detail::BoundsSection<(max_threads)>::name)))

// Static shared memory must be per block. One OS thread runs one block at a
// time (with all of that block's fibers), so a thread_local static is exactly
// "one copy per resident block". In sanitizer builds the variables also go
// to TLS sections (simt/static_shared.h) that the memory checker refills with
// a garbage pattern at every block start, as a GPU's shared memory would be,
// and that tell race reports and access counters shared memory from global.
// Two sections, because of two GCC rules: inside a template it drops a section
// name that does not depend on a template parameter (so the name is a member
// of a class chosen from __PRETTY_FUNCTION__, which is value-dependent there);
// and it refuses to mix, in one section of one translation unit, variables of
// template instantiations (COMDAT groups) with other functions' ("section type
// conflict"). An instantiation's __PRETTY_FUNCTION__ ends in "[with ...]".
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define __shared__                                                                          \
  static thread_local __attribute__((section(::simt::detail::StaticSharedSection<           \
                                             ::simt::detail::is_template_instance(          \
                                                 __PRETTY_FUNCTION__)>::name)))
#else
#define __shared__ static thread_local
#endif

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
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};

// Environment, read at the first launch:
//   FASTCONV_SIMT_ORDER=forward|reversed|shuffled, FASTCONV_SIMT_SEED=N: see Order.
//   FASTCONV_SIMT_WORKERS=N: OS threads that run blocks (default: every core).
//   FASTCONV_SIMT_SM_COUNT=N: the multiprocessor count the emulated device reports
//     (cudaDevAttrMultiProcessorCount; default 132, an H100's). Launchers size
//     their grids from it, so it picks the launch shapes a GPU would get.
//   FASTCONV_SIMT_ARCH=N: the compute capability it reports, major * 10 + minor
//     (cudaDevAttrComputeCapabilityMajor/Minor; default 90). The op layer runs
//     tensor-core GEMMs from 80 on, as on a GPU; the GEMM launcher weighs its
//     tiles by the FP32 lanes an SM of that capability has.
//   FASTCONV_SIMT_CHECK=race,memory,access (or none): the checks a sanitizer
//     build runs; all that the build supports by default. `race` needs the
//     kernels and program built with -fsanitize=thread (ThreadSanitizer then
//     sees every CUDA thread as a fiber, ordered only by barriers, collectives
//     and the launch); `memory` with -fsanitize=address,alignment,bounds (shared
//     memory refilled with garbage at every block start, dynamic shared memory
//     allocated to its exact size); `access` (memory-access counters: global
//     32-byte sectors and shared bank-conflict ways per warp request, per
//     kernel and source line, reported at exit) compiled with -fsanitize=thread
//     but linked with simt_access instead of libtsan. A warp request is the
//     n-th execution of one PC by the lanes of a warp within a barrier
//     interval; global: distinct 32-byte sectors it touches; shared: the most
//     distinct 4-byte words one of 32 banks serves (one word: a broadcast),
//     8-byte accesses per half-warp, 16-byte ones per quarter-warp
//     (simt/access/access.h). FASTCONV_SIMT_ACCESS_JSON=path writes the report
//     as JSON instead of a table on stderr.
//     Asking a build for a check it cannot do aborts at the first launch.
//     Launch limits and warp-collective rules are checked in every build.
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
// The multiprocessor count cudaDeviceGetAttribute reports; n <= 0 restores
// the default (FASTCONV_SIMT_SM_COUNT, else 132).
void set_multiprocessor_count(int n);
int multiprocessor_count();
// The compute capability it reports (major * 10 + minor); cc <= 0 restores
// the default (FASTCONV_SIMT_ARCH, else 90). False, and no change, for 1-9.
bool set_compute_capability(int cc);
int compute_capability();

// How often each kernel has run in this process (launches that passed the
// launch checks), by kernel address. The tests use it to prove that the SIMT
// path ran, and that every kernel variant built for SIMT runs in the suite.
struct KernelLaunches {
  const void* kernel;
  std::string name;
  uint64_t launches;
};
std::vector<KernelLaunches> launch_counts();

// The launch recorder, for the GPU performance model (python -m bench.cuda_model).
// While recording, every launch that passes the launch checks is appended to
// a list: kernel, grid, block, dynamic shared memory. In a dry run a launch is
// checked and recorded but its body does not run, so a real launcher called
// by a real op yields the exact launch sequence of any problem size in
// microseconds; the outputs (and anything computed from them) are garbage
// then. Dry-run launches are not in launch_counts(), which counts kernels
// that really ran. FASTCONV_SIMT_DRY_RUN=1 starts a process in a dry run.
struct LaunchRecord {
  const void* kernel;
  std::string name;
  dim3 grid, block;
  size_t smem;
};
void set_recording(bool on);
void set_dry_run(bool on);  // a dry run also records
bool dry_run();
// The launches recorded since the last call (and clears the list).
std::vector<LaunchRecord> take_recorded_launches();

cudaError_t get_last_error(bool clear);
const char* error_string(cudaError_t e);

namespace detail {

inline thread_local unsigned char* dyn_smem = nullptr;

// "simt_lb_0256" for __launch_bounds__(256): the section of the kernel's code.
template <int N>
struct BoundsSection {
  static_assert(N >= 1 && N <= 1024, "__launch_bounds__ allows 1 to 1024 threads per block");
  static constexpr char name[] = {'s', 'i', 'm', 't', '_', 'l', 'b', '_', char('0' + N / 1000),
                                  char('0' + N / 100 % 10), char('0' + N / 10 % 10),
                                  char('0' + N % 10), '\0'};
};

// The section of a __shared__ variable (see __shared__ above); the runtime
// reads both (static_shared.cpp). `name` is a reference to a string literal
// because outside templates GCC takes nothing else (not a constexpr array).
// Other functions with COMDAT statics (inline ones, lambdas in templates) get
// simt_shared too; a translation unit that mixes them with plain functions'
// __shared__ variables fails to compile with GCC's conflict, never silently.
constexpr bool is_template_instance(const char* pretty_function) {
  for (const char* p = pretty_function; *p; ++p)
    if (p[0] == '[' && p[1] == 'w' && p[2] == 'i' && p[3] == 't' && p[4] == 'h' && p[5] == ' ')
      return true;
  return false;
}
template <bool kTemplate>
struct StaticSharedSection {
  static constexpr const char (&name)[12] = "simt_shared";
};
template <>
struct StaticSharedSection<true> {
  static constexpr const char (&name)[21] = "simt_shared_template";
};

// Where a launch or a collective is written, for messages.
struct Site {
  const char* text;  // the kernel expression of a launch, the intrinsic of a collective
  const char* file;
  int line;
};

using KernelBody = void (*)(const void* ctx);
void launch(const Site& site, const void* kernel, dim3 grid, dim3 block, size_t smem_bytes,
            KernelBody body, const void* ctx);
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes);

void syncthreads(const char* file, int line);
int syncthreads_count(const char* file, int line, int pred);

enum WarpOp : int { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kMma, kLdmatrix };
uint64_t warp_op(const Site& site, int op, unsigned mask, uint64_t value, int arg, int width);

template <class T>
inline T shfl(const Site& site, int op, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_op(site, op, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Kernel arguments are evaluated once, at the launch site (as with <<<>>>),
// then every CUDA thread calls the kernel with copies of them. The kernel is
// taken as a function pointer (a kernel template needs its arguments named,
// `k<T>`): its address keys the launch bounds and cudaFuncSetAttribute.
template <class... Params, class Stream, class... Args>
void launch_kernel(const Site& site, void (*kernel)(Params...), dim3 grid, dim3 block,
                   size_t smem_bytes, const Stream&, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
  const std::tuple<std::decay_t<Args>...> packed(std::forward<Args>(args)...);
  auto body = [&] { std::apply([&](const auto&... a) { kernel(a...); }, packed); };
  launch(site, reinterpret_cast<const void*>(kernel), grid, block, smem_bytes,
         [](const void* ctx) { (*static_cast<const decltype(body)*>(ctx))(); }, &body);
}

}  // namespace detail
}  // namespace simt

#define SIMT_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                    \
  ::simt::detail::launch_kernel(::simt::detail::Site{#kernel, __FILE__, __LINE__}, (kernel), \
                                ::dim3(grid), ::dim3(block), static_cast<size_t>(smem_bytes), \
                                (stream), ##__VA_ARGS__)

#define SIMT_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::simt::detail::dyn_smem)

inline cudaError_t cudaGetLastError() { return ::simt::get_last_error(true); }
inline cudaError_t cudaPeekAtLastError() { return ::simt::get_last_error(false); }
inline const char* cudaGetErrorString(cudaError_t e) { return ::simt::error_string(e); }
// Launches are synchronous on the host.
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
// One emulated device, 0, with a configurable multiprocessor count.
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = ::simt::multiprocessor_count();
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = ::simt::compute_capability() / 10;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = ::simt::compute_capability() % 10;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
// The opt-in a kernel needs for more than 48 KiB of dynamic shared memory
// (up to 227 KiB, an H100's limit); same name and signature as CUDA's.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return ::simt::detail::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
}

// ------------------------------------------------------ barriers and warps
// Macros so that the call site (file:line) identifies a barrier or a
// collective: threads of a block must all wait at the same __syncthreads(),
// and lanes of a warp at the same collective, to be released.
#define __syncthreads() ::simt::detail::syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(p) ::simt::detail::syncthreads_count(__FILE__, __LINE__, (p))

#define SIMT_SITE_(name) ::simt::detail::Site{name, __FILE__, __LINE__}
#define __syncwarp(...) ::simt::detail::syncwarp(SIMT_SITE_("__syncwarp") __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::simt::detail::shfl_sync(SIMT_SITE_("__shfl_sync"), __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::detail::shfl_up_sync(SIMT_SITE_("__shfl_up_sync"), __VA_ARGS__)
#define __shfl_down_sync(...) \
  ::simt::detail::shfl_down_sync(SIMT_SITE_("__shfl_down_sync"), __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::detail::shfl_xor_sync(SIMT_SITE_("__shfl_xor_sync"), __VA_ARGS__)
#define __ballot_sync(...) ::simt::detail::ballot_sync(SIMT_SITE_("__ballot_sync"), __VA_ARGS__)
#define __any_sync(...) ::simt::detail::any_sync(SIMT_SITE_("__any_sync"), __VA_ARGS__)
#define __all_sync(...) ::simt::detail::all_sync(SIMT_SITE_("__all_sync"), __VA_ARGS__)

namespace simt {
namespace detail {
inline void syncwarp(const Site& s, unsigned mask = 0xffffffffu) {
  warp_op(s, kSync, mask, 0, 0, 32);
}
template <class T>
inline T shfl_sync(const Site& s, unsigned mask, T v, int src_lane, int width = 32) {
  return shfl(s, kShflIdx, mask, v, src_lane, width);
}
template <class T>
inline T shfl_up_sync(const Site& s, unsigned mask, T v, unsigned delta, int width = 32) {
  return shfl(s, kShflUp, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T shfl_down_sync(const Site& s, unsigned mask, T v, unsigned delta, int width = 32) {
  return shfl(s, kShflDown, mask, v, static_cast<int>(delta), width);
}
template <class T>
inline T shfl_xor_sync(const Site& s, unsigned mask, T v, int lane_mask, int width = 32) {
  return shfl(s, kShflXor, mask, v, lane_mask, width);
}
inline unsigned ballot_sync(const Site& s, unsigned mask, int pred) {
  return static_cast<unsigned>(warp_op(s, kBallot, mask, pred != 0, 0, 32));
}
inline int any_sync(const Site& s, unsigned mask, int pred) {
  return static_cast<int>(warp_op(s, kAny, mask, pred != 0, 0, 32));
}
inline int all_sync(const Site& s, unsigned mask, int pred) {
  return static_cast<int>(warp_op(s, kAll, mask, pred != 0, 0, 32));
}
}  // namespace detail
}  // namespace simt

// ------------------------------------------------- warp-level matrix multiply
// mma.sync.aligned.{m16n8k16 f16|bf16, m16n8k8 tf32}.row.col.f32 as a strict
// warp collective: all 32 lanes of a full warp meet at the same call site with
// the same shape (a mismatch or a lane that never arrives aborts, naming both
// sites), the runtime gathers every lane's A, B and C registers in PTX's
// documented fragment layouts, multiplies, and hands each lane its registers
// of D. groupID = lane / 4, tig = lane % 4:
//   f16/bf16 A (16x16): a[r] holds (row groupID + 8 (r % 2), k 2 tig + 8 (r / 2) + {0, 1})
//            B (16x8):  b[r] holds (k 2 tig + 8 r + {0, 1}, column groupID)
//            (two 16-bit elements per register, the smaller k in the low half)
//   tf32     A (16x8):  a[r] holds (row groupID + 8 (r % 2), k tig + 4 (r / 2))
//            B (8x8):   b[r] holds (k tig + 4 r, column groupID)
//   C, D (16x8, f32):   c[r] holds (row groupID + 8 (r / 2), column 2 tig + r % 2)
// Arithmetic: f16/bf16 and tf32 products are exact in fp32; the runtime sums
// them with C in double and rounds once to fp32. PTX leaves the internal
// accumulation order and rounding unspecified (GPUs are known to truncate
// partial sums), so tests compare with a tolerance, not bit for bit.
// A tf32 operand register is read as its top 19 bits (the low 13 ignored,
// i.e. truncated), which is what sm_80+ tensor cores do with an fp32 bit
// pattern (CUTLASS's round-toward-zero tf32 conversion is a bare bit cast
// that relies on it); kernels round with cvt.rna.tf32.f32 (cvt_rna_tf32
// below) before the mma, so both paths see exact tf32 values and agree.
namespace simt {
enum class MmaShape : int { kM16N8K16F16 = 0, kM16N8K16Bf16 = 1, kM16N8K8Tf32 = 2 };
struct MmaRegisters {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
  float d[4];
};
namespace detail {
void mma_sync(const Site& site, MmaShape shape, MmaRegisters& lane);
}  // namespace detail

// cvt.rna.tf32.f32: fp32 to tf32 (10 mantissa bits, kept in an fp32 bit
// pattern with the low 13 bits zero), rounding to nearest with ties away from
// zero. Adding half a tf32 ulp to the magnitude bits and truncating is exactly
// that (a carry into the exponent is the right result, up to infinity);
// infinities pass unchanged and NaNs stay NaNs.
inline uint32_t cvt_rna_tf32(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7f800000u) == 0x7f800000u) return (x & 0x7fffffffu) > 0x7f800000u ? 0x7fffffffu : x;
  return (x + 0x1000u) & ~0x1fffu;
}
}  // namespace simt

// ---------------------------------------------------- warp-level matrix loads
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}.shared.b16 as a strict warp
// collective: all 32 lanes of a full warp meet at the same call site with the
// same number of matrices (a mismatch or a lane that never arrives aborts, as
// for mma.sync). Lanes 8 j .. 8 j + 7 give the row addresses of matrix j
// (8 rows of 8 16-bit elements, 16 bytes each); lane l receives, from each
// matrix j, the 32-bit word l % 4 of its row l / 4 (two elements, the smaller
// column in the low half): exactly one register of an mma fragment
// (gemm_tensor_core.cuh). With .trans the matrix is transposed on the way:
// lane l receives column l / 4 of rows 2 (l % 4) (low half) and 2 (l % 4) + 1
// (high half), a fragment register of a matrix stored with the mma's k
// along its rows. Addresses of lanes past the last matrix are not
// read, as on a GPU. Every row address read must be 16-byte aligned and in
// shared memory; the runtime checks the second where it can tell: always for
// the dynamic buffer, for static __shared__ variables in sanitizer builds
// (where their sections are known).
// Each lane reads the row it addresses, as one 16-byte load in the kernel's
// own (instrumented) code before it arrives, and the rendezvous hands the
// words out. So the race and memory checkers see the row read by a lane of
// the warp at the call site, and the access counters see one warp request per
// instruction, served in phases of 8 lanes (one matrix each) as the hardware
// serves it; a lane's received words are registers, not memory accesses.
namespace simt {
struct __attribute__((may_alias, aligned(16))) LdmatrixRow {
  uint32_t words[4];
};
namespace detail {
// Checks the calling lane's row address (aborting with the collective's
// message); true if the instruction reads that lane's row.
bool ldmatrix_reads_row(const Site& site, int matrices, bool trans, const void* row);
void ldmatrix_sync(const Site& site, int matrices, bool trans, const LdmatrixRow& row, uint32_t* out);
}  // namespace detail

template <int kMatrices, bool kTrans = false>
inline void ldmatrix(const detail::Site& site, const void* row, uint32_t (&out)[kMatrices]) {
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix loads 1, 2 or 4 matrices");
  LdmatrixRow mine{};
  if (detail::ldmatrix_reads_row(site, kMatrices, kTrans, row)) mine = *static_cast<const LdmatrixRow*>(row);
  detail::ldmatrix_sync(site, kMatrices, kTrans, mine, out);
}
}  // namespace simt

// -------------------------------------------------------------------- atomics
// Blocks run on different OS threads, so these must be real atomics.
// Relaxed ordering, like CUDA's atomic*(). Only the ones kernels or tests use.
#define SIMT_ATOMIC_INT(T)                                                              \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); } \
  inline T atomicMax(T* p, T v) {                                                       \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                       \
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,  \
                                                   __ATOMIC_RELAXED)) {                 \
    }                                                                                   \
    return old;                                                                         \
  }
SIMT_ATOMIC_INT(int)
SIMT_ATOMIC_INT(unsigned int)
SIMT_ATOMIC_INT(unsigned long long)
#undef SIMT_ATOMIC_INT

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

// ------------------------------------------------------------------ loads
template <class T>
inline T __ldg(const T* p) { return *p; }

#endif  // __CUDACC__
