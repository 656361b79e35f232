#include "max_pool2d.h"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "isa_loops.h"
#include "parallel.h"

namespace fastconv {
namespace cpu {
namespace {

// Planes per task: enough that a task touches ~kElementwiseGrain inputs.
int64_t plane_grain(const Pool2dParams& p) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, p.in_pixels()));
}

// The maximum of one 2x2 window by pool_takes, in the generic kernel's scan
// order (top-left, top-right, bottom-left, bottom-right), with branch-free
// selects; `at` is the winner's offset from the top-left (0, 1, w or w + 1:
// with w = 2, its tap).
// Output rows shorter than this (a vector of floats) take the short-row kernel.
constexpr int64_t kShortRow = 16;

template <typename T>
FASTCONV_LOOP_INLINE T window_max(T tl, T tr, T bl, T br, int32_t w, int32_t& at) {
  T best = tl;
  at = 0;
  const bool take_tr = pool_takes(tr, best);
  best = take_tr ? tr : best;
  at = take_tr ? 1 : at;
  const bool take_bl = pool_takes(bl, best);
  best = take_bl ? bl : best;
  at = take_bl ? w : at;
  const bool take_br = pool_takes(br, best);
  best = take_br ? br : best;
  at = take_br ? w + 1 : at;
  return best;
}

// A 2x2 window's tap (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)
// as its offset from the top-left in a plane of width w: 0, 1, w or w + 1.
template <typename I>
FASTCONV_LOOP_INLINE I offset_of_tap_2x2(int32_t tap, I w) {
  return (tap & 1) + ((tap & 2) != 0 ? w : 0);
}

// Where the 2x2 kernels put each window's winner, given its tap (0 top-left,
// 1 top-right, 2 bottom-left, 3 bottom-right) for outputs first .. first +
// count - 1 of output row oh: its int64 index in the plane, or the tap itself.
struct IndexSink {
  int64_t* indices;
  FASTCONV_LOOP_INLINE void put(int64_t oh, int64_t first, int64_t count, const int32_t* tap,
                                const Pool2dParams& p) const {
    int64_t* __restrict__ row = indices + oh * p.out_w + first;
    const int64_t corner = 2 * oh * p.in_w + 2 * first, w = p.in_w;
    for (int64_t j = 0; j < count; ++j) row[j] = corner + 2 * j + offset_of_tap_2x2(tap[j], w);
  }
};

struct TapSink {
  uint8_t* taps;
  FASTCONV_LOOP_INLINE void put(int64_t oh, int64_t first, int64_t count, const int32_t* tap,
                                const Pool2dParams& p) const {
    uint8_t* __restrict__ row = taps + oh * p.out_w + first;
    for (int64_t j = 0; j < count; ++j) row[j] = static_cast<uint8_t>(tap[j]);
  }
};

// 2x2 windows at stride 2, in two vectorisable passes per chunk of a row:
// the maxima with branch-free selects (pool_takes, in the generic kernel's
// scan order: top-left, top-right, bottom-left, bottom-right), recording each
// winner's int32 tap; then the taps handed to the sink (widened to int64
// indices, or narrowed to bytes). Keeping the first pass free of int64 lets
// the compiler vectorise it (a mixed float/int64 loop stays scalar and
// mispredicts).
template <typename T, typename Sink>
FASTCONV_LOOP_INLINE void pool_plane_2x2(const T* in, T* out, const Sink& sink, const Pool2dParams& p) {
  constexpr int64_t kChunk = 256;
  int32_t tap[kChunk];
  const int64_t w = p.in_w;
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const T* __restrict__ top = in + 2 * oh * w;
    const T* __restrict__ bottom = top + w;
    T* __restrict__ out_row = out + oh * p.out_w;
    for (int64_t first = 0; first < p.out_w; first += kChunk) {
      const int64_t count = std::min(kChunk, p.out_w - first);
      const T* __restrict__ t = top + 2 * first;
      const T* __restrict__ b = bottom + 2 * first;
      T* __restrict__ o = out_row + first;
      for (int64_t j = 0; j < count; ++j) o[j] = window_max(t[2 * j], t[2 * j + 1], b[2 * j], b[2 * j + 1], 2, tap[j]);
      sink.put(oh, first, count, tap, p);
    }
  }
}

