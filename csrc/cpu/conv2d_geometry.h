// Index helpers shared by the CPU convolution kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv {
namespace cpu {

// Output columns [begin, end) whose tap at input offset `ow * stride + shift`
// lands inside [0, in_w): the rest read (or write) padding.
struct ValidRange {
  int64_t begin;
  int64_t end;
};

inline ValidRange valid_outputs(int64_t shift, int64_t stride, int64_t in_w, int64_t out_w) {
  // smallest ow with ow * stride + shift >= 0
  const int64_t begin = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  // largest ow with ow * stride + shift <= in_w - 1, plus one
  const int64_t last = in_w - 1 - shift;
  const int64_t end = last < 0 ? 0 : last / stride + 1;
  return {std::min(begin, out_w), std::max(std::min(end, out_w), std::min(begin, out_w))};
}

}  // namespace cpu
}  // namespace fastconv
