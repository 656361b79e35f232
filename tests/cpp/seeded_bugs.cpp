// Kernels with one bug each, to prove that the SIMT checkers catch them:
//   seeded_bugs CASE      runs one kernel (exit 1 if its launch is rejected)
//   seeded_bugs --list    prints the cases
// CTest runs each case under its checker, where it must be reported with the
// kernel's name and the line marked BUG(case) (a read of garbage, which no
// checker sees, by the case's own check of the result), and under the other
// checkers, where it must not be. The marker comments are read by
// expect_output.cmake.
#include "../../csrc/simt/simt.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

// ------------------------------------------------------------ race checker
// Each thread reads its left neighbour's element without a barrier between
// the writes and the reads.
__global__ void missing_sync(const int* in, int* out) {
  __shared__ int s[64];
  const int t = threadIdx.x;
  s[t] = in[t];
  out[t] = t > 0 ? s[t - 1] : 0;  // BUG(missing_sync)
}

// missing_sync in a template kernel, as every kernel of csrc/cuda is: GCC
// places its shared array by other rules than a plain function's (simt.h).
template <class T>
__global__ void missing_sync_template(const T* in, T* out) {
  __shared__ T s[64];
  const int t = threadIdx.x;
  s[t] = in[t];
  out[t] = t > 0 ? s[t - 1] : T(0);  // BUG(missing_sync_template)
}

// Every thread increments one shared counter: updates get lost on a GPU.
__global__ void lost_update(int* out) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  count += 1;  // BUG(lost_update)
  __syncthreads();
  if (threadIdx.x == 0) *out = count;
}

// Every thread writes the same value to one global element: still a race.
__global__ void write_collision(int* flag) {
  *flag = 1;  // BUG(write_collision)
}

// Thread 0 of every block writes the same element: a race between blocks
// (which the runtime runs one after another, or on different OS threads).
__global__ void block_collision(int* flag) {
  if (threadIdx.x == 0) *flag = static_cast<int>(blockIdx.x);  // BUG(block_collision)
}

// Lanes swap values through shared memory; the reads need a __syncwarp()
// after the writes (lanes of a warp do not run in lockstep since Volta).
__global__ void missing_syncwarp(const float* in, float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = in[t];
  out[t] = s[t ^ 1];  // BUG(missing_syncwarp)
}

// ---------------------------------------------------------- memory checker
// The last thread reads one element past the end of the input.
__global__ void oob_read(const float* in, float* out) {
  const int t = threadIdx.x;
  out[t] = in[t + 1];  // BUG(oob_read)
}

// The last thread writes one element past a static shared array.
__global__ void static_smem_off_by_one(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t + 1] = 1.0f;  // BUG(static_smem_off_by_one)
  __syncthreads();
  out[t] = s[t];
}

// The shared table is filled only when `fill` is set, as if shared memory kept
// it from an earlier block: on a GPU every block's shared memory starts as
// garbage. The case launches one block with `fill`, then one without; both
// run on the launching OS thread, where, without the memory checker's refill,
// the second finds the first one's table in the thread's static shared memory.
template <class T>
__global__ void stale_static_smem(const T* table, T* out, bool fill) {
  __shared__ T s[64];
  const int t = threadIdx.x;
  if (fill) s[t] = table[t];
  __syncthreads();
  out[t] = s[t];  // BUG(stale_static_smem)
}

// The last thread writes one element past the dynamic shared memory.
__global__ void dynamic_smem_off_by_one(float* out) {
  SIMT_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  s[t + 1] = 1.0f;  // BUG(dynamic_smem_off_by_one)
  __syncthreads();
  out[t] = s[t];
}

// Vector loads from addresses with a 4-byte offset.
__global__ void misaligned_float2(const float* in, float* out) {
  const float2 v = reinterpret_cast<const float2*>(in + 1)[threadIdx.x];  // BUG(misaligned_float2)
  out[threadIdx.x] = v.x + v.y;
}

