// The CUDA convolution kernels (csrc/cuda/conv2d*.cuh) run on the SIMT
// runtime against naive host loops (double precision references), for both
// algorithms, every pass, in float, double, float16 and bfloat16 (the last
// two accumulate in float and round once, as on a GPU), the im2col GEMMs on
// CUDA cores and on (emulated) tensor cores: mma.sync f16/bf16, and tf32 for
// float, whose tolerance is tf32's 2^-11 instead of float's. Usage:
//   test_conv2d_simt [random_cases=300] [seed=1] [max_macs]
// max_macs skips cases whose forward pass has more multiply-adds (the
// sanitizer builds run small problems only).
// Run it under FASTCONV_SIMT_ORDER=reversed|shuffled too: a missing barrier
// then shows up as a wrong value. Outputs and the workspace start as NaN
// (0xFF bytes), so an element a kernel forgets to write fails the check.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../csrc/cuda/conv2d.h"
#include "dtype_traits.h"

using fastconv::Conv2dParams;
using fastconv::ConvAlgorithm;
using fastconv::ConvPass;
using fastconv::GemmMath;
namespace simt = fastconv::simt;

// Launches here run on the SIMT runtime, synchronously.
constexpr simt::Target kSimt{nullptr};

namespace {

int g_failures = 0;
int g_checks = 0;

struct Case {
  Conv2dParams p;
  bool bias;
};

std::string describe(const Conv2dParams& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "N%lld C%lld %lldx%lld K%lld k%lldx%lld out%lldx%lld s%lld,%lld pad%lld,%lld d%lld,%lld g%lld",
                (long long)p.batch, (long long)p.in_channels, (long long)p.in_h, (long long)p.in_w,
                (long long)p.out_channels, (long long)p.kernel_h, (long long)p.kernel_w, (long long)p.out_h,
                (long long)p.out_w, (long long)p.stride_h, (long long)p.stride_w, (long long)p.pad_h,
                (long long)p.pad_w, (long long)p.dilation_h, (long long)p.dilation_w, (long long)p.groups);
  return buf;
}

// Reference results (double) and, per element, the sum of |terms| that sets its tolerance.
struct Reference {
  std::vector<double> y, y_abs, dx, dx_abs, dw, dw_abs, db, db_abs;
};

Reference reference(const Conv2dParams& p, const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b, bool has_bias, const std::vector<double>& dy) {
  Reference r;
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  const int64_t P = p.out_h, Q = p.out_w, R = p.kernel_h, S = p.kernel_w, H = p.in_h, W = p.in_w;
  r.y.assign(p.batch * p.out_channels * P * Q, 0.0);
  r.y_abs = r.y;
  r.dx.assign(p.batch * p.in_channels * H * W, 0.0);
  r.dx_abs = r.dx;
  r.dw.assign(p.out_channels * Cg * R * S, 0.0);
  r.dw_abs = r.dw;
  r.db.assign(p.out_channels, 0.0);
  r.db_abs = r.db;
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t k = 0; k < p.out_channels; ++k)
      for (int64_t oh = 0; oh < P; ++oh)
        for (int64_t ow = 0; ow < Q; ++ow) {
          const int64_t yi = ((n * p.out_channels + k) * P + oh) * Q + ow;
          const double g = dy[yi];
          if (has_bias) {
            r.y[yi] += b[k];
            r.y_abs[yi] += std::fabs(b[k]);
          }
          r.db[k] += g;
          r.db_abs[k] += std::fabs(g);
          const int64_t grp = k / Kg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < R; ++kh)
              for (int64_t kw = 0; kw < S; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t xi = ((n * p.in_channels + grp * Cg + c) * H + ih) * W + iw;
                const int64_t wi = ((k * Cg + c) * R + kh) * S + kw;
                r.y[yi] += x[xi] * w[wi];
                r.y_abs[yi] += std::fabs(x[xi] * w[wi]);
                r.dx[xi] += g * w[wi];
                r.dx_abs[xi] += std::fabs(g * w[wi]);
                r.dw[wi] += g * x[xi];
                r.dw_abs[wi] += std::fabs(g * x[xi]);
              }
        }
  return r;
}