// 2x2 windows at stride 2 on planes whose rows are too short to fill a
// vector (the 15x15 maps of the seed CNNs: 7 outputs a row, which left the
// row kernel in its scalar remainder loop, branching on every compare). The
// windows' columns of several row pairs are first copied end to end into
// two small buffers (tops and bottoms), so that one vectorised loop covers
// the windows of all those rows; the sink takes the taps row by row after it.
template <typename T, typename Sink>
FASTCONV_LOOP_INLINE void pool_plane_2x2_short_rows(const T* in, T* out, const Sink& sink, const Pool2dParams& p) {
  constexpr int64_t kChunk = 256;  // outputs per chunk: whole rows of fewer than 16
  T tops[2 * kChunk], bottoms[2 * kChunk];
  int32_t tap[kChunk];
  const int64_t w = p.in_w, ow_count = p.out_w;
  const int64_t rows_per_chunk = kChunk / ow_count;
  for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += rows_per_chunk) {
    const int64_t rows = std::min(rows_per_chunk, p.out_h - oh0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* top = in + 2 * (oh0 + r) * w;
      std::copy(top, top + 2 * ow_count, tops + 2 * r * ow_count);
      std::copy(top + w, top + w + 2 * ow_count, bottoms + 2 * r * ow_count);
    }
    const int64_t count = rows * ow_count;
    T* __restrict__ o = out + oh0 * ow_count;
    for (int64_t j = 0; j < count; ++j) {
      o[j] = window_max(tops[2 * j], tops[2 * j + 1], bottoms[2 * j], bottoms[2 * j + 1], 2, tap[j]);
    }
    for (int64_t r = 0; r < rows; ++r) sink.put(oh0 + r, 0, ow_count, tap + r * ow_count, p);
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
      col_begin_[ow] = taps_inside(ow, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w).begin;
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
    // Positions fit in int32 for all but enormous planes; an all-float/int32
    // fold vectorises, one that mixes in int64 does not.
    if (p_.in_pixels() < (int64_t{1} << 31)) {
      pool<int32_t>(in, out, idx);
    } else {
      pool<int64_t>(in, out, idx);
    }
  }

 private:
  template <typename Index>
  void pool(const T* in, T* out, int64_t* idx) const {
    const Pool2dParams& p = p_;
    std::vector<Index> positions(p.out_w);
    Index* pos = positions.data();
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const IndexRange rows = taps_inside(oh, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h);
      T* out_row = out + oh * p.out_w;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        out_row[ow] = -std::numeric_limits<T>::infinity();
        pos[ow] = static_cast<Index>(rows.begin * p.in_w + col_begin_[ow]);
      }
      for (int64_t ih = rows.begin; ih < rows.end; ih += p.dilation_h) {
        const T* in_row = in + ih * p.in_w;
        const auto row_at = static_cast<Index>(ih * p.in_w);
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const auto offset = static_cast<Index>(kw * p.dilation_w - p.pad_w);
          // A literal step 1 lets the compiler emit contiguous vector loads.
          if (p.stride_w == 1) {
            fold<Index>(in_row, offset, 1, row_at, out_row, pos, tap_lo_[kw], tap_hi_[kw]);
          } else {
            fold<Index>(in_row, offset, static_cast<Index>(p.stride_w), row_at, out_row, pos, tap_lo_[kw],
                        tap_hi_[kw]);
          }
        }
      }
      int64_t* idx_row = idx + oh * p.out_w;
      for (int64_t ow = 0; ow < p.out_w; ++ow) idx_row[ow] = pos[ow];
    }
  }

  // out[ow] = max(out[ow], row[ow * step + offset]) by pool_takes, for ow
  // in [lo, hi); row_at is the row's flat position in the plane.
  template <typename Index>
  static inline void fold(const T* __restrict__ row, Index offset, Index step, Index row_at, T* __restrict__ out,
                          Index* __restrict__ pos, int64_t lo, int64_t hi) {
    for (Index ow = static_cast<Index>(lo); ow < static_cast<Index>(hi); ++ow) {
      const Index iw = ow * step + offset;
      const T v = row[iw];
      const bool take = pool_takes(v, out[ow]);
      out[ow] = take ? v : out[ow];
      pos[ow] = take ? row_at + iw : pos[ow];
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
    const IndexRange span = taps_inside(o, stride, pad, kernel, dilation, in_size);
    empty[o] = span.begin >= span.end;
    any = any || empty[o];
  }
  return empty;
}

// The gradients of one 2x2 window's four inputs: g at the winner's offset
// from the top-left (0, 1, w or w + 1; -1: none) and 0 elsewhere. (Compared
// with the run-time w: against the constants 0-3, GCC turned the selects into
// jumps, and the loop ran 8x slower. Returned by value: stores through
// references hid the row's __restrict__ from GCC, and the loop stopped
// vectorising.)
template <typename T>
struct WindowGrad {
  T tl, tr, bl, br;
};