__global__ void misaligned_float4(const float* in, float* out) {
  const float4 v = reinterpret_cast<const float4*>(in + 1)[threadIdx.x];  // BUG(misaligned_float4)
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// ---------------------------------------------------- launch rules (always on)
template <int kThreads>
__global__ void __launch_bounds__(kThreads) bounded(float* out) {
  out[threadIdx.x] = 1.0f;
}

__global__ void big_smem(float* out) {
  SIMT_DYNAMIC_SHARED(float, s);
  s[threadIdx.x] = 1.0f;
  out[threadIdx.x] = s[threadIdx.x];
}

// ------------------------------------------------- warp collectives (always on)
// Half the warp shuffles down, the other half xors: different collectives.
__global__ void mismatched_collective(float* out) {
  const int lane = threadIdx.x % 32;
  float v = static_cast<float>(lane);
  if (lane < 16)
    v += __shfl_down_sync(0xffffffffu, v, 1);
  else
    v += __shfl_xor_sync(0xffffffffu, v, 1);  // BUG(mismatched_collective)
  out[threadIdx.x] = v;
}

// Lanes 16..31 return; the rest still name them in the mask.
__global__ void exited_lane_in_mask(float* out) {
  const int lane = threadIdx.x % 32;
  if (lane >= 16) return;
  out[lane] = __shfl_sync(0xffffffffu, 1.0f, 0);  // BUG(exited_lane_in_mask)
}

// Each half-warp names only itself but reads from the other half.
__global__ void read_outside_mask(float* out) {
  const int lane = threadIdx.x % 32;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[lane] = __shfl_xor_sync(half, static_cast<float>(lane), 16);  // BUG(read_outside_mask)
}

namespace {

int launch_result() {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return 0;
  std::fprintf(stderr, "launch failed: %s\n", cudaGetErrorString(e));
  return 1;
}

std::vector<float> iota(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return v;
}

const std::vector<std::pair<std::string, std::function<int()>>> kCases = {
    {"missing_sync",
     [] {
       std::vector<int> in(64, 1), out(64);
       SIMT_LAUNCH(missing_sync, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"missing_sync_template",
     [] {
       std::vector<int> in(64, 1), out(64);
       SIMT_LAUNCH(missing_sync_template<int>, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"lost_update",
     [] {
       int out = 0;
       SIMT_LAUNCH(lost_update, 1, 256, 0, nullptr, &out);
       return launch_result();
     }},
    {"write_collision",
     [] {
       int flag = 0;
       SIMT_LAUNCH(write_collision, 1, 64, 0, nullptr, &flag);
       return launch_result();
     }},
    {"block_collision",
     [] {
       int flag = 0;
       SIMT_LAUNCH(block_collision, 4, 32, 0, nullptr, &flag);
       return launch_result();
     }},
    {"missing_syncwarp",
     [] {
       const std::vector<float> in = iota(64);
       std::vector<float> out(64);
       SIMT_LAUNCH(missing_syncwarp, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"oob_read",
     [] {
       // `out` is larger than `in`, so that the allocator does not put it
       // right after `in`: the race checker would rightly report the stray
       // read racing with the write to out[0].
       const std::vector<float> in = iota(64);
       std::vector<float> out(100);
       SIMT_LAUNCH(oob_read, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"static_smem_off_by_one",
     [] {
       std::vector<float> out(64);
       SIMT_LAUNCH(static_smem_off_by_one, 1, 64, 0, nullptr, out.data());
       return launch_result();
     }},
    {"stale_static_smem",
     [] {
       const std::vector<float> table = iota(64);
       std::vector<float> out(64);
       SIMT_LAUNCH(stale_static_smem<float>, 1, 64, 0, nullptr, table.data(), out.data(), true);
       SIMT_LAUNCH(stale_static_smem<float>, 1, 64, 0, nullptr, table.data(), out.data(), false);
       if (launch_result()) return 1;
       for (int t = 0; t < 64; ++t)
         if (!(out[t] == table[t])) {
           std::fprintf(stderr,
                        "stale_static_smem<float>: thread %d of the second block read %g from "
                        "static shared memory, expected %g\n",
                        t, out[t], table[t]);
           return 1;
         }
       return 0;
     }},
    {"dynamic_smem_off_by_one",
     [] {
       std::vector<float> out(64);
       SIMT_LAUNCH(dynamic_smem_off_by_one, 1, 64, 64 * sizeof(float), nullptr, out.data());
       return launch_result();
     }},
    {"misaligned_float2",
     [] {
       const std::vector<float> in = iota(2 * 64 + 2);
       std::vector<float> out(64);
       SIMT_LAUNCH(misaligned_float2, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"misaligned_float4",
     [] {
       const std::vector<float> in = iota(4 * 64 + 4);
       std::vector<float> out(64);
       SIMT_LAUNCH(misaligned_float4, 1, 64, 0, nullptr, in.data(), out.data());
       return launch_result();
     }},
    {"over_launch_bounds",
     [] {
       std::vector<float> out(128);
       SIMT_LAUNCH(bounded<64>, 1, 128, 0, nullptr, out.data());  // BUG(over_launch_bounds)
       return launch_result();
     }},
    {"smem_without_opt_in",
     [] {
       std::vector<float> out(64);
       SIMT_LAUNCH(big_smem, 1, 64, 64 * 1024, nullptr, out.data());  // BUG(smem_without_opt_in)
       return launch_result();
     }},
    {"mismatched_collective",
     [] {
       std::vector<float> out(32);
       SIMT_LAUNCH(mismatched_collective, 1, 32, 0, nullptr, out.data());
       return launch_result();
     }},
    {"exited_lane_in_mask",
     [] {
       std::vector<float> out(32);
       SIMT_LAUNCH(exited_lane_in_mask, 1, 32, 0, nullptr, out.data());
       return launch_result();
     }},
    {"read_outside_mask",
     [] {
       std::vector<float> out(32);
       SIMT_LAUNCH(read_outside_mask, 1, 32, 0, nullptr, out.data());
       return launch_result();
     }},
};

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "";
  for (const auto& c : kCases) {
    if (which == "--list") std::printf("%s\n", c.first.c_str());
    else if (which == c.first) return c.second();
  }
  if (which == "--list") return 0;
  std::fprintf(stderr, "usage: seeded_bugs CASE|--list\n");
  return 2;
}
