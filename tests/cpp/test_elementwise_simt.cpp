// The CUDA ReLU, dropout and max-pooling kernels (csrc/cuda/relu.cuh,
// dropout.cuh, max_pool2d.cuh) on the SIMT runtime against plain host loops,
// in float, double, float16 and bfloat16, aligned and unaligned pointers (the
// vector and scalar paths). References compute in the kernels' accumulation
// type and round once, so every result must match to the bit. Outputs start
// as NaN bytes, so an element a kernel skips fails.
// Usage: test_elementwise_simt
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "../../csrc/common/philox.h"
#include "../../csrc/cuda/dropout.h"
#include "../../csrc/cuda/max_pool2d.h"
#include "../../csrc/cuda/relu.h"
#include "dtype_traits.h"

using fastconv::Pool2dParams;
using fastconv::acc_t;
using fastconv::half_t;
using fastconv::bfloat16_t;
namespace simt = fastconv::simt;

// Launches here run on the SIMT runtime, synchronously.
constexpr simt::Target kSimt{nullptr};

namespace {

int g_failures = 0;

template <typename T>
double value(T v) {
  return Type<T>::to_double(v);
}
template <typename T>
T make(double v) {
  return Type<T>::from_double(v);
}

template <typename T>
bool same(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0 || (value(a) != value(a) && value(b) != value(b));
}

template <typename T>
void expect_equal(const char* what, const T* got, const std::vector<T>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (!same(got[i], want[i])) {
      std::fprintf(stderr, "FAIL %s (%s): element %zu got %.9g want %.9g\n", what, Type<T>::name, i,
                   value(got[i]), value(want[i]));
      ++g_failures;
      return;
    }
  }
}

void expect_indices(const char* what, const int64_t* got, const std::vector<int64_t>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      std::fprintf(stderr, "FAIL %s: element %zu got %lld want %lld\n", what, i, (long long)got[i],
                   (long long)want[i]);
      ++g_failures;
      return;
    }
  }
}

void expect_ok(const char* what, const char* err) {
  if (err) {
    std::fprintf(stderr, "FAIL %s: %s\n", what, err);
    ++g_failures;
  }
}

// n values in [-2, 2) (exact in every type) with zeros, -0.0 and a NaN among
// them; element 0 of the storage is spare, so `+ shift` gives an unaligned view.
template <typename T>
std::vector<T> values(size_t n, unsigned seed) {
  std::vector<T> v(n + 1);
  for (size_t i = 0; i < v.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = make<T>(static_cast<int>((seed >> 8) % 256 - 128) / 64.0);
  }
  if (n > 3) {
    v[2] = make<T>(0.0);
    v[3] = make<T>(-0.0);
    v[n / 2] = make<T>(std::numeric_limits<double>::quiet_NaN());
  }
  return v;
}

template <typename T>
std::vector<T> poisoned(size_t n) {
  std::vector<T> v(n + 1);
  std::memset(v.data(), 0xff, v.size() * sizeof(T));
  return v;
}

template <typename T>
void test_relu() {
  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(4099)}) {
    for (int shift : {0, 1}) {
      const std::vector<T> x = values<T>(n, 11), dy = values<T>(n, 12);
      std::vector<T> y = poisoned<T>(n), dx = poisoned<T>(n);
      expect_ok("relu_forward", simt::relu_forward<T>(kSimt, x.data() + shift, y.data() + shift, n));
      expect_ok("relu_backward",
                simt::relu_backward<T>(kSimt, dy.data() + shift, y.data() + shift, dx.data() + shift, n));
      std::vector<T> want_y(n), want_dx(n);
      for (size_t i = 0; i < n; ++i) {
        const T xi = x[i + shift];
        want_y[i] = value(xi) <= 0 ? make<T>(0.0) : xi;  // -0.0 -> +0.0, as torch's GPU ReLU
        want_dx[i] = value(want_y[i]) <= 0 ? make<T>(0.0) : dy[i + shift];
      }
      expect_equal("relu_forward", y.data() + shift, want_y);
      expect_equal("relu_backward", dx.data() + shift, want_dx);
    }
  }
}

