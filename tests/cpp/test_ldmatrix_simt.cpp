// The SIMT runtime's ldmatrix (through csrc/cuda/mma.cuh's wrappers, and the
// runtime's own template for .x1) on known matrices: every lane's every
// register checked against PTX's table, written out here independently of
// the runtime. Usage:
//   test_ldmatrix_simt NAME     one case (--list prints them)
// The cases named abort_* must abort with the runtime's collective message
// and race_* must be reported by the race checker (CMakeLists.txt checks the
// text); neither runs by default.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../../csrc/cuda/mma.cuh"
#include "named_cases.h"

namespace fs = fastconv::simt;

namespace {

// Two warps, each with four 8 x 8 matrices of 16-bit elements, in one tile of
// rows kPitch elements apart (48 bytes: rows stay 16-byte aligned). Matrix j
// of warp w starts at a permuted block of 8 rows, odd matrices 8 elements
// (16 bytes) into the row, so that neither the order nor the column of the
// matrices can be guessed by the runtime.
constexpr int kPitch = 24, kWarps = 2, kRows = kWarps * 4 * 8, kTile = kRows * kPitch;
constexpr uint16_t kUnused = 0xdead;  // the elements no matrix holds

int matrix_row(int w, int j) { return (w * 4 + (j * 3) % 4) * 8; }
int matrix_col(int j) { return 8 * (j % 2); }
uint16_t element(int w, int j, int r, int c) { return static_cast<uint16_t>(1 + ((w * 4 + j) * 8 + r) * 8 + c); }

std::vector<uint16_t> tile_image() {
  std::vector<uint16_t> image(kTile, kUnused);
  for (int w = 0; w < kWarps; ++w)
    for (int j = 0; j < 4; ++j)
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) image[(matrix_row(w, j) + r) * kPitch + matrix_col(j) + c] = element(w, j, r, c);
  return image;
}

// Lane 8 j + r gives row r of matrix j; lanes past the last matrix give no
// address at all (null), which the instruction must not read.
template <int kMatrices, bool kTrans>
__device__ void load(const uint16_t* tile, uint32_t* out) {
  const int lane = static_cast<int>(threadIdx.x) % 32, w = static_cast<int>(threadIdx.x) / 32;
  const int j = lane / 8, r = lane % 8;
  const void* row = j < kMatrices ? &tile[(matrix_row(w, j) + r) * kPitch + matrix_col(j)] : nullptr;
  uint32_t regs[kMatrices];
  if constexpr (kTrans) {
    static_assert(kMatrices == 4, "the kernels' transposed load is .x4");
    fs::ldmatrix_x4_trans(regs, row);
  } else if constexpr (kMatrices == 4) {
    fs::ldmatrix_x4(regs, row);
  } else if constexpr (kMatrices == 2) {
    fs::ldmatrix_x2(regs, row);
  } else {
    ::simt::ldmatrix(SIMT_SITE_("ldmatrix.sync.aligned.m8n8.x1.shared.b16"), row, regs);
  }
  for (int i = 0; i < kMatrices; ++i) out[threadIdx.x * 4 + i] = regs[i];
}

template <int kMatrices, bool kTrans>
__global__ void load_static(const uint16_t* image, uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[kTile];
  for (int i = static_cast<int>(threadIdx.x); i < kTile; i += static_cast<int>(blockDim.x)) tile[i] = image[i];
  __syncthreads();
  load<kMatrices, kTrans>(tile, out);
}

template <int kMatrices, bool kTrans>
__global__ void load_dynamic(const uint16_t* image, uint32_t* out) {
  SIMT_DYNAMIC_SHARED(uint16_t, tile);
  for (int i = static_cast<int>(threadIdx.x); i < kTile; i += static_cast<int>(blockDim.x)) tile[i] = image[i];
  __syncthreads();
  load<kMatrices, kTrans>(tile, out);
}

// PTX: lane l's register j holds row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1
// of matrix j, the smaller column in the low half; transposed, column l / 4 of
// rows 2 (l % 4) and 2 (l % 4) + 1, the smaller row in the low half.
template <int kMatrices, bool kTrans = false>
void check_loads(bool dynamic) {
  const std::vector<uint16_t> image = tile_image();
  std::vector<uint32_t> out(kWarps * 32 * 4, 0);
  const uint16_t* in = image.data();
  uint32_t* o = out.data();
  if (dynamic) {
    SIMT_LAUNCH((load_dynamic<kMatrices, kTrans>), 1, 32 * kWarps, kTile * sizeof(uint16_t), nullptr, in, o);
  } else {
    SIMT_LAUNCH((load_static<kMatrices, kTrans>), 1, 32 * kWarps, 0, nullptr, in, o);
  }
  CHECK(cudaGetLastError() == cudaSuccess);
  int wrong = 0;
  for (int w = 0; w < kWarps; ++w)
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j) {
        uint32_t want = 0;
        if (j < kMatrices && kTrans) {
          const int r = 2 * (l % 4), c = l / 4;
          want = element(w, j, r, c) | uint32_t(element(w, j, r + 1, c)) << 16;
        } else if (j < kMatrices) {
          const int r = l / 4, c = 2 * (l % 4);
          want = element(w, j, r, c) | uint32_t(element(w, j, r, c + 1)) << 16;
        }
        const uint32_t got = out[(w * 32 + l) * 4 + j];
        if (got != want && wrong++ < 4)
          std::fprintf(stderr, "x%d%s %s: warp %d lane %d register %d = 0x%08x, want 0x%08x\n", kMatrices,
                       kTrans ? ".trans" : "", dynamic ? "dynamic" : "static", w, l, j, got, want);
      }
  CHECK(wrong == 0);
}