template <typename T>
FASTCONV_LOOP_INLINE WindowGrad<T> window_grad(T g, int32_t offset, int32_t w) {
  g = g + T(0);  // a -0.0 gradient becomes +0.0, as torch's zero fill + add makes it
  return {offset == 0 ? g : T(0), offset == 1 ? g : T(0), offset == w ? g : T(0), offset == w + 1 ? g : T(0)};
}

// The winner's offset from the top-left of a 2x2 window at `corner` (0, 1, w
// or w + 1; -1 for none), from what the forward stored: an index, or a tap.
FASTCONV_LOOP_INLINE int32_t stored_offset(int64_t index, int64_t corner, int64_t w) {
  const int64_t offset = index - corner;
  return offset >= 0 && offset <= w + 1 ? static_cast<int32_t>(offset) : -1;
}
FASTCONV_LOOP_INLINE int32_t stored_offset(uint8_t tap, int64_t, int64_t w) {
  const auto w32 = static_cast<int32_t>(w);
  return tap < 4 ? offset_of_tap_2x2(tap, w32) : -1;
}

// The winners' offsets of `count` consecutive windows of one row pair, the
// first at `corner` (taps need no corner).
template <typename Stored>
FASTCONV_LOOP_INLINE void window_offsets(const Stored* __restrict__ stored, int64_t count, int64_t corner, int64_t w,
                                         int32_t* __restrict__ offsets) {
  for (int64_t j = 0; j < count; ++j) offsets[j] = stored_offset(stored[j], corner + 2 * j, w);
}

// Backward of 2x2 / stride 2 pooling: the windows tile the input without
// overlap, so every input element gets the gradient of its one window or
// zero. Written in one streaming pass (no zero fill, no scattered adds), in
// two loops per chunk of a row: the winners' int32 offsets, then four selects
// per window on float/int32 lanes, which the compiler vectorises (selects on
// int64 indices become mispredicted jumps). The rows and the column left
// over by an odd size belong to no window. `Stored` is int64_t (indices) or
// uint8_t (taps).
template <typename T, typename Stored>
FASTCONV_LOOP_INLINE void unpool_plane_2x2(const T* grad_output, const Stored* stored, T* grad,
                                           const Pool2dParams& p) {
  constexpr int64_t kChunk = 256;
  int32_t offsets[kChunk];
  const int64_t w = p.in_w;
  const auto w32 = static_cast<int32_t>(w);
  // Taps give offsets without their window's position, so the taps of
  // several short rows convert in one loop (one row's 17 bytes would leave a
  // loop over bytes in its scalar remainder); indices convert chunk by chunk.
  const bool whole_rows = std::is_same_v<Stored, uint8_t> && p.out_w < kChunk;
  const int64_t rows_per_pass = whole_rows ? kChunk / p.out_w : 1;
  for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += rows_per_pass) {
    const int64_t rows = std::min(rows_per_pass, p.out_h - oh0);
    if (whole_rows) window_offsets(stored + oh0 * p.out_w, rows * p.out_w, 0, w, offsets);
    for (int64_t oh = oh0; oh < oh0 + rows; ++oh) {
      T* top = grad + 2 * oh * w;
      T* bottom = top + w;
      for (int64_t first = 0; first < p.out_w; first += kChunk) {
        const int64_t count = std::min(kChunk, p.out_w - first);
        if (!whole_rows) window_offsets(stored + oh * p.out_w + first, count, 2 * oh * w + 2 * first, w, offsets);
        const int32_t* __restrict__ offset = whole_rows ? offsets + (oh - oh0) * p.out_w : offsets;
        const T* __restrict__ go = grad_output + oh * p.out_w + first;
        T* __restrict__ t = top + 2 * first;
        T* __restrict__ b = bottom + 2 * first;
        for (int64_t j = 0; j < count; ++j) {
          const WindowGrad<T> q = window_grad(go[j], offset[j], w32);
          t[2 * j] = q.tl;
          t[2 * j + 1] = q.tr;
          b[2 * j] = q.bl;
          b[2 * j + 1] = q.br;
        }
      }
      for (int64_t iw = 2 * p.out_w; iw < w; ++iw) top[iw] = bottom[iw] = T(0);
    }
  }
  std::fill(grad + 2 * p.out_h * w, grad + p.in_pixels(), T(0));
}

