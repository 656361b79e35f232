// Unit tests for the CPU SIMT runtime (csrc/simt). Usage:
//   test_simt            run every case
//   test_simt NAME       run one case
//   test_simt --list     print case names
#include "../../csrc/simt/simt.h"
#include "named_cases.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {

// Small integers keep every product and partial sum exact in float, so the
// tiled and naive matmuls must agree bit for bit whatever the summation order.
std::vector<float> small_ints(size_t n, unsigned seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = static_cast<float>(static_cast<int>((seed >> 16) % 9) - 4);
  }
  return v;
}

std::vector<float> matmul_ref(const std::vector<float>& a, const std::vector<float>& b, int M,
                              int N, int K) {
  std::vector<float> c(size_t(M) * N, 0.0f);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = 0.0f;
      for (int k = 0; k < K; ++k) s += a[size_t(i) * K + k] * b[size_t(k) * N + j];
      c[size_t(i) * N + j] = s;
    }
  return c;
}

constexpr int kTile = 16;

// C[M,N] = A[M,K] * B[K,N], 16x16 tiles in static shared memory.
__global__ void sgemm_static(const float* __restrict__ a, const float* __restrict__ b,
                             float* __restrict__ c, int M, int N, int K) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    as[ty][tx] = (row < M && k0 + tx < K) ? a[row * K + k0 + tx] : 0.0f;
    bs[ty][tx] = (k0 + ty < K && col < N) ? b[(k0 + ty) * N + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += as[ty][k] * bs[k][tx];
    __syncthreads();
  }
  if (row < M && col < N) c[row * N + col] = acc;
}

// Same, tiles in dynamic shared memory.
__global__ void sgemm_dynamic(const float* a, const float* b, float* c, int M, int N, int K) {
  SIMT_DYNAMIC_SHARED(float, smem);
  float* as = smem;
  float* bs = smem + kTile * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    as[ty * kTile + tx] = (row < M && k0 + tx < K) ? a[row * K + k0 + tx] : 0.0f;
    bs[ty * kTile + tx] = (k0 + ty < K && col < N) ? b[(k0 + ty) * N + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += as[ty * kTile + k] * bs[k * kTile + tx];
    __syncthreads();
  }
  if (row < M && col < N) c[row * N + col] = acc;
}

double run_matmul(int M, int N, int K, bool dynamic) {
  const auto a = small_ints(size_t(M) * K, 1), b = small_ints(size_t(K) * N, 2);
  std::vector<float> c(size_t(M) * N, -1.0f);
  const dim3 grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile);
  const dim3 block(kTile, kTile);
  const auto t0 = std::chrono::steady_clock::now();
  if (dynamic)
    SIMT_LAUNCH(sgemm_dynamic, grid, block, 2 * kTile * kTile * sizeof(float), nullptr,
                a.data(), b.data(), c.data(), M, N, K);
  else
    SIMT_LAUNCH(sgemm_static, grid, block, 0, nullptr, a.data(), b.data(), c.data(), M, N, K);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(c == matmul_ref(a, b, M, N, K));
  return secs;
}

void test_matmul_odd() {
  run_matmul(67, 45, 33, false);
  run_matmul(67, 45, 33, true);
  run_matmul(1, 1, 1, false);
}

void test_matmul_256() {
  run_matmul(256, 256, 256, true);
  const double secs = run_matmul(256, 256, 256, false);
  std::printf("256x256x256 tiled sgemm: %.3f s (%d workers)\n", secs, simt::num_workers());
  CHECK(secs < 1.0);
}

void test_matmul_orders() {
  for (auto o : {simt::Order::Reversed, simt::Order::Shuffled}) {
    simt::set_order(o, 7);
    run_matmul(67, 45, 33, false);
    run_matmul(40, 50, 60, true);
  }
  simt::set_order(simt::Order::Forward);
}

// Every (block, thread) pair records its global id exactly once.
__global__ void index_kernel(int* hits, int* ids) {
  const unsigned bx = blockDim.x, by = blockDim.y, bz = blockDim.z;
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned tid = threadIdx.x + bx * (threadIdx.y + by * threadIdx.z);
  const unsigned gid = block * (bx * by * bz) + tid;
  atomicAdd(&hits[gid], 1);
  ids[gid] = static_cast<int>(gid);
}

void test_index_3d() {
  const dim3 grid(3, 4, 5), block(4, 3, 2);
  const int n = 3 * 4 * 5 * 4 * 3 * 2;
  std::vector<int> hits(n, 0), ids(n, -1);
  SIMT_LAUNCH(index_kernel, grid, block, 0, nullptr, hits.data(), ids.data());
  CHECK(cudaGetLastError() == cudaSuccess);
  for (int i = 0; i < n; ++i) {
    CHECK(hits[i] == 1);
    CHECK(ids[i] == i);
  }
}

