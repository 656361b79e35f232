#include "max_pool2d.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Planes per task: enough that a task touches ~kElementwiseGrain inputs.
int64_t plane_grain(const Pool2dParams& p) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, p.in_plane()));
}

// 2x2 windows at stride 2: four loads per output, branch-free selects. The
// scan order (top-left, top-right, bottom-left, bottom-right) and the rule
// (pool_takes) are the generic kernel's.
template <typename T>
void pool_plane_2x2(const T* in, T* out, int64_t* idx, const Pool2dParams& p) {
  const int64_t w = p.in_w;
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const T* top = in + 2 * oh * w;
    const T* bottom = top + w;
    T* out_row = out + oh * p.out_w;
    int64_t* idx_row = idx + oh * p.out_w;
    const int64_t row_at = 2 * oh * w;
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const T a = top[2 * ow], b = top[2 * ow + 1], c = bottom[2 * ow], d = bottom[2 * ow + 1];
      // Which tap wins, as 0..3; the flat index is rebuilt from it once.
      T best = a;
      int64_t tap = 0;
      const bool take_b = pool_takes(b, best);
      best = take_b ? b : best;
      tap = take_b ? 1 : tap;
      const bool take_c = pool_takes(c, best);
      best = take_c ? c : best;
      tap = take_c ? 2 : tap;
      const bool take_d = pool_takes(d, best);
      best = take_d ? d : best;
      tap = take_d ? 3 : tap;
      out_row[ow] = best;
      idx_row[ow] = row_at + 2 * ow + (tap & 1) + (tap >> 1) * w;
    }
  }
}

// Any geometry. Each output row is initialised to -inf and torch's seed
// index, then every in-bounds tap (row by row, column tap by column tap, the
// per-window scan order) is folded into the whole row in one unit-stride
// (for stride 1) loop over the outputs it reaches.
template <typename T>
class GenericPlanePooler {
 public:
  explicit GenericPlanePooler(const Pool2dParams& p)
      : p_(p), col_begin_(p.out_w), tap_lo_(p.kernel_w), tap_hi_(p.kernel_w) {
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      col_begin_[ow] = pool_span(ow, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w).begin;
    }
    // Column tap kw of output ow reads iw = ow * stride_w + offset(kw); keep
    // the outputs with 0 <= iw < in_w.
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t offset = kw * p.dilation_w - p.pad_w;
      const int64_t lo = offset >= 0 ? 0 : (-offset + p.stride_w - 1) / p.stride_w;
      const int64_t hi = p.in_w - 1 - offset < 0 ? 0 : (p.in_w - 1 - offset) / p.stride_w + 1;
      tap_lo_[kw] = std::min(lo, p.out_w);
      tap_hi_[kw] = std::max(tap_lo_[kw], std::min(hi, p.out_w));
    }
  }

  void operator()(const T* in, T* out, int64_t* idx) const {
    const Pool2dParams& p = p_;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const PoolSpan rows = pool_span(oh, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
      T* out_row = out + oh * p.out_w;
      int64_t* idx_row = idx + oh * p.out_w;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        out_row[ow] = -std::numeric_limits<T>::infinity();
        idx_row[ow] = rows.begin * p.in_w + col_begin_[ow];
      }
      for (int64_t ih = rows.begin; ih < rows.end; ih += p.dilation_h) {
        const T* in_row = in + ih * p.in_w;
        const int64_t row_at = ih * p.in_w;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t offset = kw * p.dilation_w - p.pad_w;
          // A literal step 1 lets the compiler emit contiguous vector loads.
          if (p.stride_w == 1) {
            fold(in_row, offset, 1, row_at, out_row, idx_row, tap_lo_[kw], tap_hi_[kw]);
          } else {
            fold(in_row, offset, p.stride_w, row_at, out_row, idx_row, tap_lo_[kw], tap_hi_[kw]);
          }
        }
      }
    }
  }

 private:
  // out[ow] = max(out[ow], row[ow * step + offset]) by pool_takes, for ow
  // in [lo, hi); row_at is the row's flat position in the plane.
  static inline void fold(const T* row, int64_t offset, int64_t step, int64_t row_at, T* out,
                          int64_t* idx, int64_t lo, int64_t hi) {
    for (int64_t ow = lo; ow < hi; ++ow) {
      const int64_t iw = ow * step + offset;
      const T v = row[iw];
      const bool take = pool_takes(v, out[ow]);
      out[ow] = take ? v : out[ow];
      idx[ow] = take ? row_at + iw : idx[ow];
    }
  }

  const Pool2dParams p_;
  std::vector<int64_t> col_begin_;
  std::vector<int64_t> tap_lo_;
  std::vector<int64_t> tap_hi_;
};

