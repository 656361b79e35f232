// The SIMT runtime's warp-level matrix multiply (mma.sync through
// csrc/cuda/mma.cuh) against a naive host matmul, with the fragment layouts
// written out here from PTX's tables (independently of the runtime's), and
// its tf32 conversion on chosen bit patterns. Usage:
//   test_mma_simt NAME     one case (--list prints them)
// The cases named abort_* must abort with the runtime's collective message
// (CMakeLists.txt checks the text).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../../csrc/cuda/mma.cuh"
#include "named_cases.h"

using fastconv::bfloat16_t;
using fastconv::half_t;
using fastconv::simt::MmaFragA;
using fastconv::simt::MmaFragB;
namespace fs = fastconv::simt;

namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The matrices of one mma: A [16][K] row-major, B [K][8] row-major, C/D [16][8].
// Element types: 16-bit bits for f16/bf16, fp32 bit patterns for tf32.
enum class Kind { kF16, kBf16, kTf32 };

uint32_t encode(Kind kind, float v) {
  switch (kind) {
    case Kind::kF16: return fastconv::float_to_half_bits(v);
    case Kind::kBf16: return fastconv::float_to_bfloat16_bits(v);
    case Kind::kTf32: return bits_of(v);
  }
  return 0;
}

// One lane's registers, gathered from the matrices by PTX's fragment tables
// (g = lane / 4, t = lane % 4):
//   f16/bf16 A: a0,a1: (g, 2t+{0,1})  a2,a3: (g+8, 2t+{0,1})  a4,a5: (g, 2t+8+{0,1})  a6,a7: (g+8, 2t+8+{0,1})
//            B: b0,b1: (2t+{0,1}, g)  b2,b3: (2t+8+{0,1}, g)     (pairs packed low element first)
//   tf32     A: a0: (g, t)  a1: (g+8, t)  a2: (g, t+4)  a3: (g+8, t+4)
//            B: b0: (t, g)  b1: (t+4, g)
//   C/D:        c0,c1: (g, 2t+{0,1})  c2,c3: (g+8, 2t+{0,1})
struct Problem {
  Kind kind;
  int K;
  std::vector<uint32_t> a, b;  // encoded elements
  std::vector<float> c, d;
};

__global__ void mma_once(Problem* pr) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const int K = pr->K;
  auto A = [&](int m, int k) { return pr->a[m * K + k]; };
  auto B = [&](int k, int n) { return pr->b[k * 8 + n]; };
  MmaFragA fa;
  MmaFragB fb;
  if (pr->kind == Kind::kTf32) {
    fa.r[0] = A(g, t), fa.r[1] = A(g + 8, t), fa.r[2] = A(g, t + 4), fa.r[3] = A(g + 8, t + 4);
    fb.r[0] = B(t, g), fb.r[1] = B(t + 4, g);
  } else {
    auto pack = [](uint32_t lo, uint32_t hi) { return lo | (hi << 16); };
    fa.r[0] = pack(A(g, 2 * t), A(g, 2 * t + 1));
    fa.r[1] = pack(A(g + 8, 2 * t), A(g + 8, 2 * t + 1));
    fa.r[2] = pack(A(g, 2 * t + 8), A(g, 2 * t + 9));
    fa.r[3] = pack(A(g + 8, 2 * t + 8), A(g + 8, 2 * t + 9));
    fb.r[0] = pack(B(2 * t, g), B(2 * t + 1, g));
    fb.r[1] = pack(B(2 * t + 8, g), B(2 * t + 9, g));
  }
  float acc[4] = {pr->c[g * 8 + 2 * t], pr->c[g * 8 + 2 * t + 1], pr->c[(g + 8) * 8 + 2 * t],
                  pr->c[(g + 8) * 8 + 2 * t + 1]};
  switch (pr->kind) {
    case Kind::kF16: fs::mma_m16n8k16<half_t>(acc, fa, fb); break;
    case Kind::kBf16: fs::mma_m16n8k16<bfloat16_t>(acc, fa, fb); break;
    case Kind::kTf32: fs::mma_m16n8k8_tf32(acc, fa, fb); break;
  }
  pr->d[g * 8 + 2 * t] = acc[0];
  pr->d[g * 8 + 2 * t + 1] = acc[1];
  pr->d[(g + 8) * 8 + 2 * t] = acc[2];
  pr->d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// Distinct small integers and halves (exact in every input type, every
