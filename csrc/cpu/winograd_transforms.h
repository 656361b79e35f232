// The transforms of Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2015) and of its
// transpose F(3x3, 2x2), which computes the weight gradient:
//
//   forward   Y  = A^T [ (G g G^T) . (B^T d B) ] A      4x4 input tile d -> 2x2 output tile
//   dW        dW = G^T [ (A e A^T) . (B^T d B) ] G      4x4 input tile d, 2x2 dY tile e -> 3x3
//
//   B^T = | 1  0 -1  0 |   G = | 1    0    0  |   A^T = | 1  1  1  0 |
//         | 0  1  1  0 |       | 1/2  1/2  1/2|         | 0  1 -1 -1 |
//         | 0 -1  1  0 |       | 1/2 -1/2  1/2|
//         | 0  1  0 -1 |       | 0    0    1  |
//
// (The dW form follows from the forward one: the trilinear form
// sum e_i g_r d_{i+r} = sum_xi (A e)_xi (G g)_xi (B^T d)_xi, differentiated
// by g.) Every coefficient is 0, +-1 or +-1/2, so the transforms themselves
// round no more than the additions they do. Each function transforms one row
// of tiles at a time, innermost over the tiles, so the loops vectorise; the
// 16 results of a tile go to 16 "points" `point_stride` apart, each point a
// row of consecutive tiles (the B operand of one of the 16 GEMMs). All of
// them are always inlined, so that the loops at the end, run through
// run_widest (csrc/cpu/isa_loops.h), vectorise at the CPU's full width (the
// build's baseline ISA makes them 128 bits wide).
#pragma once

#include <cstdint>

#include "isa_loops.h"