// The sink of the forward's 2x2 kernels for what they store (Stored).
template <typename Stored>
using SinkFor = std::conditional_t<std::is_same_v<Stored, uint8_t>, TapSink, IndexSink>;

// Planes [begin, end) of the 2x2 kernels, compiled for the CPU's widest
// vectors by run_widest (the strided loads and selects gain most from them).
template <typename T, typename Stored>
struct Pool2x2Planes {
  static FASTCONV_LOOP_INLINE void run(const T* input, T* output, Stored* stored, const Pool2dParams* p,
                                       int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* in = input + plane * p->in_pixels();
      T* out = output + plane * p->out_pixels();
      const SinkFor<Stored> sink{stored + plane * p->out_pixels()};
      if (p->out_w < kShortRow) {
        pool_plane_2x2_short_rows(in, out, sink, *p);
      } else {
        pool_plane_2x2(in, out, sink, *p);
      }
    }
  }
};

template <typename T, typename Stored>
struct Unpool2x2Planes {
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const Stored* stored, T* grad_input,
                                       const Pool2dParams* p, int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      unpool_plane_2x2(grad_output + plane * p->out_pixels(), stored + plane * p->out_pixels(),
                       grad_input + plane * p->in_pixels(), *p);
    }
  }
};

// int32 taps and offsets within a row pair need in_w + 2 * kChunk < 2^31.
bool runs_2x2_kernels(const Pool2dParams& p) { return p.is_2x2_stride2() && p.in_w < (int64_t{1} << 30); }

template <typename T, typename Stored>
void pool_2x2(const T* input, T* output, Stored* stored, const Pool2dParams& p) {
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    run_widest<Pool2x2Planes<T, Stored>>(input, output, stored, &p, begin, end);
  });
}

template <typename T, typename Stored>
void unpool_2x2(const T* grad_output, const Stored* stored, T* grad_input, const Pool2dParams& p) {
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    run_widest<Unpool2x2Planes<T, Stored>>(grad_output, stored, grad_input, &p, begin, end);
  });
}

// The windows of each axis with no in-bounds tap (empty_windows), for
// generic geometries.
struct EmptyWindows {
  bool any = false;  // first: the constructors of rows and cols set it
  std::vector<char> rows, cols;
  explicit EmptyWindows(const Pool2dParams& p)
      : rows(empty_windows(p.out_h, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h, p.in_h, any)),
        cols(empty_windows(p.out_w, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w, p.in_w, any)) {}
};

// One plane's taps from the generic kernel's indices: each window's maximum
// lies inside it, at a whole number of dilations from its first tap.
void taps_of_indices(const int64_t* idx, uint8_t* taps, const Pool2dParams& p, const EmptyWindows& empty) {
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const int64_t o = oh * p.out_w + ow;
      if (empty.rows[oh] || empty.cols[ow]) {
        taps[o] = kNoTap;
        continue;
      }
      const int64_t kh = (idx[o] / p.in_w - (oh * p.stride_h - p.pad_h)) / p.dilation_h;
      const int64_t kw = (idx[o] % p.in_w - (ow * p.stride_w - p.pad_w)) / p.dilation_w;
      taps[o] = static_cast<uint8_t>(kh * p.kernel_w + kw);
    }
  }
}

}  // namespace

template <typename T>
void max_pool2d_forward(Target, const T* input, T* output, int64_t* indices, const Pool2dParams& p) {
  if (p.planes * p.out_pixels() == 0) return;
  if (runs_2x2_kernels(p)) return pool_2x2(input, output, indices, p);
  const GenericPlanePooler<T> pool(p);
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      pool(input + plane * p.in_pixels(), output + plane * p.out_pixels(), indices + plane * p.out_pixels());
    }
  });
}

template <typename T>
void max_pool2d_forward_taps(Target, const T* input, T* output, uint8_t* taps, const Pool2dParams& p) {
  if (p.planes * p.out_pixels() == 0) return;
  if (runs_2x2_kernels(p)) return pool_2x2(input, output, taps, p);
  // Other geometries pool by index, one plane's worth at a time, and keep the taps.
  const GenericPlanePooler<T> pool(p);
  const EmptyWindows empty(p);
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> indices(p.out_pixels());
    for (int64_t plane = begin; plane < end; ++plane) {
      pool(input + plane * p.in_pixels(), output + plane * p.out_pixels(), indices.data());
      taps_of_indices(indices.data(), taps + plane * p.out_pixels(), p, empty);
    }
  });
}