// product and partial sum exact in fp32): a misplaced element changes the result.
void check_matmul(Kind kind, const char* name) {
  Problem pr;
  pr.kind = kind;
  pr.K = kind == Kind::kTf32 ? 8 : 16;
  std::vector<float> a(16 * pr.K), b(pr.K * 8);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < pr.K; ++k) a[m * pr.K + k] = static_cast<float>((m * 7 + k * 3) % 11 - 5) * 0.5f;
  for (int k = 0; k < pr.K; ++k)
    for (int n = 0; n < 8; ++n) b[k * 8 + n] = static_cast<float>((k * 5 + n * 9) % 13 - 6);
  pr.c.resize(128);
  for (int i = 0; i < 128; ++i) pr.c[i] = static_cast<float>(i % 17) - 8.0f;
  pr.d.assign(128, NAN);
  for (float v : a) pr.a.push_back(encode(kind, v));
  for (float v : b) pr.b.push_back(encode(kind, v));
  Problem* arg = &pr;
  SIMT_LAUNCH(mma_once, 1, 32, 0, nullptr, arg);
  CHECK(cudaGetLastError() == cudaSuccess);
  int wrong = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = pr.c[m * 8 + n];
      for (int k = 0; k < pr.K; ++k) want += double(a[m * pr.K + k]) * b[k * 8 + n];
      if (pr.d[m * 8 + n] != static_cast<float>(want)) {
        if (wrong++ < 4)
          std::fprintf(stderr, "%s: D(%d,%d) = %g, want %g\n", name, m, n, pr.d[m * 8 + n], want);
      }
    }
  CHECK(wrong == 0);
}

void test_mma_f16() { check_matmul(Kind::kF16, "f16"); }
void test_mma_bf16() { check_matmul(Kind::kBf16, "bf16"); }
void test_mma_tf32() { check_matmul(Kind::kTf32, "tf32"); }

// A tf32 operand is its top 19 bits: the runtime truncates what a kernel did
// not round (as tensor cores do), so 1 + 2^-11 - 2^-23 times 1 gives exactly 1.
void test_mma_tf32_truncates() {
  Problem pr;
  pr.kind = Kind::kTf32;
  pr.K = 8;
  pr.a.assign(16 * 8, bits_of(0.0f));
  pr.b.assign(8 * 8, bits_of(0.0f));
  pr.a[0] = 0x3f801fffu;  // A(0, 0) = 1 + 2^-10 - 2^-23: truncates to 1 (cvt.rna would give 1 + 2^-10)
  pr.a[1] = 0x3f803fffu;  // A(0, 1) = 1 + 2^-9 - 2^-23: truncates to 1 + 2^-10
  pr.b[0] = bits_of(1.0f);  // B(0, 0)
  pr.b[8] = bits_of(1.0f);  // B(1, 0)
  pr.c.assign(128, 0.0f);
  pr.d.assign(128, NAN);
  Problem* arg = &pr;
  SIMT_LAUNCH(mma_once, 1, 32, 0, nullptr, arg);
  CHECK(pr.d[0] == 2.0f + std::ldexp(1.0f, -10));  // 1 + (1 + 2^-10)
}

