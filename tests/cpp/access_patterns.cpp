// Kernels with known memory-access patterns, to prove the access counters
// (csrc/simt/access/access.h) exact: each case runs one kernel with two warps and
// checks its requests, sectors per request (global) and bank-conflict ways
// (shared). Built as an access build (CMake: access_patterns); run it in
// every thread order, the counts must not change.
//   access_patterns          runs every case, exit 1 on any mismatch
#include "../../csrc/simt/access/access.h"
#include "../../csrc/simt/simt.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {
constexpr int kThreads = 64;  // two warps: requests are per warp
// Global buffers on 128-byte boundaries, so a warp's 128 bytes fill 4 sectors.
alignas(128) float g_in[kThreads * 32 * 4];
alignas(128) float g_out[kThreads * 4];
alignas(128) double g_in_double[kThreads * 2];
alignas(128) float4 g_in_float4[kThreads], g_out_float4[kThreads];
}  // namespace

// ------------------------------------------------------------ global memory
// Consecutive lanes, consecutive floats: 4 sectors per request.
constexpr int kCoalescedLoadLine = __LINE__ + 3;
__global__ void coalesced_load(const float* in, float* out) {
  const int t = threadIdx.x;
  const float v = in[t];
  out[t] = v;
}

// Every lane in its own 128-byte line: 32 sectors per request.
__global__ void strided_load(const float* in, float* out) {
  const int t = threadIdx.x;
  const float v = in[t * 32];
  out[t] = v;
}

// 8-byte elements: 256 bytes per warp, 8 sectors.
__global__ void coalesced_double_load(const double* in, float* out) {
  const int t = threadIdx.x;
  const double v = in[t];
  out[t] = static_cast<float>(v);
}

// Lanes run the load 1..4 times: the n-th executions of each lane pair up.
// Iteration i reaches the lanes with t % 4 >= i (32, 24, 16, 8 of a warp),
// spread over the same 128-byte row: 4 sectors each. Paired by lane alone, a
// warp's 80 loads would make one request of 16 sectors.
__global__ void loop_load(const float* in, float* out) {
  const int t = threadIdx.x;
  float sum = 0.0f;
  for (int i = 0; i <= t % 4; ++i) {
    const float v = in[i * kThreads + t];
    sum += v;
  }
  out[t] = sum;
}

// ------------------------------------------------------------ shared memory
// Stride in words picks the conflict: 1 -> none, 2 -> 2-way, 32 -> 32-way.
template <int kStride>
__global__ void shared_stride(float* out) {
  __shared__ float s[kThreads * 32];
  const int t = threadIdx.x;
  s[t * kStride] = static_cast<float>(t);
  __syncthreads();
  out[t] = s[t * kStride];
}

// Every lane reads the same word: a broadcast, no conflict.
__global__ void shared_broadcast(float* out) {
  __shared__ float s[32];
  const int t = threadIdx.x;
  if (t == 0) s[0] = 1.0f;
  __syncthreads();
  out[t] = s[0];
}

// Dynamic shared memory, 2 words apart: 2-way.
__global__ void dynamic_shared_stride2(float* out) {
  SIMT_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  s[2 * t] = static_cast<float>(t);
  __syncthreads();
  out[t] = s[2 * t];
}

// 8-byte words per half-warp: consecutive doubles are conflict-free, every
// other double is 2-way (16 lanes over 64 words).
template <int kStride>
__global__ void shared_double_stride(float* out) {
  __shared__ double s[kThreads * 2];
  const int t = threadIdx.x;
  s[t * kStride] = t;
  __syncthreads();
  out[t] = static_cast<float>(s[t * kStride]);
}

// 16-byte words per quarter-warp: consecutive float4 are conflict-free.
// (Whole-struct copies: the host compiler may split a vector whose fields are
// used one by one into 4-byte accesses, which would count as 4-way.)
__global__ void shared_float4(const float4* in, float4* out) {
  __shared__ float4 s[kThreads];
  const int t = threadIdx.x;
  s[t] = in[t];
  __syncthreads();
  out[t] = s[t];
}