template <typename T>
void test_dropout() {
  const int64_t seed_offset[2] = {1234, 8};
  const double p = 0.3;
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(p * (1 << 24)));
  const acc_t<T> scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
  for (size_t n : {size_t(1), size_t(5), size_t(1003), size_t(4096)}) {
    for (int shift : {0, 1}) {
      const std::vector<T> x = values<T>(n, 21);
      std::vector<T> y = poisoned<T>(n);
      expect_ok("dropout", simt::dropout_apply<T>(kSimt, x.data() + shift, y.data() + shift, n, seed_offset,
                                                  threshold, scale));
      std::vector<T> want(n);
      for (size_t i = 0; i < n; ++i) {
        const fastconv::Philox4x32 r = fastconv::philox_group(1234, 8, i / 4);
        const bool keep = fastconv::dropout_keep(r.v[i % 4], threshold);
        want[i] = make<T>(static_cast<acc_t<T>>(value(x[i + shift])) * (keep ? scale : acc_t<T>(0)));
      }
      expect_equal("dropout", y.data() + shift, want);
    }
  }
}

Pool2dParams pool(int64_t planes, int64_t h, int64_t w, int64_t k, int64_t s, int64_t pad,
                  int64_t d, bool ceil_mode) {
  auto out = [&](int64_t in) {
    const int64_t span = in + 2 * pad - d * (k - 1) - 1;
    int64_t o = (ceil_mode ? span + s - 1 : span) / s + 1;
    if (ceil_mode && (o - 1) * s >= in + pad) --o;  // the last window must start inside
    return o;
  };
  return Pool2dParams{planes, h, w, out(h), out(w), k, k, s, s, pad, pad, d, d};
}

template <typename T>
void test_max_pool2d() {
  const Pool2dParams cases[] = {
      pool(3, 8, 8, 2, 2, 0, 1, false),   // 2x2 kernel, two outputs per thread
      pool(2, 6, 10, 2, 2, 0, 1, false),  // 2x2 kernel, one output per thread
      pool(2, 7, 9, 3, 2, 1, 1, false),   // padding
      pool(2, 9, 9, 3, 2, 1, 2, true),    // dilation, ceil mode
      pool(1, 5, 5, 3, 1, 1, 1, false),   // overlapping windows
  };
  for (const Pool2dParams& p : cases) {
    for (int shift : {0, 1}) {
      const size_t in_n = p.planes * p.in_pixels(), out_n = p.planes * p.out_pixels();
      std::vector<T> x = values<T>(in_n, 31);
      // Ties: a run of equal values, so the first maximum must win.
      for (size_t i = 4; i < in_n && i < 12; ++i) x[i + shift] = make<T>(1.5);
      const std::vector<T> dy = values<T>(out_n, 32);
      std::vector<T> y = poisoned<T>(out_n), dx = poisoned<T>(in_n);
      std::vector<int64_t> idx(out_n, -7);
      expect_ok("max_pool2d_forward",
                simt::max_pool2d_forward<T>(kSimt, x.data() + shift, y.data() + shift, idx.data(), p));
      expect_ok("max_pool2d_backward",
                simt::max_pool2d_backward<T>(kSimt, dy.data() + shift, idx.data(), dx.data() + shift, p));
      std::vector<T> want_y(out_n);
      std::vector<acc_t<T>> want_dx(in_n, acc_t<T>(0));  // gradients add in the accumulation type
      std::vector<int64_t> want_idx(out_n);
      for (int64_t pl = 0; pl < p.planes; ++pl)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            // torch: a strictly larger value or any NaN takes the window.
            double best = -std::numeric_limits<double>::infinity();
            int64_t at = -1;
            for (int64_t kh = 0; kh < p.kernel_h; ++kh)
              for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
                if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
                const double v = value(x[pl * p.in_pixels() + ih * p.in_w + iw + shift]);
                if (v > best || v != v) {
                  best = v;
                  at = ih * p.in_w + iw;
                }
              }
            const int64_t o = (pl * p.out_h + oh) * p.out_w + ow;
            want_y[o] = x[pl * p.in_pixels() + at + shift];
            want_idx[o] = at;
            want_dx[pl * p.in_pixels() + at] += static_cast<acc_t<T>>(value(dy[o + shift]));
          }
      std::vector<T> want_dx_t(in_n);
      for (size_t i = 0; i < in_n; ++i) want_dx_t[i] = make<T>(want_dx[i]);
      expect_equal("max_pool2d_forward", y.data() + shift, want_y);
      expect_indices("max_pool2d_indices", idx.data(), want_idx);
      expect_equal("max_pool2d_backward", dx.data() + shift, want_dx_t);
    }
  }
}

template <typename T>
void test_all() {
  test_relu<T>();
  test_dropout<T>();
  test_max_pool2d<T>();
}

}  // namespace

int main() {
  test_all<float>();
  test_all<double>();
  test_all<half_t>();
  test_all<bfloat16_t>();
  std::printf("%d failures\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