// Outputs along one axis whose window has no in-bounds tap (possible with
// dilation and padding). Their stored index is torch's seed position, which
// lies outside the window, so their gradient is dropped rather than added
// there: no input contributed to them.
std::vector<char> empty_windows(int64_t out_size, int64_t stride, int64_t pad, int64_t kernel, int64_t dilation,
                                int64_t in_size, bool& any) {
  std::vector<char> empty(out_size);
  for (int64_t o = 0; o < out_size; ++o) {
    const PoolSpan span = pool_span(o, stride, pad, kernel, dilation, in_size);
    empty[o] = span.begin >= span.end;
    any = any || empty[o];
  }
  return empty;
}

}  // namespace

template <typename T>
void max_pool2d_forward(const T* input, T* output, int64_t* indices, const Pool2dParams& p) {
  if (p.planes * p.out_plane() == 0) return;
  if (p.is_2x2_stride2()) {
    parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        pool_plane_2x2(input + plane * p.in_plane(), output + plane * p.out_plane(),
                       indices + plane * p.out_plane(), p);
      }
    });
    return;
  }
  const GenericPlanePooler<T> pool(p);
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      pool(input + plane * p.in_plane(), output + plane * p.out_plane(), indices + plane * p.out_plane());
    }
  });
}


// A scatter per plane: each plane belongs to one task, so no two threads
// write the same gradient, and outputs are added in ascending order (the
// order torch uses, and the order the CUDA gather sums in).
template <typename T>
void max_pool2d_backward(const T* grad_output, const int64_t* indices, T* grad_input,
                         const Pool2dParams& p) {
  const int64_t in_plane = p.in_plane();
  const int64_t out_plane = p.out_plane();
  bool any_empty = false;
  const std::vector<char> empty_rows =
      empty_windows(p.out_h, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h, any_empty);
  const std::vector<char> empty_cols =
      empty_windows(p.out_w, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w, any_empty);
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      T* grad = grad_input + plane * in_plane;
      const T* go = grad_output + plane * out_plane;
      const int64_t* idx = indices + plane * out_plane;
      std::fill(grad, grad + in_plane, T(0));
      if (!any_empty) {
        for (int64_t o = 0; o < out_plane; ++o) {
          const int64_t at = idx[o];
          if (at >= 0 && at < in_plane) grad[at] += go[o];
        }
        continue;
      }
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const int64_t o = oh * p.out_w + ow;
          const int64_t at = idx[o];
          if (!empty_rows[oh] && !empty_cols[ow] && at >= 0 && at < in_plane) grad[at] += go[o];
        }
      }
    }
  });
}

template void max_pool2d_forward<float>(const float*, float*, int64_t*, const Pool2dParams&);
template void max_pool2d_forward<double>(const double*, double*, int64_t*, const Pool2dParams&);
template void max_pool2d_backward<float>(const float*, const int64_t*, float*, const Pool2dParams&);
template void max_pool2d_backward<double>(const double*, const int64_t*, double*, const Pool2dParams&);

}  // namespace cpu
}  // namespace fastconv