void test_x4() { check_loads<4>(false), check_loads<4>(true); }
void test_x2() { check_loads<2>(false), check_loads<2>(true); }
void test_x1() { check_loads<1>(false), check_loads<1>(true); }
void test_x4_trans() { check_loads<4, true>(false), check_loads<4, true>(true); }

// ---------------------------------------------------------------- aborts
__global__ void misaligned(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[32 * 16];
  const int lane = static_cast<int>(threadIdx.x);
  uint32_t regs[4];
  fs::ldmatrix_x4(regs, &tile[lane * 16 + (lane == 3 ? 4 : 0)]);  // lane 3: 8 bytes into its row
  out[lane] = regs[0];
}
__global__ void shapes_differ(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[32 * 8];
  const int lane = static_cast<int>(threadIdx.x);
  uint32_t regs[4] = {0, 0, 0, 0};
  if (lane < 16) {
    fs::ldmatrix_x4(regs, &tile[lane * 8]);
  } else {
    uint32_t two[2];
    fs::ldmatrix_x2(two, &tile[lane * 8]);
  }
  out[lane] = regs[0];
}
__global__ void partial_warp(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[48 * 8];
  const int t = static_cast<int>(threadIdx.x);
  uint32_t regs[2];
  fs::ldmatrix_x2(regs, &tile[t * 8]);
  out[t] = regs[0];
}
// Rows in global memory: only builds whose runtime knows where static shared
// memory is (sanitizer builds) can tell, so only they run this case.
__global__ void not_shared(const uint16_t* global, uint32_t* out) {
  const int lane = static_cast<int>(threadIdx.x);
  uint32_t regs[2];
  fs::ldmatrix_x2(regs, &global[(lane % 16) * 8]);
  out[lane] = regs[0];
}
void abort_misaligned() {
  std::vector<uint32_t> out(32);
  SIMT_LAUNCH(misaligned, 1, 32, 0, nullptr, out.data());
}
void abort_shapes_differ() {
  std::vector<uint32_t> out(32);
  SIMT_LAUNCH(shapes_differ, 1, 32, 0, nullptr, out.data());
}
void abort_partial_warp() {
  std::vector<uint32_t> out(48);
  SIMT_LAUNCH(partial_warp, 1, 48, 0, nullptr, out.data());
}
void abort_not_shared() {
  std::vector<uint16_t> global(16 * 8, 1);
  std::vector<uint32_t> out(32);
  SIMT_LAUNCH(not_shared, 1, 32, 0, nullptr, global.data(), out.data());
}

// ---------------------------------------------------------------- races
// Warp 1 writes the rows warp 0 loads, with no barrier between: the race
// checker must see warp 0's ldmatrix read them.
__global__ void race_missing_barrier(uint32_t* out) {
  SIMT_DYNAMIC_SHARED(uint16_t, tile);
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  if (t >= 32) {
    for (int i = 0; i < 8; ++i) tile[lane * 8 + i] = static_cast<uint16_t>(t + i);
  } else {
    uint32_t regs[4];
    fs::ldmatrix_x4(regs, &tile[lane * 8]);
    out[t] = regs[0];
  }
}
void race_unsynchronized_rows() {
  std::vector<uint32_t> out(64);
  SIMT_LAUNCH(race_missing_barrier, 1, 64, 32 * 8 * sizeof(uint16_t), nullptr, out.data());
}

const NamedCases kTests = {
    {"x4", test_x4},
    {"x2", test_x2},
    {"x1", test_x1},
    {"x4_trans", test_x4_trans},
    {"abort_misaligned", abort_misaligned},
    {"abort_shapes_differ", abort_shapes_differ},
    {"abort_partial_warp", abort_partial_warp},
    {"abort_not_shared", abort_not_shared},
    {"race_unsynchronized_rows", race_unsynchronized_rows},
};

}  // namespace

int main(int argc, char** argv) {
  return run_named_cases(argc, argv, kTests, [](const std::string& name) {
    return name.rfind("abort_", 0) != 0 && name.rfind("race_", 0) != 0;
  });
}