// Tree reduction over a whole block in shared memory.
template <int kThreads>
__global__ void block_sum(const int* in, int* out) {
  __shared__ int s[kThreads];
  const int t = threadIdx.x + threadIdx.y * blockDim.x;
  s[t] = in[blockIdx.x * kThreads + t];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

void test_block_reduce() {
  const int blocks = 9;
  std::vector<int> in(blocks * 256), out(blocks, 0);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 97) - 40;
  SIMT_LAUNCH(block_sum<256>, blocks, 256, 0, nullptr, in.data(), out.data());
  for (int b = 0; b < blocks; ++b) {
    int want = 0;
    for (int i = 0; i < 256; ++i) want += in[b * 256 + i];
    CHECK(out[b] == want);
  }
}

void test_block_1024() {
  std::vector<int> in(2 * 1024), out(2, 0);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i);
  auto kernel = block_sum<1024>;  // launch through a function pointer variable
  SIMT_LAUNCH(kernel, 2, dim3(32, 32), 0, nullptr, in.data(), out.data());
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out[0] == 1023 * 1024 / 2);
  CHECK(out[1] == (2047 * 2048 - 1023 * 1024) / 2);
}

// Warp collectives over two full warps.
__global__ void warp_kernel(const float* in, float* down, float* xr, float* bcast, int* up_scan,
                            float* seg8, unsigned* ballot, int* any, int* all, double* dsum) {
  const int t = threadIdx.x, lane = t % 32;
  const float v = in[t];
  float s = v;
  for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
  down[t] = s;
  float x = v;
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  xr[t] = x;
  bcast[t] = __shfl_sync(0xffffffffu, v, 3);
  int scan = lane + 1;
  for (int o = 1; o < 32; o *= 2) {
    const int n = __shfl_up_sync(0xffffffffu, scan, o);
    if (lane >= o) scan += n;
  }
  up_scan[t] = scan;
  seg8[t] = __shfl_sync(0xffffffffu, v, 0, 8);  // first lane of each group of 8
  ballot[t] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  any[t] = __any_sync(0xffffffffu, lane == 5) * 2 + __any_sync(0xffffffffu, t == 40);
  all[t] = __all_sync(0xffffffffu, lane < 32) * 2 + __all_sync(0xffffffffu, t < 40);
  double d = static_cast<double>(v);
  for (int o = 16; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
  __syncwarp();
  dsum[t] = d;
}

// A block of 48 threads: the second warp has 16 lanes. A mask may name lanes
// the block does not have (they take no part, as on a GPU), but no lane may
// read from one: the partial warp reduces within width 16.
__global__ void partial_warp_kernel(const float* in, float* half_sums, unsigned* ballot, int* all) {
  const int t = threadIdx.x, lane = t % 32;
  float x = in[t];
  for (int o = 8; o > 0; o /= 2) x += __shfl_xor_sync(t < 32 ? 0xffffffffu : 0xffffu, x, o, 16);
  half_sums[t] = x;
  ballot[t] = __ballot_sync(0xffffffffu, lane % 2 == 0);
  all[t] = __all_sync(0xffffffffu, lane < 16);
}

void test_warp() {
  const int n = 64;
  std::vector<float> in(n), down(n), xr(n), bcast(n), seg8(n);
  std::vector<int> up_scan(n), any(n), all(n);
  std::vector<unsigned> ballot(n);
  std::vector<double> dsum(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i * 3 % 11);
  for (auto o : {simt::Order::Forward, simt::Order::Reversed, simt::Order::Shuffled}) {
    simt::set_order(o, 3);
    SIMT_LAUNCH(warp_kernel, 1, n, 0, nullptr, in.data(), down.data(), xr.data(), bcast.data(),
                up_scan.data(), seg8.data(), ballot.data(), any.data(), all.data(),
                dsum.data());
    CHECK(cudaGetLastError() == cudaSuccess);
    for (int w = 0; w < 2; ++w) {
      const int base = w * 32;
      float total = 0.0f;
      unsigned want_ballot = 0;
      for (int l = 0; l < 32; ++l) {
        total += in[base + l];
        if (l % 3 == 0) want_ballot |= 1u << l;
      }
      CHECK(down[base] == total);  // lane 0 of a down-reduction holds the sum
      for (int l = 0; l < 32; ++l) {
        const int t = base + l;
        CHECK(xr[t] == total);
        CHECK(dsum[t] == static_cast<double>(total));
        CHECK(bcast[t] == in[base + 3]);
        CHECK(up_scan[t] == (l + 1) * (l + 2) / 2);
        CHECK(seg8[t] == in[base + (l & ~7)]);
        CHECK(ballot[t] == want_ballot);
        CHECK(any[t] == 2 + w);
        CHECK(all[t] == (w == 0 ? 3 : 2));
      }
    }

    const int m = 48;
    std::vector<float> half(m);
    std::vector<unsigned> pballot(m);
    std::vector<int> pall(m);
    SIMT_LAUNCH(partial_warp_kernel, 1, m, 0, nullptr, in.data(), half.data(), pballot.data(),
                pall.data());
    CHECK(cudaGetLastError() == cudaSuccess);
    for (int t = 0; t < m; ++t) {
      const int first = t & ~15;
      float want = 0.0f;
      for (int l = first; l < first + 16; ++l) want += in[l];
      CHECK(half[t] == want);
      CHECK(pballot[t] == (t < 32 ? 0x55555555u : 0x5555u));
      CHECK(pall[t] == (t < 32 ? 0 : 1));  // the partial warp's lanes are all < 16
    }
  }
  simt::set_order(simt::Order::Forward);
}

__global__ void atomic_kernel(float* f, double* d, int* i, unsigned long long* u, int* mx) {
  const int gid = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(f, 0.5f);
  atomicAdd(d, 0.25);
  atomicAdd(i, 1);
  atomicAdd(u, 2ull);
  atomicMax(mx, gid);
}

void test_atomics() {
  simt::set_num_workers(4);  // more OS threads than cores: exercise contention
  float f = 0.0f;
  double d = 0.0;
  int i = 0, mx = -1;
  unsigned long long u = 0;
  const int blocks = 200, threads = 128;
  SIMT_LAUNCH(atomic_kernel, blocks, threads, 0, nullptr, &f, &d, &i, &u, &mx);
  const int n = blocks * threads;
  CHECK(i == n);
  CHECK(u == 2ull * n);
  CHECK(mx == n - 1);
  CHECK(f == 0.5f * n);  // exact: all partial sums are small multiples of 0.5
  CHECK(d == 0.25 * n);
  simt::set_num_workers(0);
}

// Missing __syncthreads() between the shared write and the neighbour read:
// only correct if lower-numbered threads happen to run first.
__global__ void missing_sync(const int* in, int* out) {
  __shared__ int s[256];
  const int t = threadIdx.x;
  s[t] = in[t];
  // __syncthreads() belongs here.
  out[t] = t > 0 ? s[t - 1] : 0;
}

bool run_missing_sync(simt::Order o, int round) {
  simt::set_order(o, 12345);
  std::vector<int> in(256), out(256, 0);
  for (int t = 0; t < 256; ++t) in[t] = round * 1000 + t;  // fresh values each run
  SIMT_LAUNCH(missing_sync, 1, 256, 0, nullptr, in.data(), out.data());
  for (int t = 1; t < 256; ++t)
    if (out[t] != in[t - 1]) return false;
  return true;
}

void test_missing_sync() {
  CHECK(run_missing_sync(simt::Order::Forward, 1));
  CHECK(!run_missing_sync(simt::Order::Reversed, 2));
  CHECK(!run_missing_sync(simt::Order::Shuffled, 3));
  CHECK(run_missing_sync(simt::Order::Forward, 4));
  simt::set_order(simt::Order::Forward);
}

__global__ void noop_kernel() {}

template <int N>
__global__ void __launch_bounds__(N) bounded_kernel() {}

void test_launch_errors() {
  CHECK(cudaGetLastError() == cudaSuccess);
  const dim3 bad_blocks[] = {dim3(0), dim3(1025), dim3(64, 32), dim3(1, 1, 65), dim3(2, 2, 0)};
  for (const dim3& b : bad_blocks) {
    SIMT_LAUNCH(noop_kernel, 1, b, 0, nullptr);
    CHECK(cudaPeekAtLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess);  // cleared by the previous call
  }
  const dim3 bad_grids[] = {dim3(0), dim3(1, 65536), dim3(1, 1, 65536)};
  for (const dim3& g : bad_grids) {
    SIMT_LAUNCH(noop_kernel, g, 32, 0, nullptr);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  }
  // Dynamic shared memory: 48 KiB by default, up to 227 KiB after the
  // kernel opts in, as on an H100.
  SIMT_LAUNCH(noop_kernel, 1, 32, 48 * 1024, nullptr);
  CHECK(cudaGetLastError() == cudaSuccess);
  SIMT_LAUNCH(noop_kernel, 1, 32, 48 * 1024 + 1, nullptr);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             228 * 1024) == cudaErrorInvalidValue);
  CHECK(cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             227 * 1024) == cudaSuccess);
  SIMT_LAUNCH(noop_kernel, dim3(2, 2, 3), dim3(16, 8, 8), 227 * 1024, nullptr);
  CHECK(cudaGetLastError() == cudaSuccess);
  SIMT_LAUNCH(noop_kernel, 1, 32, 228 * 1024, nullptr);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  // Threads per block: at most the kernel's __launch_bounds__.
  SIMT_LAUNCH(bounded_kernel<64>, 1, 64, 0, nullptr);
  CHECK(cudaGetLastError() == cudaSuccess);
  SIMT_LAUNCH(bounded_kernel<64>, 1, dim3(8, 9), 0, nullptr);
  CHECK(cudaGetLastError() == cudaErrorLaunchOutOfResources);
  SIMT_LAUNCH(bounded_kernel<1000>, 1, 1000, 0, nullptr);
  CHECK(cudaGetLastError() == cudaSuccess);
  SIMT_LAUNCH(bounded_kernel<1000>, 1, 1001, 0, nullptr);
  CHECK(cudaGetLastError() == cudaErrorLaunchOutOfResources);
  CHECK(std::string(cudaGetErrorString(cudaErrorInvalidConfiguration)) ==
        "invalid configuration argument");
}