// cvt.rna.tf32.f32 on chosen bit patterns: round to nearest, ties away from zero.
void test_tf32_rounding() {
  struct Case {
    uint32_t in, out;
    const char* what;
  } cases[] = {
      {0x3f800000u, 0x3f800000u, "1 is exact"},
      {0x3f800fffu, 0x3f800000u, "below the tie rounds down"},
      {0x3f801000u, 0x3f802000u, "a tie rounds away from zero (up)"},
      {0x3f803000u, 0x3f804000u, "a tie with an odd last bit rounds away too (not to even)"},
      {0xbf801000u, 0xbf802000u, "a negative tie rounds away from zero (down)"},
      {0x3f801001u, 0x3f802000u, "above the tie rounds up"},
      {0x3fffffffu, 0x40000000u, "the carry reaches the exponent"},
      {0x7f7fffffu, 0x7f800000u, "the largest float rounds to infinity"},
      {0x7f800000u, 0x7f800000u, "infinity stays"},
      {0xff800000u, 0xff800000u, "-infinity stays"},
      {0x00001000u, 0x00002000u, "a subnormal tie rounds away"},
      {0x00000fffu, 0x00000000u, "a tiny subnormal rounds to zero"},
      {0x80000fffu, 0x80000000u, "and keeps its sign"},
  };
  for (const Case& c : cases) {
    const uint32_t got = fs::to_tf32(float_of(c.in));
    if (got != c.out) {
      std::fprintf(stderr, "tf32(0x%08x) = 0x%08x, want 0x%08x: %s\n", c.in, got, c.out, c.what);
      ++g_failures;
    }
  }
  for (uint32_t nan : {0x7f800001u, 0x7fc00000u, 0xffc00001u}) {
    const uint32_t got = fs::to_tf32(float_of(nan));
    CHECK((got & 0x7f800000u) == 0x7f800000u && (got & 0x007fffffu) != 0);  // still a NaN
  }
}

// ---------------------------------------------------------------- aborts
__global__ void lane_skips(float* out) {
  float acc[4] = {0, 0, 0, 0};
  const MmaFragA a{};
  const MmaFragB b{};
  if (threadIdx.x == 5) return;  // never reaches the mma
  fs::mma_m16n8k16<half_t>(acc, a, b);
  out[threadIdx.x] = acc[0];
}

__global__ void shapes_differ(float* out) {
  float acc[4] = {0, 0, 0, 0};
  const MmaFragA a{};
  const MmaFragB b{};
  if (threadIdx.x < 16) {
    fs::mma_m16n8k16<half_t>(acc, a, b);
  } else {
    fs::mma_m16n8k8_tf32(acc, a, b);
  }
  out[threadIdx.x] = acc[0];
}

__global__ void partial_warp(float* out) {
  float acc[4] = {0, 0, 0, 0};
  const MmaFragA a{};
  const MmaFragB b{};
  fs::mma_m16n8k16<bfloat16_t>(acc, a, b);
  out[threadIdx.x] = acc[0];
}

void abort_lane_skips() {
  std::vector<float> out(32);
  SIMT_LAUNCH(lane_skips, 1, 32, 0, nullptr, out.data());
}
void abort_shapes_differ() {
  std::vector<float> out(32);
  SIMT_LAUNCH(shapes_differ, 1, 32, 0, nullptr, out.data());
}
void abort_partial_warp() {
  std::vector<float> out(48);
  SIMT_LAUNCH(partial_warp, 1, 48, 0, nullptr, out.data());
}

const NamedCases kTests = {
    {"mma_f16", test_mma_f16},
    {"mma_bf16", test_mma_bf16},
    {"mma_tf32", test_mma_tf32},
    {"mma_tf32_truncates", test_mma_tf32_truncates},
    {"tf32_rounding", test_tf32_rounding},
    {"abort_lane_skips", abort_lane_skips},
    {"abort_shapes_differ", abort_shapes_differ},
    {"abort_partial_warp", abort_partial_warp},
};

}  // namespace

int main(int argc, char** argv) {
  return run_named_cases(argc, argv, kTests, [](const std::string& name) { return name.rfind("abort_", 0) != 0; });
}
