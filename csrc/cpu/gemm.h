// Our own single-threaded, cache-blocked GEMM for the im2col convolution:
// C = (accumulate ? C : row bias or 0) + A * B, where every matrix is addressed through a
// row and a column stride, so transposed operands cost nothing extra (the
// packing step reads them in whatever order they are stored). Callers
// parallelise above it (over images and blocks of their output pixels, or
// ranges of output channels); only packing a whole A (PackedA) runs on every
// thread.
#pragma once

#include <cstdint>

#include "scratch.h"

namespace fastconv {
namespace cpu {

// Column counts that are multiples of this fill whole micro-kernel tiles
// (for every element type), so a caller that cuts N into such blocks keeps
// partial tiles to its last block.
constexpr int64_t kGemmColumnAlignment = 32;

// Rows of the selected micro-kernel's tile (cpu_isa.h): a caller that cuts M
// into ranges of whole tiles pads only its last range.
template <typename T>
int64_t gemm_tile_rows();

// Columns of C the micro-kernels compute for n: whole tiles, and a last
// partial one as a half-width tile where it fits (a caller weighing ways to
// cut its columns counts these).
template <typename T>
int64_t gemm_computed_columns(int64_t n);

template <typename T>
struct MatrixRef {
  T* data;
  int64_t row_stride;
  int64_t col_stride;
  T& at(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
};

// One panel of a PackedA: rows row0 .. row0 + panel_rows() - 1 of columns
// col0 .. col0 + cols - 1 (one K block), element (row0 + r, col0 + j) at
// data() + offset + j * panel_rows() + r. Rows past the matrix's are zeros.
struct PackedPanel {
  int64_t row0, col0, cols, offset;
};

// A, packed once into the selected micro-kernel's panel layout, for many GEMMs that
// share it: a convolution's weights, for every image and column block.
// Read-only once built, so threads can share one. A large A is packed on
// every thread (serially when built inside a parallel region). The micro-kernel follows
// cpu_isa() (cpu_isa.h), and each has its own tile shape, so data packed here
// is only good for the process that packed it.
template <typename T>
class PackedA {
 public:
  // An empty matrix, to be assigned: a vector of them can be sized first
  // and its elements packed afterwards, in parallel or in any order.
  PackedA() : m_(0), k_(0) {}
  PackedA(int64_t m, int64_t k, MatrixRef<const T> a);
  // Unpacked, in the caller's `memory` (elements(m, k) of them, kept alive
  // as long as this), for a caller that writes the layout itself, panel by
  // panel: the Winograd filter transform, whose 16 matrices share one
  // allocation (16 of their own, under the output cache's 2 MiB, were
  // faulted in afresh on every call).
  PackedA(int64_t m, int64_t k, T* memory) : m_(m), k_(k), data_(memory) {}
  static int64_t elements(int64_t m, int64_t k);
  int64_t rows() const { return m_; }
  int64_t depth() const { return k_; }
  const T* data() const { return data_; }
  T* mutable_data() { return data_; }
  // The rows of a panel: the selected micro-kernel's tile rows.
  static int64_t panel_rows();
  // Panels 0 .. panels() - 1, each written by one task of the packing.
  int64_t panels() const;
  PackedPanel panel(int64_t i) const;

 private:
  int64_t m_, k_;
  // Uninitialised: packing writes every element it reads (a zero-filled
  // vector cost a pass of memset over a deep layer's 9 MiB). Empty where the
  // caller owns the memory.
  Scratch<T> owned_;
  T* data_ = nullptr;
};

// C[m x n] (+)= A[m x k] * B[k x n] with A packed beforehand. Unless
// `accumulate`, a `row_bias` (m values) starts each row of C, added as the
// tiles are stored: C = row_bias + A * B without a pass that fills C first.
template <typename T>
void gemm(const PackedA<T>& a, int64_t n, MatrixRef<const T> b, MatrixRef<T> c, bool accumulate,
          bool relu = false, const T* row_bias = nullptr);

// C[m x n] (+)= A[m x k] * B[k x n], then, with `relu`, C = relu(C) (torch's:
// NaN passes), applied to each register tile as it is stored after its last
// reduction block, while it is still in L1. T is float or double.
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c,
          bool accumulate, bool relu = false);

}  // namespace cpu
}  // namespace fastconv