// A scatter per plane: each plane belongs to one task, so no two threads
// write the same gradient, and outputs are added in ascending order (the
// order torch uses, and the order the CUDA gather sums in).
template <typename T>
void max_pool2d_backward(Target, const T* grad_output, const int64_t* indices, T* grad_input,
                         const Pool2dParams& p) {
  // Streaming pays off on rows long enough to fill vectors; short rows
  // (the 15x15 maps of the seed CNN) are faster as fill + scatter (measured:
  // a short-row layout like the forward's was 1.6-3x slower here).
  if (runs_2x2_kernels(p) && p.out_w >= kShortRow) return unpool_2x2(grad_output, indices, grad_input, p);
  const int64_t in_plane = p.in_pixels();
  const int64_t out_plane = p.out_pixels();
  const EmptyWindows empty(p);
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      T* grad = grad_input + plane * in_plane;
      const T* go = grad_output + plane * out_plane;
      const int64_t* idx = indices + plane * out_plane;
      std::fill(grad, grad + in_plane, T(0));
      if (!empty.any) {
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
          if (!empty.rows[oh] && !empty.cols[ow] && at >= 0 && at < in_plane) grad[at] += go[o];
        }
      }
    }
  });
}

// As max_pool2d_backward, from taps: a tap names an input by its window, so
// a stored value can only reach an input inside the plane (kNoTap and taps
// past the window reach none). Long rows of 2x2 windows stream; the rest is a
// zero fill and a scatter, each tap's row and column offsets looked up (no
// division per output).
template <typename T>
void max_pool2d_backward_from_taps(Target, const T* grad_output, const uint8_t* taps, T* grad_input,
                                   const Pool2dParams& p) {
  if (runs_2x2_kernels(p) && p.out_w >= kShortRow) return unpool_2x2(grad_output, taps, grad_input, p);
  // Row and column offsets of every byte value from its window's first tap;
  // values that are no tap point far outside the plane.
  constexpr int64_t kOutside = int64_t{1} << 62;
  std::vector<int64_t> tap_row(256, kOutside), tap_col(256, 0);
  for (int64_t t = 0; t < p.kernel_h * p.kernel_w; ++t) {
    tap_row[t] = t / p.kernel_w * p.dilation_h;
    tap_col[t] = t % p.kernel_w * p.dilation_w;
  }
  parallel_chunks(p.planes, plane_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      T* grad = grad_input + plane * p.in_pixels();
      const T* go = grad_output + plane * p.out_pixels();
      const uint8_t* tap = taps + plane * p.out_pixels();
      std::fill(grad, grad + p.in_pixels(), T(0));
      if (p.is_2x2_stride2()) {  // the short rows of the seed CNNs' pooling: every window inside
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            const int64_t o = oh * p.out_w + ow;
            // Branch-free: a stray tap adds zero inside its own window, which no other output writes.
            const T g = tap[o] < 4 ? go[o] : T(0);
            grad[(2 * oh + ((tap[o] >> 1) & 1)) * p.in_w + 2 * ow + (tap[o] & 1)] += g;
          }
        }
        continue;
      }
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const int64_t o = oh * p.out_w + ow;
          const int64_t ih = oh * p.stride_h - p.pad_h + tap_row[tap[o]];
          const int64_t iw = ow * p.stride_w - p.pad_w + tap_col[tap[o]];
          if (ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w) grad[ih * p.in_w + iw] += go[o];
        }
      }
    }
  });
}

template void max_pool2d_forward<float>(Target, const float*, float*, int64_t*, const Pool2dParams&);
template void max_pool2d_forward<double>(Target, const double*, double*, int64_t*, const Pool2dParams&);
template void max_pool2d_backward<float>(Target, const float*, const int64_t*, float*, const Pool2dParams&);
template void max_pool2d_backward<double>(Target, const double*, const int64_t*, double*, const Pool2dParams&);
template void max_pool2d_forward_taps<float>(Target, const float*, float*, uint8_t*, const Pool2dParams&);
template void max_pool2d_forward_taps<double>(Target, const double*, double*, uint8_t*, const Pool2dParams&);
template void max_pool2d_backward_from_taps<float>(Target, const float*, const uint8_t*, float*,
                                                   const Pool2dParams&);
template void max_pool2d_backward_from_taps<double>(Target, const double*, const uint8_t*, double*,
                                                    const Pool2dParams&);

}  // namespace cpu
}  // namespace fastconv