// Threads that return early do not take part in later barriers.
__global__ void early_return(const int* in, int* out, int n) {
  __shared__ int s[128];
  const int t = threadIdx.x;
  if (t >= n) return;
  s[t] = in[t];
  __syncthreads();
  out[t] = s[n - 1 - t];
  __syncthreads();
  const int positive = __syncthreads_count(s[t] > 0);
  if (t == 0) out[n] = positive;
}

void test_early_return() {
  const int n = 77;
  std::vector<int> in(128), out(128, -1);
  for (int i = 0; i < 128; ++i) in[i] = i * 7 + 1;
  for (auto o : {simt::Order::Forward, simt::Order::Reversed, simt::Order::Shuffled}) {
    simt::set_order(o, 5);
    std::fill(out.begin(), out.end(), -1);
    SIMT_LAUNCH(early_return, 1, 128, 0, nullptr, in.data(), out.data(), n);
    for (int t = 0; t < n; ++t) CHECK(out[t] == in[n - 1 - t]);
    CHECK(out[n] == n);
    CHECK(out[n + 1] == -1);
  }
  simt::set_order(simt::Order::Forward);
}

// Results must not depend on the worker count or (for a correct kernel) the order.
void test_workers() {
  for (int w : {1, 2, 3}) {
    simt::set_num_workers(w);
    CHECK(simt::num_workers() == w);
    run_matmul(50, 70, 40, false);
  }
  simt::set_num_workers(0);
}

