// Integer helpers for tiling and for the taps of a sliding window, shared by
// the CPU kernels, the CUDA kernels (on a GPU and on the SIMT runtime) and the
// ATen glue. Torch-free.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastconv {

// a / b rounded up (a >= 0, b > 0).
FASTCONV_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// a / b rounded toward minus infinity (b > 0); C++ division truncates toward 0.
// The int overload keeps 32-bit index math 32-bit in device code.
FASTCONV_HD int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
FASTCONV_HD int floor_div(int a, int b) {
  const int q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// n / d and n % d for one divisor d and many dividends n < 2^31, without a
// division: q = (n * m) >> p with p = 31 + ceil(log2 d) and m = ceil(2^p / d).
// m * d - 2^p < d <= 2^(p - 31), which makes q exact for every 31-bit n
// (Granlund and Montgomery's bound). On a GPU a 64-bit division is a software
// routine of dozens of instructions; this is one wide multiply and a shift.
// The multiplier is computed once on the host (make), the divisions run in
// kernel loops.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 0x80000000u, shift = 31;

  // d in [1, 2^31); d < 1 gives the divisor 1 (for empty extents, which
  // have no dividends).
  static FastDivmod make(int64_t d) {
    FastDivmod f;
    if (d < 1) d = 1;
    uint32_t log2_ceil = 0;
    while ((int64_t(1) << log2_ceil) < d) ++log2_ceil;
    f.divisor = static_cast<uint32_t>(d);
    f.shift = 31 + log2_ceil;
    f.multiplier = static_cast<uint32_t>(((uint64_t(1) << f.shift) + uint64_t(d) - 1) / uint64_t(d));
    return f;
  }
  // n in [0, 2^31).
  FASTCONV_HD uint32_t div(uint32_t n) const {
    return static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> shift);
  }
  FASTCONV_HD void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};
constexpr int64_t kFastDivmodLimit = int64_t(1) << 31;  // dividends and divisors stay below

// An index below 2^31 split into the digits of a mixed-radix number, fastest
// digit first: digit i < radix i, and the last digit (D) takes the rest.
// Tiled kernels decode their work items so, one FastDivmod per radix, built
// on the host by make() from the launch's extents.
template <int D>
struct MixedRadix {
  FastDivmod radix[D];

  template <typename... R>
  static MixedRadix make(R... radices) {
    static_assert(sizeof...(R) == D, "one radix per digit but the last");
    return MixedRadix{{FastDivmod::make(static_cast<int64_t>(radices))...}};
  }
  FASTCONV_HD void split(uint32_t index, uint32_t (&digits)[D + 1]) const {
    for (int i = 0; i < D; ++i) {
      uint32_t q, r;
      radix[i].divmod(index, q, r);
      digits[i] = r;
      index = q;
    }
    digits[D] = index;
  }
};

// A half-open range of indices [begin, end); empty when begin >= end.
template <typename I>
struct BasicIndexRange {
  I begin;
  I end;
};
using IndexRange = BasicIndexRange<int64_t>;

// The outputs o in [0, out_size) whose tap o * stride + shift lands inside
// [0, in_size): convolution loops run over these and skip the padding.
FASTCONV_HD IndexRange outputs_inside(int64_t shift, int64_t stride, int64_t in_size, int64_t out_size) {
  // smallest o with o * stride + shift >= 0
  int64_t begin = shift >= 0 ? 0 : ceil_div(-shift, stride);
  // largest o with o * stride + shift <= in_size - 1, plus one
  const int64_t last = in_size - 1 - shift;
  int64_t end = last < 0 ? 0 : last / stride + 1;
  if (begin > out_size) begin = out_size;
  if (end > out_size) end = out_size;
  if (end < begin) end = begin;
  return {begin, end};
}

// The taps of one window that land inside [0, in_size): positions begin,
// begin + dilation, ... below end, for the window of output `out_pos`. Pooling
// loops run over these. `begin` is the first tap at or after 0, found the way
// torch finds it (it seeds the index of an all -inf window, so it must agree
// even when no tap is inside, where begin >= end). I is int64_t, or int in
// device code whose planes the launcher keeps below 2^31 (a 64-bit division
// is a software routine on a GPU).
template <typename I>
FASTCONV_HD BasicIndexRange<I> taps_inside(I out_pos, I stride, I pad, I kernel, I dilation, I in_size) {
  I begin = out_pos * stride - pad;
  I end = begin + (kernel - 1) * dilation + 1;
  if (end > in_size) end = in_size;
  if (begin < 0) begin += (dilation - 1 - begin) / dilation * dilation;  // ceil(-begin / dilation) taps skipped
  return {begin, end};
}

}  // namespace fastconv
