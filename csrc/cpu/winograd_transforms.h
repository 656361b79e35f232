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
// row of consecutive tiles (the B operand of one of the 16 GEMMs).
#pragma once

#include <cstdint>

namespace fastconv {
namespace cpu {
namespace winograd {

constexpr int64_t kOutputTile = 2;  // F(2x2, 3x3): a tile is 2x2 outputs ...
constexpr int64_t kInputTile = 4;   // ... read from 4x4 inputs,
constexpr int64_t kPoints = 16;     // ... multiplied in 16 element-wise products.

// B^T d B for `tiles` tiles side by side: rows[i] holds input row i of the
// tile row, 2 * tiles + 2 values (zeros where the image is padded); tile j
// starts at column 2j. `vertical` is 4 rows of the same width, scratch.
template <typename T>
void transform_input_row(const T* const rows[4], int64_t tiles, T* vertical, T* v, int64_t point_stride) {
  const int64_t width = 2 * tiles + 2;
  T* t0 = vertical;
  T* t1 = vertical + width;
  T* t2 = vertical + 2 * width;
  T* t3 = vertical + 3 * width;
  for (int64_t x = 0; x < width; ++x) {  // B^T d: columns of the four rows
    const T d0 = rows[0][x], d1 = rows[1][x], d2 = rows[2][x], d3 = rows[3][x];
    t0[x] = d0 - d2;
    t1[x] = d1 + d2;
    t2[x] = d2 - d1;
    t3[x] = d1 - d3;
  }
  for (int64_t i = 0; i < 4; ++i) {  // (B^T d) B: along each row
    const T* t = vertical + i * width;
    T* v0 = v + (4 * i + 0) * point_stride;
    T* v1 = v + (4 * i + 1) * point_stride;
    T* v2 = v + (4 * i + 2) * point_stride;
    T* v3 = v + (4 * i + 3) * point_stride;
    for (int64_t j = 0; j < tiles; ++j) {
      const T a = t[2 * j], b = t[2 * j + 1], c = t[2 * j + 2], d = t[2 * j + 3];
      v0[j] = a - c;
      v1[j] = b + c;
      v2[j] = c - b;
      v3[j] = b - d;
    }
  }
}

// A e A^T for the 2x2 tiles of two rows of dY (2 * tiles values each, zeros
// past the output's edge): A = [[1, 0], [1, 1], [1, -1], [0, -1]].
template <typename T>
void transform_grad_output_row(const T* row0, const T* row1, int64_t tiles, T* vertical, T* e,
                               int64_t point_stride) {
  const int64_t width = 2 * tiles;
  T* t0 = vertical;
  T* t1 = vertical + width;
  T* t2 = vertical + 2 * width;
  T* t3 = vertical + 3 * width;
  for (int64_t x = 0; x < width; ++x) {
    const T a = row0[x], b = row1[x];
    t0[x] = a;
    t1[x] = a + b;
    t2[x] = a - b;
    t3[x] = -b;
  }
  for (int64_t i = 0; i < 4; ++i) {
    const T* t = vertical + i * width;
    T* e0 = e + (4 * i + 0) * point_stride;
    T* e1 = e + (4 * i + 1) * point_stride;
    T* e2 = e + (4 * i + 2) * point_stride;
    T* e3 = e + (4 * i + 3) * point_stride;
    for (int64_t j = 0; j < tiles; ++j) {
      const T a = t[2 * j], b = t[2 * j + 1];
      e0[j] = a;
      e1[j] = a + b;
      e2[j] = a - b;
      e3[j] = -b;
    }
  }
}

// A^T m A for `tiles` tiles: the 16 points of GEMM results in, two output
// rows of 2 * tiles values out (out0, out1), bias added and, with `relu`,
// torch's ReLU (NaN passes) applied.
template <typename T>
void transform_output_row(const T* m, int64_t point_stride, int64_t tiles, T bias, bool relu, T* out0, T* out1) {
  const auto point = [&](int64_t i, int64_t j) { return m + (4 * i + j) * point_stride; };
  const auto activate = [relu](T y) { return relu && y < T(0) ? T(0) : y; };
  for (int64_t t = 0; t < tiles; ++t) {
    T s[4], d[4];
    for (int64_t j = 0; j < 4; ++j) {  // A^T m: rows 0 + 1 + 2 and 1 - 2 - 3
      const T m0 = point(0, j)[t], m1 = point(1, j)[t], m2 = point(2, j)[t], m3 = point(3, j)[t];
      s[j] = m0 + m1 + m2;
      d[j] = m1 - m2 - m3;
    }
    out0[2 * t] = activate(bias + (s[0] + s[1] + s[2]));
    out0[2 * t + 1] = activate(bias + (s[1] - s[2] - s[3]));
    out1[2 * t] = activate(bias + (d[0] + d[1] + d[2]));
    out1[2 * t + 1] = activate(bias + (d[1] - d[2] - d[3]));
  }
}

// G g G^T of one 3x3 filter (row-major, rotated by 180 degrees with
// `rotate`), into u[point * point_stride].
template <typename T>
void transform_filter(const T* g, bool rotate, T* u, int64_t point_stride) {
  T f[3][3];
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s) f[r][s] = rotate ? g[(2 - r) * 3 + (2 - s)] : g[r * 3 + s];
  const T half = T(0.5);
  T gg[4][3];  // G g
  for (int s = 0; s < 3; ++s) {
    gg[0][s] = f[0][s];
    gg[1][s] = half * (f[0][s] + f[1][s] + f[2][s]);
    gg[2][s] = half * (f[0][s] - f[1][s] + f[2][s]);
    gg[3][s] = f[2][s];
  }
  for (int i = 0; i < 4; ++i) {  // (G g) G^T
    u[(4 * i + 0) * point_stride] = gg[i][0];
    u[(4 * i + 1) * point_stride] = half * (gg[i][0] + gg[i][1] + gg[i][2]);
    u[(4 * i + 2) * point_stride] = half * (gg[i][0] - gg[i][1] + gg[i][2]);
    u[(4 * i + 3) * point_stride] = gg[i][2];
  }
}

// G^T m G of one filter's 16 summed products (m[point * point_stride]) into
// its 3x3 gradient: G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]].
template <typename T>
void transform_weight_gradient(const T* m, int64_t point_stride, T* dw) {
  const T half = T(0.5);
  T r[3][4];  // G^T m
  for (int j = 0; j < 4; ++j) {
    const T m0 = m[j * point_stride], m1 = m[(4 + j) * point_stride], m2 = m[(8 + j) * point_stride],
            m3 = m[(12 + j) * point_stride];
    r[0][j] = m0 + half * (m1 + m2);
    r[1][j] = half * (m1 - m2);
    r[2][j] = half * (m1 + m2) + m3;
  }
  for (int i = 0; i < 3; ++i) {  // (G^T m) G
    dw[i * 3 + 0] = r[i][0] + half * (r[i][1] + r[i][2]);
    dw[i * 3 + 1] = half * (r[i][1] - r[i][2]);
    dw[i * 3 + 2] = half * (r[i][1] + r[i][2]) + r[i][3];
  }
}

}  // namespace winograd
}  // namespace cpu
}  // namespace fastconv