namespace fastconv {
namespace cpu {
namespace winograd {

constexpr int64_t kOutputTile = 2;  // F(2x2, 3x3): a tile is 2x2 outputs ...
constexpr int64_t kInputTile = 4;   // ... read from 4x4 inputs,
constexpr int64_t kPoints = 16;     // ... multiplied in 16 element-wise products.

// B^T d, down the columns of a tile row's four input rows. Outputs are __restrict
// parameters because GCC vectorises the loop only then (not with __restrict
// locals carved from one scratch buffer).
template <typename T>
FASTCONV_LOOP_INLINE void input_columns(const T* d0, const T* d1, const T* d2, const T* d3, int64_t width,
                                        T* __restrict t0, T* __restrict t1, T* __restrict t2, T* __restrict t3) {
  for (int64_t x = 0; x < width; ++x) {
    t0[x] = d0[x] - d2[x];
    t1[x] = d1[x] + d2[x];
    t2[x] = d2[x] - d1[x];
    t3[x] = d1[x] - d3[x];
  }
}

// (B^T d) B along one row t of `tiles` tiles, tile j at columns 2j .. 2j + 3.
template <typename T>
FASTCONV_LOOP_INLINE void input_row(const T* t, int64_t tiles, T* __restrict v0, T* __restrict v1, T* __restrict v2,
                                    T* __restrict v3) {
  for (int64_t j = 0; j < tiles; ++j) {
    const T a = t[2 * j], b = t[2 * j + 1], c = t[2 * j + 2], d = t[2 * j + 3];
    v0[j] = a - c;
    v1[j] = b + c;
    v2[j] = c - b;
    v3[j] = b - d;
  }
}

// Zeroes columns [0, lo) and [hi, width) of `rows` rows of `width` values:
// the columns a tile row reads outside the plane (its padding).
template <typename T>
FASTCONV_LOOP_INLINE void zero_outside(T* rows, int64_t count, int64_t width, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t x = 0; x < lo; ++x) rows[i * width + x] = T(0);
    for (int64_t x = hi; x < width; ++x) rows[i * width + x] = T(0);
  }
}

// B^T d B for `tiles` tiles side by side, tile j at columns 2j .. 2j + 3 of
// the tile row's 2 * tiles + 2 columns, of which only [lo, hi) lie inside the
// plane: rows[i] points at column lo of input row i (or at zeros where the
// row is padding), the columns outside are zeros, so no padded copy of the
// input is needed. `vertical` is 4 rows of 2 * tiles + 2 values, scratch.
template <typename T>
FASTCONV_LOOP_INLINE void transform_input_row(const T* const rows[4], int64_t tiles, int64_t lo, int64_t hi,
                                              T* vertical, T* v, int64_t point_stride) {
  const int64_t width = 2 * tiles + 2;
  zero_outside(vertical, 4, width, lo, hi);
  input_columns(rows[0], rows[1], rows[2], rows[3], hi - lo, vertical + lo, vertical + width + lo,
                vertical + 2 * width + lo, vertical + 3 * width + lo);
  for (int64_t i = 0; i < 4; ++i) {
    T* vi = v + 4 * i * point_stride;
    input_row(vertical + i * width, tiles, vi, vi + point_stride, vi + 2 * point_stride, vi + 3 * point_stride);
  }
}

// A (e) down two rows and along one row, A = [[1, 0], [1, 1], [1, -1], [0, -1]].
template <typename T>
FASTCONV_LOOP_INLINE void grad_output_columns(const T* e0, const T* e1, int64_t width, T* __restrict t0,
                                              T* __restrict t1, T* __restrict t2, T* __restrict t3) {
  for (int64_t x = 0; x < width; ++x) {
    t0[x] = e0[x];
    t1[x] = e0[x] + e1[x];
    t2[x] = e0[x] - e1[x];
    t3[x] = -e1[x];
  }
}

template <typename T>
FASTCONV_LOOP_INLINE void grad_output_row(const T* t, int64_t tiles, T* __restrict e0, T* __restrict e1,
                                          T* __restrict e2, T* __restrict e3) {
  for (int64_t j = 0; j < tiles; ++j) {
    const T a = t[2 * j], b = t[2 * j + 1];
    e0[j] = a;
    e1[j] = a + b;
    e2[j] = a - b;
    e3[j] = -b;
  }
}

// A e A^T for the 2x2 tiles of two rows of dY, 2 * tiles columns of which the
// first `valid` lie inside dY (row0 and row1 point at them, or at zeros past
// dY's last row); the others are taken as zeros.
template <typename T>
FASTCONV_LOOP_INLINE void transform_grad_output_row(const T* row0, const T* row1, int64_t tiles, int64_t valid,
                                                    T* vertical, T* e, int64_t point_stride) {
  const int64_t width = 2 * tiles;
  zero_outside(vertical, 4, width, 0, valid);
  grad_output_columns(row0, row1, valid, vertical, vertical + width, vertical + 2 * width, vertical + 3 * width);
  for (int64_t i = 0; i < 4; ++i) {
    T* ei = e + 4 * i * point_stride;
    grad_output_row(vertical + i * width, tiles, ei, ei + point_stride, ei + 2 * point_stride, ei + 3 * point_stride);
  }
}

// A^T m A for `tiles` tiles: the four outputs of each tile, each into its
// own array (so that every access is contiguous and the loop vectorises),
// bias added.
template <typename T>
FASTCONV_LOOP_INLINE void output_corners(const T* m, int64_t point_stride, int64_t tiles, T bias, T* __restrict y00,
                                         T* __restrict y01, T* __restrict y10, T* __restrict y11) {
  const T *m0 = m, *m1 = m0 + point_stride, *m2 = m1 + point_stride, *m3 = m2 + point_stride;
  const T *m4 = m3 + point_stride, *m5 = m4 + point_stride, *m6 = m5 + point_stride, *m7 = m6 + point_stride;
  const T *m8 = m7 + point_stride, *m9 = m8 + point_stride, *m10 = m9 + point_stride, *m11 = m10 + point_stride;
  const T *m12 = m11 + point_stride, *m13 = m12 + point_stride, *m14 = m13 + point_stride,
          *m15 = m14 + point_stride;
  for (int64_t t = 0; t < tiles; ++t) {
    // A^T m: rows 0 + 1 + 2 and 1 - 2 - 3, in each of the 4 columns
    const T s0 = m0[t] + m4[t] + m8[t], d0 = m4[t] - m8[t] - m12[t];
    const T s1 = m1[t] + m5[t] + m9[t], d1 = m5[t] - m9[t] - m13[t];
    const T s2 = m2[t] + m6[t] + m10[t], d2 = m6[t] - m10[t] - m14[t];
    const T s3 = m3[t] + m7[t] + m11[t], d3 = m7[t] - m11[t] - m15[t];
    y00[t] = bias + (s0 + s1 + s2);  // then (A^T m) A: columns likewise
    y01[t] = bias + (s1 - s2 - s3);
    y10[t] = bias + (d0 + d1 + d2);
    y11[t] = bias + (d1 - d2 - d3);
  }
}

// Interleaves two corner arrays into the first `width` values of an output
// row (2 * tiles, or one less where the last tile overhangs an odd edge):
// row[2t] = left[t], row[2t + 1] = right[t], with torch's ReLU (NaN passes)
// under `relu`.
template <typename T>
FASTCONV_LOOP_INLINE void interleave_row(const T* left, const T* right, int64_t width, bool relu, T* __restrict row) {
  const int64_t pairs = width / 2;
  if (relu) {
    for (int64_t t = 0; t < pairs; ++t) {
      row[2 * t] = left[t] < T(0) ? T(0) : left[t];
      row[2 * t + 1] = right[t] < T(0) ? T(0) : right[t];
    }
  } else {
    for (int64_t t = 0; t < pairs; ++t) {
      row[2 * t] = left[t];
      row[2 * t + 1] = right[t];
    }
  }
  if (width % 2 != 0) row[width - 1] = relu && left[pairs] < T(0) ? T(0) : left[pairs];
}

// A^T m A for `tiles` tiles: the 16 points of GEMM results in, the first
// `width` values of two output rows out (out0, and out1 unless it is null:
// the last row of an odd height), bias added and, with `relu`, ReLU applied.
// Written in place, so an odd edge costs no copy. `corners` is 4 * tiles of
// scratch.
template <typename T>
FASTCONV_LOOP_INLINE void transform_output_row(const T* m, int64_t point_stride, int64_t tiles, T bias, bool relu,
                                               T* corners, int64_t width, T* out0, T* out1) {
  output_corners(m, point_stride, tiles, bias, corners, corners + tiles, corners + 2 * tiles, corners + 3 * tiles);
  interleave_row(corners, corners + tiles, width, relu, out0);
  if (out1 != nullptr) interleave_row(corners + 2 * tiles, corners + 3 * tiles, width, relu, out1);
}

// G g G^T of `count` filters given tap by tap: taps[t * tap_stride + f] is
// tap t (row-major 3x3) of filter f; into points[point][f]. Tap-major, so
// that the loop reads and writes contiguous rows and vectorises across
// filters (a filter's own 9 taps would be strided loads, gathers at full
// width). Written out with no local arrays and with `ivdep`: with a 4x3
// array of G g and nested loops GCC kept the loop scalar, which at batch 1
// made the filter transform a quarter of a 128 -> 128 forward's time.
template <typename T>
FASTCONV_LOOP_INLINE void transform_filters(const T* taps, int64_t tap_stride, int64_t count, T* const* points) {
  const T half = T(0.5);
  const T *t0 = taps, *t1 = t0 + tap_stride, *t2 = t1 + tap_stride, *t3 = t2 + tap_stride, *t4 = t3 + tap_stride;
  const T *t5 = t4 + tap_stride, *t6 = t5 + tap_stride, *t7 = t6 + tap_stride, *t8 = t7 + tap_stride;
  T* u[16];
  for (int p = 0; p < 16; ++p) u[p] = points[p];
  // One row i of G g, (G g) G^T along it: points 4 i .. 4 i + 3.
  const auto row = [&](int i, int64_t f, T a, T b, T c) FASTCONV_LAMBDA_INLINE {
    u[4 * i][f] = a;
    u[4 * i + 1][f] = half * (a + b + c);
    u[4 * i + 2][f] = half * (a - b + c);
    u[4 * i + 3][f] = c;
  };
#pragma GCC ivdep
  for (int64_t f = 0; f < count; ++f) {
    const T g00 = t0[f], g01 = t1[f], g02 = t2[f], g20 = t6[f], g21 = t7[f], g22 = t8[f];
    const T s0 = g00 + g20, s1 = g01 + g21, s2 = g02 + g22;  // G's middle rows: (g0 +- g1 + g2) / 2
    const T m0 = t3[f], m1 = t4[f], m2 = t5[f];
    row(0, f, g00, g01, g02);
    row(1, f, half * (s0 + m0), half * (s1 + m1), half * (s2 + m2));
    row(2, f, half * (s0 - m0), half * (s1 - m1), half * (s2 - m2));
    row(3, f, g20, g21, g22);
  }
}

// G^T m G of `count` filters' 16 summed products, m[point * point_stride +
// f], into their 3x3 gradients, tap-major: taps[t * tap_stride + f] (the
// caller scatters them into dW's filter-major layout). G^T = [[1, 1/2, 1/2,
// 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]]. Tap-major and written out like
// transform_filters so the loop vectorises across filters: filter by filter,
// into dW's 9 consecutive taps, it stayed scalar and took a quarter of a 512
// -> 512 weight gradient's time at batch 1.
template <typename T>
FASTCONV_LOOP_INLINE void transform_weight_gradients(const T* m, int64_t point_stride, int64_t count, T* taps,
                                                     int64_t tap_stride) {
  const T half = T(0.5);
  // Column j of G^T m: rows r0, r1, r2.
  const auto column = [&](int j, int64_t f, T& r0, T& r1, T& r2) FASTCONV_LAMBDA_INLINE {
    const T m0 = m[j * point_stride + f], m1 = m[(4 + j) * point_stride + f], m2 = m[(8 + j) * point_stride + f],
            m3 = m[(12 + j) * point_stride + f];
    const T s = half * (m1 + m2);
    r0 = m0 + s;
    r1 = half * (m1 - m2);
    r2 = s + m3;
  };
  // Row i of (G^T m) G: taps 3 i .. 3 i + 2.
  const auto row = [&](int i, int64_t f, T a, T b, T c, T d) FASTCONV_LAMBDA_INLINE {
    const T s = half * (b + c);
    taps[3 * i * tap_stride + f] = a + s;
    taps[(3 * i + 1) * tap_stride + f] = half * (b - c);
    taps[(3 * i + 2) * tap_stride + f] = s + d;
  };
#pragma GCC ivdep
  for (int64_t f = 0; f < count; ++f) {
    T r00, r10, r20, r01, r11, r21, r02, r12, r22, r03, r13, r23;
    column(0, f, r00, r10, r20);
    column(1, f, r01, r11, r21);
    column(2, f, r02, r12, r22);
    column(3, f, r03, r13, r23);
    row(0, f, r00, r01, r02, r03);
    row(1, f, r10, r11, r12, r13);
    row(2, f, r20, r21, r22, r23);
  }
}

// The transforms as loops for run_widest. Measured interleaved with torch on
// one thread (convnet4's layers, batch 16), the output and filter transforms
// gain from the full width; the input and dY transforms, whose stride-2 loads
// the compiler turns into permutes, ran no faster or slower there (the input
// gradient of 32->64 @74 took 5% longer), so they run at the baseline width.
struct OutputRow {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* m, int64_t point_stride, int64_t tiles, T bias, bool relu, T* corners,
                                       int64_t width, T* out0, T* out1) {
    transform_output_row(m, point_stride, tiles, bias, relu, corners, width, out0, out1);
  }
};

struct Filters {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* taps, int64_t tap_stride, int64_t count, T* const* points) {
    transform_filters(taps, tap_stride, count, points);
  }
};

struct WeightGradients {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* m, int64_t point_stride, int64_t count, T* taps, int64_t tap_stride) {
    transform_weight_gradients(m, point_stride, count, taps, tap_stride);
  }
};

}  // namespace winograd
}  // namespace cpu
}  // namespace fastconv
