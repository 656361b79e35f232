// The CUDA ReLU, dropout and max-pooling kernels (csrc/cuda/relu.cuh,
// dropout.cuh, max_pool2d.cuh) on the SIMT runtime against plain host loops,
// float and double, aligned and unaligned pointers (the vector and scalar
// paths). Outputs start as NaN bytes, so an element a kernel skips fails.
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

using fastconv::Pool2dParams;

namespace {

int g_failures = 0;

template <typename T>
bool same(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0 || (a != a && b != b);
}

template <typename T>
void expect_equal(const char* what, const T* got, const std::vector<T>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (!same(got[i], want[i])) {
      std::fprintf(stderr, "FAIL %s (%s): element %zu got %.9g want %.9g\n", what,
                   sizeof(T) == 4 ? "float" : "double", i, static_cast<double>(got[i]),
                   static_cast<double>(want[i]));
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

// n values in [-2, 2) with zeros, -0.0 and a NaN among them; element 0 of
// the storage is spare, so `+ shift` gives an unaligned view.
template <typename T>
std::vector<T> values(size_t n, unsigned seed) {
  std::vector<T> v(n + 1);
  for (size_t i = 0; i < v.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = static_cast<T>(static_cast<int>((seed >> 8) % 4096) - 2048) / T(1024);
  }
  if (n > 3) {
    v[2] = T(0);
    v[3] = -T(0);
    v[n / 2] = std::numeric_limits<T>::quiet_NaN();
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
      expect_ok("relu_forward",
                fastconv::simt::relu_forward<T>(x.data() + shift, y.data() + shift, n, nullptr));
      expect_ok("relu_backward", fastconv::simt::relu_backward<T>(dy.data() + shift, y.data() + shift,
                                                                   dx.data() + shift, n, nullptr));
      std::vector<T> want_y(n), want_dx(n);
      for (size_t i = 0; i < n; ++i) {
        const T xi = x[i + shift];
        want_y[i] = xi < T(0) ? T(0) : xi;
        want_dx[i] = want_y[i] <= T(0) ? T(0) : dy[i + shift];
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
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  for (size_t n : {size_t(1), size_t(5), size_t(1003), size_t(4096)}) {
    for (int shift : {0, 1}) {
      const std::vector<T> x = values<T>(n, 21);
      std::vector<T> y = poisoned<T>(n);
      expect_ok("dropout", fastconv::simt::dropout_apply<T>(x.data() + shift, y.data() + shift, n,
                                                            seed_offset, threshold, scale, nullptr));
      std::vector<T> want(n);
      for (size_t i = 0; i < n; ++i) {
        const fastconv::Philox4x32 r = fastconv::philox_group(1234, 8, i / 4);
        const bool keep = fastconv::dropout_keep(r.v[i % 4], threshold);
        want[i] = x[i + shift] * (keep ? scale : T(0));
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
      const size_t in_n = p.planes * p.in_plane(), out_n = p.planes * p.out_plane();
      std::vector<T> x = values<T>(in_n, 31);
      // Ties: a run of equal values, so the first maximum must win.
      for (size_t i = 4; i < in_n && i < 12; ++i) x[i + shift] = T(1.5);
      const std::vector<T> dy = values<T>(out_n, 32);
      std::vector<T> y = poisoned<T>(out_n), dx = poisoned<T>(in_n);
      std::vector<int64_t> idx(out_n, -7);
      expect_ok("max_pool2d_forward", fastconv::simt::max_pool2d_forward<T>(
                                          x.data() + shift, y.data() + shift, idx.data(), p, nullptr));
      expect_ok("max_pool2d_backward", fastconv::simt::max_pool2d_backward<T>(
                                           dy.data() + shift, idx.data(), dx.data() + shift, p, nullptr));
      std::vector<T> want_y(out_n), want_dx(in_n, T(0));
      std::vector<int64_t> want_idx(out_n);
      for (int64_t pl = 0; pl < p.planes; ++pl)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            // torch: a strictly larger value or any NaN takes the window.
            T best = -std::numeric_limits<T>::infinity();
            int64_t at = -1;
            for (int64_t kh = 0; kh < p.kernel_h; ++kh)
              for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
                if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
                const T v = x[pl * p.in_plane() + ih * p.in_w + iw + shift];
                if (v > best || v != v) {
                  best = v;
                  at = ih * p.in_w + iw;
                }
              }
            const int64_t o = (pl * p.out_h + oh) * p.out_w + ow;
            want_y[o] = best;
            want_idx[o] = at;
            want_dx[pl * p.in_plane() + at] += dy[o + shift];
          }
      expect_equal("max_pool2d_forward", y.data() + shift, want_y);
      expect_equal("max_pool2d_indices", idx.data(), want_idx);
      expect_equal("max_pool2d_backward", dx.data() + shift, want_dx);
    }
  }
}

}  // namespace

int main() {
  test_relu<float>();
  test_relu<double>();
  test_dropout<float>();
  test_dropout<double>();
  test_max_pool2d<float>();
  test_max_pool2d<double>();
  std::printf("%d failures\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