// A kernel family under test: the algorithm and, for im2col, the GEMM's math.
struct Variant {
  ConvAlgorithm algo;
  GemmMath math;
  const char* name;
};
constexpr Variant kDirect{ConvAlgorithm::kDirect, GemmMath::kCudaCore, "direct"};
constexpr Variant kVariants[] = {kDirect,
                                 {ConvAlgorithm::kIm2col, GemmMath::kCudaCore, "im2col"},
                                 {ConvAlgorithm::kIm2col, GemmMath::kTensorCore, "im2col tensor-core"}};

// Unit roundoff of the products: tf32 (10-bit mantissa) for float on tensor cores.
template <typename T>
double product_eps(const Variant& v) {
  const bool tf32 = std::is_same_v<T, float> && v.math == GemmMath::kTensorCore;
  return tf32 ? std::ldexp(1.0, -11) : Type<T>::eps;
}

template <typename T>
bool compare(const char* what, const Case& c, const Variant& variant, const std::vector<T>& got,
             const std::vector<double>& want, const std::vector<double>& abs_sum) {
  ++g_checks;
  for (size_t i = 0; i < want.size(); ++i) {
    const double tol = product_eps<T>(variant) * (abs_sum[i] + 1.0) * 8;
    const double v = Type<T>::to_double(got[i]);
    if (!(std::fabs(v - want[i]) <= tol)) {
      std::fprintf(stderr, "FAIL %s %s %s%s [%s]: element %zu got %.9g want %.9g\n", what, variant.name,
                   Type<T>::name, c.bias ? " bias" : "", describe(c.p).c_str(), i, v, want[i]);
      ++g_failures;
      return false;
    }
  }
  return true;
}

// Storage that starts as NaN bytes, like the SIMT runtime's dynamic shared memory.
template <typename T>
std::vector<T> poisoned(size_t n) {
  std::vector<T> v(n);
  if (n) std::memset(v.data(), 0xFF, n * sizeof(T));
  return v;
}

struct Workspace {
  std::vector<double> storage;  // 8-byte units, so the data is 16-byte aligned on glibc
  void* get(int64_t bytes) {
    if (bytes == 0) return nullptr;
    storage.assign(static_cast<size_t>((bytes + 7) / 8) + 2, 0.0);
    std::memset(storage.data(), 0xFF, storage.size() * 8);
    return storage.data();
  }
};

template <typename T>
void run_case(const Case& c, std::mt19937& rng) {
  const Conv2dParams& p = c.p;
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  auto fill = [&](size_t n) {
    std::vector<double> v(n);
    for (auto& e : v) e = Type<T>::to_double(Type<T>::from_double(dist(rng)));
    return v;
  };
  const std::vector<double> x = fill(p.batch * p.in_channels * p.in_h * p.in_w);
  const std::vector<double> w = fill(p.out_channels * p.patch_size());
  const std::vector<double> b = fill(p.out_channels);
  const std::vector<double> dy = fill(p.batch * p.out_channels * p.out_pixels());
  const Reference ref = reference(p, x, w, b, c.bias, dy);
  auto cast = [](const std::vector<double>& v) {
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = Type<T>::from_double(v[i]);
    return out;
  };
  const std::vector<T> xt = cast(x), wt = cast(w), bt = cast(b), dyt = cast(dy);
  Workspace ws;
  for (const Variant& v : kVariants) {
    if (std::is_same_v<T, double> && v.math == GemmMath::kTensorCore) continue;  // no fp64 tensor-core GEMM
    const ConvAlgorithm algo = v.algo;
    std::vector<T> y = poisoned<T>(ref.y.size());
    const char* err = simt::conv2d_forward<T>(
        kSimt, algo, xt.data(), wt.data(), c.bias ? bt.data() : nullptr, y.data(), p, /*relu=*/false, v.math,
        ws.get(simt::conv2d_workspace_bytes(kSimt, ConvPass::kForward, algo, p, sizeof(T), v.math)));
    if (err) { std::fprintf(stderr, "forward error: %s\n", err); ++g_failures; }
    compare("forward", c, v, y, ref.y, ref.y_abs);

    std::vector<T> dx = poisoned<T>(ref.dx.size());
    err = simt::conv2d_backward_input<T>(
        kSimt, algo, dyt.data(), wt.data(), dx.data(), p, v.math,
        ws.get(simt::conv2d_workspace_bytes(kSimt, ConvPass::kBackwardInput, algo, p, sizeof(T), v.math)));
    if (err) { std::fprintf(stderr, "backward_input error: %s\n", err); ++g_failures; }
    compare("backward_input", c, v, dx, ref.dx, ref.dx_abs);

    std::vector<T> dw = poisoned<T>(ref.dw.size());
    err = simt::conv2d_backward_weight<T>(
        kSimt, algo, dyt.data(), xt.data(), dw.data(), p, v.math,
        ws.get(simt::conv2d_workspace_bytes(kSimt, ConvPass::kBackwardWeight, algo, p, sizeof(T), v.math)));
    if (err) { std::fprintf(stderr, "backward_weight error: %s\n", err); ++g_failures; }
    compare("backward_weight", c, v, dw, ref.dw, ref.dw_abs);
  }
  std::vector<T> db = poisoned<T>(ref.db.size());
  const char* err = simt::conv2d_backward_bias<T>(
      kSimt, dyt.data(), db.data(), p,
      ws.get(simt::conv2d_workspace_bytes(kSimt, ConvPass::kBackwardBias, ConvAlgorithm::kDirect, p, sizeof(T),
                                      GemmMath::kCudaCore)));
  if (err) { std::fprintf(stderr, "backward_bias error: %s\n", err); ++g_failures; }
  compare("backward_bias", c, kDirect, db, ref.db, ref.db_abs);
}