// The device attribute launchers size their grids from: 132 (an H100) unless
// FASTCONV_SIMT_SM_COUNT or set_multiprocessor_count says otherwise.
void test_multiprocessors() {
  const char* env = std::getenv("FASTCONV_SIMT_SM_COUNT");
  const int expected_default = env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 132;
  int device = -1, count = 0;
  CHECK(cudaGetDevice(&device) == cudaSuccess && device == 0);
  CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) == cudaSuccess);
  CHECK(count == expected_default);
  simt::set_multiprocessor_count(7);
  CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess && count == 7);
  CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, 1) == cudaErrorInvalidValue);
  simt::set_multiprocessor_count(0);
  CHECK(simt::multiprocessor_count() == expected_default);
}

// The compute capability it reports: 9.0 (an H100) unless FASTCONV_SIMT_ARCH or
// set_compute_capability says otherwise, as CUDA's major and minor attributes.
void test_compute_capability() {
  const char* env = std::getenv("FASTCONV_SIMT_ARCH");
  const int expected_default = env != nullptr && std::atoi(env) >= 10 ? std::atoi(env) : 90;
  int major = 0, minor = -1;
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess);
  CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) == cudaSuccess);
  CHECK(major * 10 + minor == expected_default);
  CHECK(!simt::set_compute_capability(9));  // not major * 10 + minor: refused, nothing changes
  CHECK(simt::compute_capability() == expected_default);
  CHECK(simt::set_compute_capability(86));
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess && major == 8);
  CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) == cudaSuccess && minor == 6);
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 1) == cudaErrorInvalidValue);
  CHECK(simt::set_compute_capability(0));
  CHECK(simt::compute_capability() == expected_default);
}

const NamedCases kTests = {

    {"matmul_odd", test_matmul_odd},
    {"matmul_256", test_matmul_256},
    {"matmul_orders", test_matmul_orders},
    {"index_3d", test_index_3d},
    {"block_reduce", test_block_reduce},
    {"block_1024", test_block_1024},
    {"warp", test_warp},
    {"atomics", test_atomics},
    {"missing_sync", test_missing_sync},
    {"launch_errors", test_launch_errors},
    {"early_return", test_early_return},
    {"workers", test_workers},
    {"multiprocessors", test_multiprocessors},
    {"compute_capability", test_compute_capability},
};

}  // namespace

int main(int argc, char** argv) { return run_named_cases(argc, argv, kTests); }