namespace {

using simt::access::LineCounters;
using simt::access::Space;

int g_failures = 0;

// The one line of `kernel` with accesses of this space and kind.
const LineCounters* find_line(const std::vector<LineCounters>& lines, const std::string& kernel,
                              Space space, bool store) {
  const LineCounters* found = nullptr;
  for (const LineCounters& l : lines) {
    if (l.kernel != kernel || l.space != space || l.store != store) continue;
    if (found) {
      std::fprintf(stderr, "FAIL %s: more than one %s line\n", kernel.c_str(),
                   store ? "store" : "load");
      ++g_failures;
      return nullptr;
    }
    found = &l;
  }
  return found;
}

// requests, then sectors (global) or summed ways and the worst (shared).
void expect(const std::vector<LineCounters>& lines, const std::string& kernel, Space space,
            bool store, uint64_t requests, uint64_t per_request_total, uint64_t max_ways = 0) {
  const char* what = store ? "store" : "load";
  const LineCounters* l = find_line(lines, kernel, space, store);
  if (!l) {
    std::fprintf(stderr, "FAIL %s: no %s %s line counted; counted:", kernel.c_str(),
                 space == Space::Global ? "global" : "shared", what);
    for (const LineCounters& other : lines)
      std::fprintf(stderr, " [%s %s:%d]", other.kernel.c_str(), other.file.c_str(), other.line);
    std::fprintf(stderr, "\n");
    ++g_failures;
    return;
  }
  const uint64_t total = space == Space::Global ? l->sectors : l->ways;
  const bool ok = l->requests == requests && total == per_request_total &&
                  (space == Space::Global || l->max_ways == max_ways) &&
                  l->file.find("access_patterns.cpp") != std::string::npos;
  std::printf("%s %-28s %s %-5s at %s:%d: %llu requests, %llu %s (worst %llu)\n", ok ? "ok  " : "FAIL",
              kernel.c_str(), space == Space::Global ? "global" : "shared", what, l->file.c_str(),
              l->line, static_cast<unsigned long long>(l->requests),
              static_cast<unsigned long long>(total), space == Space::Global ? "sectors" : "ways",
              static_cast<unsigned long long>(l->max_ways));
  if (!ok) ++g_failures;
}

std::vector<LineCounters> run(const std::function<void()>& launch) {
  simt::access::reset();
  launch();
  if (cudaGetLastError() != cudaSuccess) {
    std::fprintf(stderr, "FAIL: launch rejected\n");
    ++g_failures;
  }
  return simt::access::lines();
}

}  // namespace

int main() {
  constexpr Space G = Space::Global, S = Space::Shared;
  constexpr bool kLoad = false, kStore = true;
  // Two warps: every count below is per kernel, two requests per access site.
  auto lines = run([] { SIMT_LAUNCH(coalesced_load, 1, kThreads, 0, nullptr, g_in, g_out); });
  expect(lines, "coalesced_load", G, kLoad, 2, 8);
  expect(lines, "coalesced_load", G, kStore, 2, 8);
  if (const LineCounters* l = find_line(lines, "coalesced_load", G, kLoad); l && l->line != kCoalescedLoadLine) {
    std::fprintf(stderr, "FAIL coalesced_load: load at line %d, want %d\n", l->line, kCoalescedLoadLine);
    ++g_failures;
  }

  lines = run([] { SIMT_LAUNCH(strided_load, 1, kThreads, 0, nullptr, g_in, g_out); });
  expect(lines, "strided_load", G, kLoad, 2, 64);
  expect(lines, "strided_load", G, kStore, 2, 8);

  lines = run([] { SIMT_LAUNCH(coalesced_double_load, 1, kThreads, 0, nullptr, g_in_double, g_out); });
  expect(lines, "coalesced_double_load", G, kLoad, 2, 16);

  // Per warp 4 requests (iterations) of 4 sectors.
  lines = run([] { SIMT_LAUNCH(loop_load, 1, kThreads, 0, nullptr, g_in, g_out); });
  expect(lines, "loop_load", G, kLoad, 8, 32);

  lines = run([] { SIMT_LAUNCH(shared_stride<1>, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_stride<1>", S, kStore, 2, 2, 1);
  lines = run([] { SIMT_LAUNCH(shared_stride<2>, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_stride<2>", S, kStore, 2, 4, 2);
  expect(lines, "shared_stride<2>", S, kLoad, 2, 4, 2);
  lines = run([] { SIMT_LAUNCH(shared_stride<32>, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_stride<32>", S, kStore, 2, 64, 32);
  expect(lines, "shared_stride<32>", S, kLoad, 2, 64, 32);

  // The store is one lane's (one request of warp 0); the read is a broadcast.
  lines = run([] { SIMT_LAUNCH(shared_broadcast, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_broadcast", S, kStore, 1, 1, 1);
  expect(lines, "shared_broadcast", S, kLoad, 2, 2, 1);

  lines = run([] {
    SIMT_LAUNCH(dynamic_shared_stride2, 1, kThreads, 2 * kThreads * sizeof(float), nullptr, g_out);
  });
  expect(lines, "dynamic_shared_stride2", S, kStore, 2, 4, 2);
  expect(lines, "dynamic_shared_stride2", S, kLoad, 2, 4, 2);

  lines = run([] { SIMT_LAUNCH(shared_double_stride<1>, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_double_stride<1>", S, kLoad, 2, 2, 1);
  lines = run([] { SIMT_LAUNCH(shared_double_stride<2>, 1, kThreads, 0, nullptr, g_out); });
  expect(lines, "shared_double_stride<2>", S, kLoad, 2, 4, 2);

  lines = run([] { SIMT_LAUNCH(shared_float4, 1, kThreads, 0, nullptr, g_in_float4, g_out_float4); });
  expect(lines, "shared_float4", S, kStore, 2, 2, 1);
  expect(lines, "shared_float4", S, kLoad, 2, 2, 1);
  expect(lines, "shared_float4", G, kLoad, 2, 32);

  std::printf("%d failures\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