// Output size for top/left padding pad and bottom/right padding pad_end.
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t pad_end, int64_t d) {
  const int64_t span = in + pad + pad_end - d * (k - 1) - 1;
  return span < 0 ? 0 : span / s + 1;
}

Case make_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t kh, int64_t kw, int64_t s,
               int64_t pad, int64_t d, int64_t g, bool bias, int64_t pad_end = -1) {
  if (pad_end < 0) pad_end = pad;
  Conv2dParams p{n, c, h, w, k, kh, kw, out_size(h, kh, s, pad, pad_end, d), out_size(w, kw, s, pad, pad_end, d),
                 s, s, pad, pad, d, d, g};
  return Case{p, bias};
}

std::vector<Case> fixed_cases() {
  return {
      make_case(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, true),
      make_case(1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, false),           // 1x1 everything
      make_case(3, 16, 12, 12, 16, 1, 1, 1, 0, 1, 1, true),         // identity im2col
      make_case(2, 17, 13, 11, 9, 5, 5, 2, 2, 1, 1, true),          // odd sizes, stride 2
      make_case(1, 17, 13, 11, 9, 5, 5, 2, 2, 1, 1, true),          // the same, one image (race checker's size)
      make_case(2, 8, 17, 17, 8, 3, 3, 1, 1, 1, 8, true),           // depthwise
      make_case(2, 6, 15, 9, 12, 3, 3, 3, 2, 2, 3, false),          // groups, stride 3, dilation 2
      make_case(1, 4, 19, 19, 5, 1, 7, 1, 3, 1, 1, true),           // 1x7
      make_case(1, 4, 19, 19, 5, 3, 1, 2, 1, 3, 1, true),           // 3x1, dilation 3
      make_case(2, 3, 10, 10, 4, 2, 2, 1, 1, 1, 1, true, 0),        // asymmetric "same"-style padding
      make_case(1, 2, 6, 6, 3, 3, 3, 1, 7, 1, 1, true),             // padding beyond the kernel
      make_case(0, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, true),             // empty batch
      make_case(4, 3, 32, 32, 4, 3, 3, 1, 1, 1, 1, true),           // several weight-gradient slices, split-K
      make_case(4, 2, 24, 24, 4, 3, 3, 1, 1, 1, 1, true),           // split-K, smaller (race checker's size)
      make_case(3, 2, 47, 61, 2, 1, 1, 1, 0, 1, 1, true),           // bias gradient in ragged ranges
      make_case(2, 4, 23, 23, 6, 3, 3, 1, 1, 1, 2, false),          // split-K with groups
      make_case(1, 2, 8, 8, 3, 31, 31, 1, 45, 3, 1, true),          // huge footprint: unstaged kernels
      make_case(1, 2, 4, 4, 3, 31, 31, 1, 45, 3, 1, true),          // the same, small
      make_case(1, 16, 31, 31, 130, 3, 3, 1, 1, 1, 1, false),       // 130-row GEMMs (plain runs only: too large for the checkers)
      make_case(1, 1, 8, 16, 128, 1, 1, 1, 0, 1, 1, true),          // large GEMM tiles on one multiprocessor, few MACs
      make_case(1, 1, 8, 64, 64, 1, 1, 1, 0, 1, 1, true),           // wide GEMM tiles on one multiprocessor, few MACs
      make_case(1, 1, 9, 16, 72, 2, 2, 1, 0, 1, 1, true),           // wide tensor-core tiles on one multiprocessor: 72 x 120, ragged
      make_case(2, 17, 31, 31, 17, 3, 3, 1, 1, 1, 17, true),        // depthwise, odd channels
      make_case(2, 17, 9, 17, 17, 3, 3, 1, 1, 1, 17, true),         // the same, small: two ragged tiles each way
      make_case(1, 64, 5, 4, 4, 3, 3, 1, 1, 1, 2, false),           // split forward: 288-long reductions, groups, no bias
      make_case(3, 256, 3, 3, 5, 1, 1, 2, 0, 1, 1, true),           // split forward over column chunks of 2 and 1 images (8 KiB buffer, unfolded)
      make_case(3, 48, 3, 3, 1, 3, 3, 1, 0, 1, 1, true),            // one multiprocessor: 2 images whole, the third split
      make_case(3, 64, 2, 2, 48, 3, 3, 1, 1, 1, 1, false),          // the same for the gathered input gradient
  };
}

Case random_case(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  static const int kernels[][2] = {{1, 1}, {3, 3}, {1, 7}, {3, 1}, {5, 5}, {2, 2}, {2, 4}, {7, 1}};
  for (;;) {
    const auto& ker = kernels[pick(0, 7)];
    const int64_t groups = pick(0, 3) == 0 ? pick(1, 4) : 1;
    const bool depthwise = pick(0, 5) == 0;
    const int64_t cg = depthwise ? 1 : pick(1, 17 / groups > 0 ? 17 / groups : 1);
    const int64_t kg = depthwise ? pick(1, 2) : pick(1, 17 / groups > 0 ? 17 / groups : 1);
    const int64_t g = depthwise ? pick(1, 17) : groups;
    Conv2dParams p{};
    p.batch = pick(1, 3);
    p.in_channels = cg * g;
    p.out_channels = kg * g;
    p.groups = g;
    p.in_h = pick(1, 31);
    p.in_w = pick(1, 31);
    p.kernel_h = ker[0];
    p.kernel_w = ker[1];
    p.stride_h = pick(1, 3);
    p.stride_w = pick(1, 3);
    p.dilation_h = pick(1, 3);
    p.dilation_w = pick(1, 3);
    p.pad_h = pick(0, (p.kernel_h - 1) * p.dilation_h + 2);
    p.pad_w = pick(0, (p.kernel_w - 1) * p.dilation_w + 2);
    const int64_t pad_bottom = pick(0, static_cast<int>(p.pad_h) + 1);
    const int64_t pad_right = pick(0, static_cast<int>(p.pad_w) + 1);
    p.out_h = out_size(p.in_h, p.kernel_h, p.stride_h, p.pad_h, pad_bottom, p.dilation_h);
    p.out_w = out_size(p.in_w, p.kernel_w, p.stride_w, p.pad_w, pad_right, p.dilation_w);
    if (p.out_h < 1 || p.out_w < 1) continue;
    return Case{p, pick(0, 1) == 1};
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int random_cases = argc > 1 ? std::atoi(argv[1]) : 300;
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 1u;
  const long long max_macs = argc > 3 ? std::atoll(argv[3]) : -1;
  std::mt19937 rng(seed);
  std::vector<Case> all = fixed_cases();
  for (int i = 0; i < random_cases; ++i) all.push_back(random_case(rng));
  std::vector<Case> cases;
  for (const Case& c : all) {
    const Conv2dParams& p = c.p;
    const long long macs = static_cast<long long>(p.batch * p.out_channels * p.out_h * p.out_w *
                                                  p.in_channels_per_group() * p.kernel_h * p.kernel_w);
    if (max_macs < 0 || macs <= max_macs) cases.push_back(c);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (const Case& c : cases) {
    run_case<float>(c, rng);
    run_case<double>(c, rng);
    run_case<fastconv::half_t>(c, rng);
    run_case<fastconv::bfloat16_t>(c, rng);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%zu cases, %d comparisons, %d failures, %.2f s\n", cases.size(), g_checks, g_failures, secs);
  return g_failures == 0 ? 0 : 1;
}
