// Our tiled GEMM for the im2col convolution path (no cuBLAS):
//   C[z](m, j) = sum_k A[z](m, k) * B[z](j, k)  (+ bias[m]) (+ C[z](m, j))
// for a batch of problems z. Operands are strided views rather than fixed
// layouts, so one kernel covers every transposition the convolution needs
// (W * col, W^T * dY, dY * col^T) and a reduction index that runs over
// several images (k = image * kin + pixel).
//
// Blocks of 256 threads compute BM x BN tiles of C, each thread a TM x TN
// register tile; BK-deep slices of A and B pass through double-buffered
// shared memory (the next slice is loaded into registers while the current
// one is multiplied: one barrier per slice). Global loads move four elements
// at a time, as one 4-wide vector where the view is contiguous and aligned
// along that direction, else as four scalar loads with bounds checks.
// Shared-memory fragments are read as 16-byte vectors, and rows are padded
// so that the transposing stores of the staging do not conflict.
//
// Split-K: with GemmShape::splits = S > 1 the reduction is cut into S
// contiguous ranges of gemm_split_len(K, S) indices; range s of problem z is
// written (not accumulated, in the accumulation type) to the partials at
// GemmOutput::partials + s * GemmOutput::bsplit, and the caller sums the S
// partial results in a fixed order (deterministic, no atomics). A launch
// may split only its last problems (GemmShape::whole): the first ones then
// run whole into C while the split ranges of the others fill the rest of
// the GPU, where whole problems alone would leave a second wave part-idle.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// Element (i, k) of problem z = z1 * nz2 + z2 of an operand lies at
//   z1 * b1 + z2 * b2 + i * si + (k / kin) * sko + (k % kin) * sk,
// or, with kin == 0 (a reduction index that never wraps), at
//   z1 * b1 + z2 * b2 + i * si + k * sk.
// The division by kin is a FastDivmod (kdiv, set by launch_gemm), never a
// 64-bit division: a wrapping reduction index stays below 2^31.
// `vec` says how quads are read: kVecNone (scalars, quads along i),
// kVecRows (4-wide vectors along i) or kVecRed (4-wide vectors along k).
enum GemmVec : int { kVecNone = 0, kVecRows = 1, kVecRed = 2 };

struct GemmOperand {
  int64_t si, sk, kin, sko, b1, b2;
  int vec;
  FastDivmod kdiv = {};
};

// Which slice type loads an operand view into registers: GemmSlice for a
// GemmOperand; other views (the im2col columns gathered from the input,
// gemm_im2col_gather.cuh) name their own. Both GEMM kernels take operand
// B's view type as a template parameter and load it through this.
template <typename Operand>
struct GemmLoader;

// C(m, j) of problem z at z1 * b1 + z2 * b2 + m * ldc + j; bias (may be
// null) is indexed bias[z2 * bias_b2 + m]. `relu` clamps the finished value
// (after bias and accumulation) with torch's ReLU before the store.
// Reduction range s of a split problem z (z1 >= GemmShape::whole) goes to
// `partials` (of C's type, which must then be the accumulation type: fp32
// for half and bfloat16) at (z1 - whole) * b1 + z2 * b2 + s * bsplit +
// m * ldc + j, without bias, ReLU or accumulation. `vec` (set by
// launch_gemm): rows are 16-byte aligned, so quads are stored as vectors.
struct GemmOutput {
  int64_t ldc, b1, b2, bias_b2;
  bool accumulate;
  bool relu = false;
  void* partials = nullptr;
  int64_t bsplit = 0;
  bool vec = false;
};

struct GemmShape {
  int64_t M, N, K, nz1, nz2;
  int64_t splits = 1;
  // With splits > 1: problems z1 < whole run their whole reduction into C,
  // the others are split (0: every problem is split).
  int64_t whole = 0;
  // Set by gemm_item_digits for the tile of the launch, to split a work item
  // without a 64-bit division: whole problems' items into (tile n, tile m,
  // z2, z1), then split problems' items into (tile n, tile m, split, z2,
  // z1 - whole).
  MixedRadix<3> whole_digits = {};
  MixedRadix<4> item_digits = {};
};
// Problems that run whole: all of them unless the launch is split.
FASTCONV_HD int64_t gemm_whole_problems(const GemmShape& shape) {
  return shape.splits > 1 ? shape.whole : shape.nz1;
}

// Split ranges are whole multiples of this many reduction indices, so every
// range starts on a quad (and on any k-tile a GEMM kernel may use).
constexpr int64_t kGemmSplitAlign = 64;
FASTCONV_HD int64_t gemm_split_len(int64_t K, int64_t splits) {
  return ceil_div(ceil_div(K, splits), kGemmSplitAlign) * kGemmSplitAlign;
}

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;
  static constexpr int kThreads = kThreadsM * kThreadsN;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide quads");
};
using GemmTileLarge = GemmTile<128, 128, 8, 8, 8>;  // 256 threads, 8 x 8 each
using GemmTileSmall = GemmTile<64, 64, 8, 4, 4>;    // 256 threads, 4 x 4 each
using GemmTileWide = GemmTile<64, 256, 4, 8, 8>;    // 256 threads, 8 x 8 each

// Shared-memory rows are padded by one quad: the k-major staging stores of a
// warp (kVecRed: four rows dk..dk+3 and dk+4..dk+7 at once) then land in
// different banks, and rows stay 16-byte aligned for the vector reads.
constexpr int kGemmSmemPad = 4;

// Blocks per SM that __launch_bounds__ asks registers for: two 8-warp
// blocks (at most 128 registers a thread) where the accumulators are fp32;
// fp64 accumulators alone take 128 registers on the large tile.
constexpr int gemm_cuda_core_min_blocks(int64_t acc_size) { return acc_size == 8 ? 1 : 2; }
template <typename T>
constexpr int gemm_min_blocks() {
  return gemm_cuda_core_min_blocks(sizeof(acc_t<T>));
}

// The quads of one BR x BK slice and the per-thread registers that hold them.
// Quad q covers rows i..i+3 at reduction index k (along i) or row i at
// k..k+3 (along k). A thread's quads q = tid + t * THREADS share the first
// one's reduction index (along k) or rows (along i) and lie a fixed number of
// rows or indices after it, so `begin` fixes only the first quad's row
// pointer and coordinates for a whole output tile, and the others are a
// constant step away: per-quad copies would hold 4 registers a quad, which
// the tensor-core GEMM (4 quads an operand) cannot spare. Every slice's
// `load` only adds the reduction offset (kin == 0: k * sk; else a FastDivmod
// of k). Rows and reduction indices are 32-bit (launch_gemm checks M, N <
// 2^31, K < 2^30); only the products with strides are 64-bit.
template <typename T, int BR, int BK, int THREADS>
struct GemmSlice {
  using A = acc_t<T>;
  static constexpr int kQuads = BR * BK / 4;
  static constexpr int kPerThread = (kQuads + THREADS - 1) / THREADS;
  // Quad t lies t * kRowStep rows (along k) or t * kRedStep reduction indices (along i) after quad 0.
  static constexpr int kRowStep = THREADS / (BK / 4), kRedStep = THREADS / (BR / 4);
  static_assert(kPerThread == 1 || (THREADS % (BK / 4) == 0 && THREADS % (BR / 4) == 0),
                "a thread's quads lie a whole number of rows or reduction indices apart");
  A v[kPerThread][4] = {};  // every quad is loaded before it is stored; this keeps GCC from warning
  const T* row0;            // base + i0 * si: quad 0's (first) row
  int i0, dk0;              // quad 0's row and reduction index in the slice

  __device__ __forceinline__ static int64_t k_offset(const GemmOperand& op, int k) {
    if (op.kin == 0) return k * op.sk;  // the same for every thread: no divergence
    uint32_t outer, inner;
    op.kdiv.divmod(static_cast<uint32_t>(k), outer, inner);
    return static_cast<int64_t>(outer) * op.sko + static_cast<int64_t>(inner) * op.sk;
  }

  template <typename Op>
  __device__ __forceinline__ static void quad_coords(const Op& op, int q, int& qi, int& qk) {
    if (op.vec == kVecRed) {
      qi = q / (BK / 4);
      qk = (q % (BK / 4)) * 4;
    } else {
      qk = q / (BR / 4);
      qi = (q % (BR / 4)) * 4;
    }
  }

  // Quad 0's row and reduction index, for a tile whose rows start at first_row.
  template <typename Op>
  __device__ __forceinline__ void place(const Op& op, int first_row, int tid) {
    int qi, qk;
    quad_coords(op, tid, qi, qk);
    i0 = first_row + qi;
    dk0 = qk;
  }
  __device__ __forceinline__ void begin(const T* base, const GemmOperand& op, int first_row, int tid) {
    place(op, first_row, tid);
    row0 = base + i0 * op.si;
  }

  // Quad t's row, reduction index in the slice and row pointer. With one
  // quad a thread (the CUDA-core tiles) the select is left out at compile
  // time: folding it later still changes nvcc's code for those kernels, and
  // ptxas then spills more on sm_90.
  template <typename Op>
  __device__ __forceinline__ int i(const Op& op, int t) const {
    if constexpr (kPerThread == 1) {
      return i0;
    } else {
      return i0 + (op.vec == kVecRed ? t * kRowStep : 0);
    }
  }
  template <typename Op>
  __device__ __forceinline__ int dk(const Op& op, int t) const {
    if constexpr (kPerThread == 1) {
      return dk0;
    } else {
      return dk0 + (op.vec == kVecRed ? 0 : t * kRedStep);
    }
  }
  __device__ __forceinline__ const T* row(const GemmOperand& op, int t) const {
    if constexpr (kPerThread == 1) {
      return row0;
    } else {
      return row0 + (op.vec == kVecRed ? t * kRowStep * op.si : 0);
    }
  }

  // Slice [k0, k0 + BK): rows >= rows and indices >= K read zero.
  __device__ __forceinline__ void load(const GemmOperand& op, int rows, int K, int k0, int tid) {
#pragma unroll
    for (int t = 0; t < kPerThread; ++t) {
      if (tid + t * THREADS >= kQuads) break;
      const int k = k0 + dk(op, t);
      const bool whole_vector = op.vec == kVecRows ? (i(op, t) + 3 < rows && k < K)
                                                   : (op.vec == kVecRed && i(op, t) < rows && k + 3 < K);
      if (whole_vector) {
        const Pack<T, 4> pk = *reinterpret_cast<const Pack<T, 4>*>(row(op, t) + k_offset(op, k));
#pragma unroll
        for (int u = 0; u < 4; ++u) v[t][u] = to_acc(pk.v[u]);
      } else if (op.vec == kVecRed) {
#pragma unroll
        for (int u = 0; u < 4; ++u) v[t][u] = i(op, t) < rows && k + u < K ? to_acc(row(op, t)[k_offset(op, k + u)]) : A(0);
      } else {
        const int64_t at = k_offset(op, k);
#pragma unroll
        for (int u = 0; u < 4; ++u) v[t][u] = i(op, t) + u < rows && k < K ? to_acc(row(op, t)[u * op.si + at]) : A(0);
      }
    }
  }

  // Writes the quads into a [BK][BR + pad] shared-memory slice.
  template <int PITCH, typename Op>
  __device__ __forceinline__ void store(A (*s)[PITCH], const Op& op, int tid) const {
#pragma unroll
    for (int t = 0; t < kPerThread; ++t) {
      const int q = tid + t * THREADS;
      if (q >= kQuads) break;
      int qi, qk;
      quad_coords(op, q, qi, qk);
      if (op.vec == kVecRed) {
#pragma unroll
        for (int u = 0; u < 4; ++u) s[qk + u][qi] = v[t][u];
      } else {
        smem_store4(&s[qk][qi], v[t]);
      }
    }
  }
};

template <>
struct GemmLoader<GemmOperand> {
  template <typename T, int BR, int BK, int THREADS>
  using Slice = GemmSlice<T, BR, BK, THREADS>;
};

// Row (or column) of register u of a thread: TM/4 quads spread BM/(TM/4)
// apart, so a warp's shared-memory reads of one quad are contiguous.
template <int B, int TR>
__device__ __forceinline__ int gemm_local(int thread_coord, int u) {
  return (u / 4) * (B / (TR / 4)) + thread_coord * 4 + (u % 4);
}

// One block's piece of work: an output tile of one problem, over its whole
// reduction or (`partial`) over one range [k_begin, k_end) of it (empty for
// the last splits of a short K, which then store zeros). Shared by the
// CUDA-core and tensor-core kernels.
struct GemmWorkItem {
  int m0, n0, split, k_begin, k_end;
  int64_t z1, z2;
  bool partial;
};
// Work items of a launch on bm x bn tiles: a tile of each whole problem, and
// `splits` of each split one.
FASTCONV_HD int64_t gemm_tiles_per_problem(const GemmShape& shape, int64_t bm, int64_t bn) {
  return shape.nz2 * ceil_div(shape.M, bm) * ceil_div(shape.N, bn);
}
FASTCONV_HD int64_t gemm_tile_items(const GemmShape& shape, int64_t bm, int64_t bn) {
  const int64_t whole = gemm_whole_problems(shape);
  return gemm_tiles_per_problem(shape, bm, bn) * (whole + (shape.nz1 - whole) * shape.splits);
}
template <int BM, int BN>
FASTCONV_HD int64_t gemm_work_items(const GemmShape& shape) {
  return gemm_tile_items(shape, BM, BN);
}
// What every work item of a launch shares, computed once before a block's
// loop over its items (no 64-bit division inside it): the items of the
// whole problems, then the length of a split problem's reduction range.
struct GemmItemSplit {
  int64_t whole_items;
  int split_len;
};
template <int BM, int BN>
FASTCONV_HD GemmItemSplit gemm_item_split(const GemmShape& shape) {
  return GemmItemSplit{gemm_whole_problems(shape) * gemm_tiles_per_problem(shape, BM, BN),
                       static_cast<int>(shape.splits > 1 ? gemm_split_len(shape.K, shape.splits) : shape.K)};
}
// kSplits: whether the kernel may run split problems (its C has the
// accumulation type, as launch_gemm requires of a split launch). The others
// decode every item as one of a launch without whole problems, in the code
// that was there before whole problems were (ptxas holds them at the
// 128-register bound of two blocks an SM; small changes to this function
// spilled the 16-bit kernels on sm_80 and sm_90).
template <int BM, int BN, bool kSplits>
__device__ __forceinline__ GemmWorkItem gemm_work_item(int64_t item, const GemmShape& shape, GemmItemSplit at) {
  GemmWorkItem w;
  const int K = static_cast<int>(shape.K);
  if (!kSplits) {
    uint32_t d[5];
    shape.item_digits.split(static_cast<uint32_t>(item), d);
    w.n0 = static_cast<int>(d[0]) * BN;
    w.m0 = static_cast<int>(d[1]) * BM;
    w.z2 = d[3];
    w.z1 = d[4];
    w.split = static_cast<int>(d[2]);
    w.partial = false;
    w.k_begin = w.split * at.split_len;
    w.k_end = K - w.k_begin > at.split_len ? w.k_begin + at.split_len : K;
  } else if (item < at.whole_items) {
    uint32_t d[4];
    shape.whole_digits.split(static_cast<uint32_t>(item), d);
    w.n0 = static_cast<int>(d[0]) * BN;
    w.m0 = static_cast<int>(d[1]) * BM;
    w.z2 = d[2];
    w.z1 = d[3];
    w.split = 0;
    w.partial = false;
    w.k_begin = 0;
    w.k_end = K;
  } else {
    uint32_t d[5];
    shape.item_digits.split(static_cast<uint32_t>(item - at.whole_items), d);
    w.n0 = static_cast<int>(d[0]) * BN;
    w.m0 = static_cast<int>(d[1]) * BM;
    w.split = static_cast<int>(d[2]);
    w.z2 = d[3];
    w.z1 = shape.whole + d[4];
    w.partial = true;
    w.k_begin = w.split * at.split_len;
    w.k_end = K - w.k_begin > at.split_len ? w.k_begin + at.split_len : K;
  }
  return w;
}
// The launch's side of gemm_work_item: its divisors for tiles of BM x BN.
// nullptr, or an error when the items would not fit its 32-bit index.
template <int BM, int BN>
inline const char* gemm_item_digits(GemmShape& shape) {
  if (gemm_work_items<BM, BN>(shape) >= kFastDivmodLimit) {
    return "launch_gemm: more than 2^31 output tiles (split the batch)";
  }
  if (shape.whole < 0 || shape.whole > shape.nz1) return "launch_gemm: more whole problems than problems";
  shape.whole_digits = MixedRadix<3>::make(ceil_div(shape.N, BN), ceil_div(shape.M, BM), shape.nz2);
  shape.item_digits = MixedRadix<4>::make(ceil_div(shape.N, BN), ceil_div(shape.M, BM), shape.splits, shape.nz2);
  return nullptr;
}

// Where a work item's results go: a whole item's into C, through the
// epilogue (bias, accumulation, ReLU); a split item's raw sums into its
// range's partials, which then have C's type (launch_gemm checks that C has
// the accumulation type wherever a problem is split). One store loop serves
// both, with `partial` a compile-time false in kernels that never split (a
// second loop for the partials spilled the wide tile's registers on sm_80).
FASTCONV_HD int64_t gemm_partial_offset(const GemmOutput& vc, const GemmShape& shape, const GemmWorkItem& w) {
  return (w.z1 - shape.whole) * vc.b1 + w.z2 * vc.b2 + w.split * vc.bsplit;
}
// Split ranges are stored as C's type, so only kernels whose C has the
// accumulation type run them.
template <typename T, typename TC>
constexpr bool gemm_stores_splits() {
  return std::is_same_v<TC, acc_t<T>>;
}
// A kernel's items (gemm_work_items); one that never splits has one a tile
// of every problem (the shorter count keeps the 16-bit kernels, at the
// 128-register bound, from spilling on sm_80).
template <int BM, int BN, bool kSplits>
FASTCONV_HD int64_t gemm_kernel_items(const GemmShape& shape) {
  return kSplits ? gemm_work_items<BM, BN>(shape) : shape.nz1 * gemm_tiles_per_problem(shape, BM, BN);
}

template <typename T, typename TC, typename Tile, typename OperandB>
__global__ void __launch_bounds__(Tile::kThreads, gemm_min_blocks<T>())
    gemm_kernel(const T* __restrict__ a, GemmOperand va, const T* __restrict__ b, OperandB vb,
                TC* c, GemmOutput vc, const T* __restrict__ bias, GemmShape shape) {
  using A = acc_t<T>;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int kThreads = Tile::kThreads;
  __shared__ __align__(16) A as[2][BK][BM + kGemmSmemPad];
  __shared__ __align__(16) A bs[2][BK][BN + kGemmSmemPad];
  const int tid = static_cast<int>(threadIdx.x);
  const int tn = tid % Tile::kThreadsN, tm = tid / Tile::kThreadsN;
  const int M = static_cast<int>(shape.M), N = static_cast<int>(shape.N);
  constexpr bool kSplits = gemm_stores_splits<T, TC>();
  const int64_t items = gemm_kernel_items<BM, BN, kSplits>(shape);
  const GemmItemSplit item_split = gemm_item_split<BM, BN>(shape);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const GemmWorkItem w = gemm_work_item<BM, BN, kSplits>(item, shape, item_split);
    const int64_t z1 = w.z1, z2 = w.z2;
    const int m0 = w.m0, n0 = w.n0, k_begin = w.k_begin, k_end = w.k_end;
    const T* a_z = a + z1 * va.b1 + z2 * va.b2;
    const T* b_z = b + z1 * vb.b1 + z2 * vb.b2;
    const int slices = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

    A acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

    GemmSlice<T, BM, BK, kThreads> ra;
    typename GemmLoader<OperandB>::template Slice<T, BN, BK, kThreads> rb;
    ra.begin(a_z, va, m0, tid);
    rb.begin(b_z, vb, n0, tid);
    ra.load(va, M, k_end, k_begin, tid);
    rb.load(vb, N, k_end, k_begin, tid);
    ra.store(as[0], va, tid);
    rb.store(bs[0], vb, tid);
    __syncthreads();
    for (int sl = 0; sl < slices; ++sl) {
      const int cur = sl & 1;
      const bool more = sl + 1 < slices;
      if (more) {  // global loads in flight while this slice is multiplied
        ra.load(va, M, k_end, k_begin + (sl + 1) * BK, tid);
        rb.load(vb, N, k_end, k_begin + (sl + 1) * BK, tid);
      }
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        A ar[TM / 4][4], br[TN / 4][4];
#pragma unroll
        for (int i = 0; i < TM / 4; ++i) smem_load4(&as[cur][kk][gemm_local<BM, TM>(tm, 4 * i)], ar[i]);
#pragma unroll
        for (int j = 0; j < TN / 4; ++j) smem_load4(&bs[cur][kk][gemm_local<BN, TN>(tn, 4 * j)], br[j]);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += ar[i / 4][i % 4] * br[j / 4][j % 4];
      }
      if (more) {  // the other buffer was last read before the previous barrier
        ra.store(as[cur ^ 1], va, tid);
        rb.store(bs[cur ^ 1], vb, tid);
      }
      __syncthreads();
    }

    const bool partial = kSplits && w.partial;
    TC* c_z = partial ? static_cast<TC*>(vc.partials) + gemm_partial_offset(vc, shape, w)
                      : c + z1 * vc.b1 + z2 * vc.b2;
    const T* bias_z = bias != nullptr && !partial ? bias + z2 * vc.bias_b2 : nullptr;
    const bool accumulate = vc.accumulate && !partial, relu = vc.relu && !partial;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + gemm_local<BM, TM>(tm, i);
      if (m >= M) continue;
      const A bm = bias_z != nullptr ? to_acc(bias_z[m]) : A(0);
#pragma unroll
      for (int j4 = 0; j4 < TN; j4 += 4) {
        const int n = n0 + gemm_local<BN, TN>(tn, j4);  // n .. n + 3 are this thread's
        if (n >= N) continue;
        TC* dst = c_z + m * vc.ldc + n;
        if (vc.vec && n + 3 < N) {
          Pack<TC, 4> pk;
          if (accumulate) pk = *reinterpret_cast<const Pack<TC, 4>*>(dst);
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            A v = acc[i][j4 + u] + bm;
            if (accumulate) v += to_acc(pk.v[u]);
            pk.v[u] = from_acc<TC>(conv_epilogue(v, relu));
          }
          *reinterpret_cast<Pack<TC, 4>*>(dst) = pk;
        } else {
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (n + u >= N) break;
            A v = acc[i][j4 + u] + bm;
            if (accumulate) v += to_acc(dst[u]);
            dst[u] = from_acc<TC>(conv_epilogue(v, relu));
          }
        }
      }
    }
  }
}

// Chooses each operand's vector mode: 4-wide vectors need the four elements
// contiguous along one direction and every quad start aligned to 4 elements
// (base pointer, every stride and batch offset multiples of 4).
template <typename T>
inline int gemm_vec_mode(const T* base, const GemmOperand& op) {
  const bool base_ok = is_aligned(base, 4 * static_cast<int>(sizeof(T))) && op.b1 % 4 == 0 && op.b2 % 4 == 0;
  if (!base_ok) return kVecNone;
  if (op.si == 1 && op.sk % 4 == 0 && op.sko % 4 == 0) return kVecRows;
  if (op.sk == 1 && op.si % 4 == 0 && op.kin % 4 == 0 && op.sko % 4 == 0) return kVecRed;
  return kVecNone;
}

// The CUDA-core tiles launch_gemm chooses from. The large and wide tiles
// give a thread 8 x 8 outputs (64 FMAs per four 16-byte shared loads a k
// step); the small tile's 4 x 4 gets 16 FMAs per two loads, and per FMA
// twice the global loads and four times the barriers. On the H200 it ran
// at about half the large tile's rate (bench/results: 14 against 25
// TFLOP/s), so where an SM has 128 FP32 lanes its element weighs twice as
// much; with 64 lanes (sm_75, sm_80; and FP64 everywhere) the FMAs take
// twice as long beside the same overheads, and it is weighed at 5/4, an
// estimate no GPU of that kind has measured yet. The wide tile (its cost
// assumed equal to the large one's) serves GEMMs whose rows fill 64-row
// tiles better than 128-row ones: the forward and weight gradient of
// 64-channel layers, input gradients of 288 rows.
enum class GemmTileKind { kLarge, kWide, kSmall };

struct GemmTileShape {
  int bm, bn;
};
constexpr GemmTileShape gemm_tile_shape(GemmTileKind kind) {
  return kind == GemmTileKind::kLarge  ? GemmTileShape{GemmTileLarge::BM, GemmTileLarge::BN}
         : kind == GemmTileKind::kWide ? GemmTileShape{GemmTileWide::BM, GemmTileWide::BN}
                                       : GemmTileShape{GemmTileSmall::BM, GemmTileSmall::BN};
}
// Issue time of one output element of a tile, in quarters of the large
// tile's (see above); fma_lanes_per_sm: the lanes of the accumulation
// type's FMA units an SM has.
constexpr int gemm_tile_cost(GemmTileKind kind, int fma_lanes_per_sm) {
  return kind != GemmTileKind::kSmall ? 4 : fma_lanes_per_sm >= 128 ? 8 : 5;
}

// Rounds of `resident` blocks on bm x bn tiles, times a block's area and the
// cost of one of its elements: the estimate the tile choices compare.
inline int64_t gemm_tile_time(const GemmShape& shape, int64_t resident, int bm, int bn, int cost) {
  return ceil_div(gemm_tile_items(shape, bm, bn), resident < 1 ? 1 : resident) * bm * bn * cost;
}

// Finish time, in reduction indices, of a launch that runs `whole_tiles`
// tiles over their whole reduction of K, then `ranges` split ranges that
// each take `range_time`, on `resident` block slots: rounds as
// gemm_tile_time counts them, the slots that the whole tiles' last round
// leaves free taking ranges meanwhile.
inline int64_t gemm_tail_finish(int64_t whole_tiles, int64_t ranges, int64_t K, int64_t range_time, int64_t resident) {
  const int64_t rounds = ceil_div(whole_tiles, resident), free_slots = rounds * resident - whole_tiles;
  const int64_t early = free_slots * (K / range_time), rest = ranges > early ? ranges - early : 0;
  return rounds * K + ceil_div(rest, resident) * range_time;
}

// The tile with the least estimated time: rounds of `resident` blocks (the
// blocks the GPU runs at once) times one block's area and cost. Counting
// whole rounds charges a tile for the idle tail of its last wave (a large
// tile's 320 blocks on 264 slots take two rounds); resident = 1 compares
// padded area alone, the steady state of a problem split to fill the GPU.
// Equal times go to the tile with less padded area (a 64-row problem fits
// the wide tile, not the large one), then to the one that keeps more of the
// GPU's block slots busy (a lone block on an SM hides less latency), then to
// the earlier kind. `wide` is false but for float operands and results:
// double and 16-bit results spill on it (ptxas, sm_90), and 16-bit operands
// run on tensor cores wherever an SM has 128 lanes, the only GPUs where the
// wide tile pays.
inline GemmTileKind gemm_cuda_core_tile(const GemmShape& shape, int64_t resident, int fma_lanes_per_sm,
                                        bool wide = true) {
  if (resident < 1) resident = 1;
  GemmTileKind best = GemmTileKind::kLarge;
  int64_t best_time = -1, best_area = 0, best_busy = 0;
  for (GemmTileKind kind : {GemmTileKind::kLarge, GemmTileKind::kWide, GemmTileKind::kSmall}) {
    if (kind == GemmTileKind::kWide && !wide) continue;
    const GemmTileShape tile = gemm_tile_shape(kind);
    const int64_t blocks = gemm_tile_items(shape, tile.bm, tile.bn), area = blocks * tile.bm * tile.bn;
    const int64_t time = gemm_tile_time(shape, resident, tile.bm, tile.bn, gemm_tile_cost(kind, fma_lanes_per_sm));
    const int64_t busy = blocks < resident ? blocks : resident;
    const bool better = best_time < 0 || time < best_time ||
                        (time == best_time && (area < best_area || (area == best_area && busy > best_busy)));
    if (better) best = kind, best_time = time, best_area = area, best_busy = busy;
  }
  return best;
}

// Output tiles of one reduction range on the tile a problem split to fill
// the GPU would run. The tensor-core kernel's 64 x 64 tiles are no larger,
// nor are those of GEMMs that may not take the wide tile, so a split count
// sized from this fills the GPU on every path but one: a 16-bit GEMM may
// take the 64 x 128 tensor-core tile, and does where its rounds estimate
// (gemm_tensor_core_wide) says that fewer, larger blocks finish sooner.
inline int64_t gemm_tiles_per_split(GemmShape shape, int fma_lanes_per_sm) {
  shape.splits = 1;
  const GemmTileShape tile = gemm_tile_shape(gemm_cuda_core_tile(shape, 1, fma_lanes_per_sm));
  return gemm_tile_items(shape, tile.bm, tile.bn);
}

// Quads of C are stored as vectors when every row start is 16-byte aligned
// for 4 elements: the pointers (C's and the partials'), ldc and every batch
// offset.
template <typename A, typename TC>
inline bool gemm_output_vec(const TC* c, const GemmOutput& vc) {
  return is_aligned(c, 4 * static_cast<int>(sizeof(TC))) &&
         is_aligned(vc.partials, 4 * static_cast<int>(sizeof(A))) && vc.ldc % 4 == 0 && vc.b1 % 4 == 0 &&
         vc.b2 % 4 == 0 && vc.bsplit % 4 == 0;
}

// The shape a launch picks its tile from: a launch that splits only its
// last problems keeps the tile its whole problems would run (the split
// ranges fill what the whole ones leave of the GPU), which is the tile
// conv2d_im2col.cuh sized that split on.
inline GemmShape gemm_tile_choice_shape(GemmShape shape) {
  if (shape.splits > 1 && shape.whole > 0) shape.splits = 1;
  return shape;
}

// FMA lanes of an SM for accumulators of `acc_size` bytes: FP64's are 64 or
// fewer on every GPU we build for.
inline int gemm_fma_lanes_per_sm(int64_t acc_size) { return acc_size == 8 ? 64 : device_fp32_lanes_per_sm(); }

// The CUDA-core tile launch_gemm_cuda_core runs a GEMM on, for operands of
// `element_size` bytes (the wide tile only where operands and results are
// float: T = float has TC = float).
inline GemmTileKind gemm_cuda_core_launch_tile(const GemmShape& shape, int64_t element_size, int multiprocessors) {
  const int64_t acc_size = acc_size_for(element_size);
  const int64_t resident = int64_t(gemm_cuda_core_min_blocks(acc_size)) * multiprocessors;
  return gemm_cuda_core_tile(gemm_tile_choice_shape(shape), resident, gemm_fma_lanes_per_sm(acc_size),
                             element_size == 4);
}

// The tensor-core GEMM (gemm_tensor_core.cuh, which includes this header).
template <typename T, typename TC, typename OperandB>
const char* launch_gemm_tensor_core(const T* a, GemmOperand va, const T* b, OperandB vb, TC* c, GemmOutput vc,
                                    const T* bias, GemmShape shape, cudaStream_t stream);

// Launches a GEMM kernel (CUDA-core or tensor-core) over the work items of
// its Tile: a block per item, up to conv_grid's cap.
template <typename Tile, typename Kernel, typename T, typename TC, typename OperandB>
const char* launch_gemm_kernel(Kernel kernel, const T* a, GemmOperand va, const T* b, OperandB vb, TC* c,
                               GemmOutput vc, const T* bias, GemmShape shape, cudaStream_t stream) {
  if (const char* err = gemm_item_digits<Tile::BM, Tile::BN>(shape)) return err;
  const int64_t items = gemm_work_items<Tile::BM, Tile::BN>(shape);
  SIMT_LAUNCH(kernel, conv_grid(items), Tile::kThreads, 0, stream, a, va, b, vb, c, vc, bias, shape);
  return launch_status();
}
template <typename T, typename TC, typename Tile, typename OperandB>
const char* launch_gemm_tile(const T* a, GemmOperand va, const T* b, OperandB vb, TC* c, GemmOutput vc,
                             const T* bias, GemmShape shape, cudaStream_t stream) {
  return launch_gemm_kernel<Tile>(gemm_kernel<T, TC, Tile, OperandB>, a, va, b, vb, c, vc, bias, shape, stream);
}

// Settles how the kernels read a GemmOperand: its vector mode and divisor.
template <typename T>
inline void gemm_settle_operand(const T* base, GemmOperand& op) {
  op.vec = gemm_vec_mode(base, op);
  if (op.kin != 0) op.kdiv = FastDivmod::make(op.kin);
}

// The CUDA-core tile for the shape (gemm_cuda_core_tile) and its launch.
template <typename T, typename TC, typename OperandB>
const char* launch_gemm_cuda_core(const T* a, GemmOperand va, const T* b, OperandB vb, TC* c, GemmOutput vc,
                                  const T* bias, GemmShape shape, cudaStream_t stream) {
  constexpr bool kWide = std::is_same_v<T, float> && std::is_same_v<TC, float>;
  const GemmTileKind kind = gemm_cuda_core_launch_tile(shape, sizeof(T), device_multiprocessors());
  if constexpr (kWide) {
    if (kind == GemmTileKind::kWide) {
      return launch_gemm_tile<T, TC, GemmTileWide, OperandB>(a, va, b, vb, c, vc, bias, shape, stream);
    }
  }
  if (kind == GemmTileKind::kLarge) return launch_gemm_tile<T, TC, GemmTileLarge, OperandB>(a, va, b, vb, c, vc, bias, shape, stream);
  return launch_gemm_tile<T, TC, GemmTileSmall, OperandB>(a, va, b, vb, c, vc, bias, shape, stream);
}

// `math` chooses CUDA cores or tensor cores; double always runs on CUDA cores.
// Operand B is a GemmOperand, or a view with its own loader (GemmLoader).
// On CUDA cores only float and double take such a view: 16-bit GEMMs run
// there only before sm_80, and keep explicit operands (fewer kernels).
template <typename T, typename TC, typename OperandB>
const char* launch_gemm(const T* a, GemmOperand va, const T* b, OperandB vb, TC* c, GemmOutput vc,
                        const T* bias, GemmShape shape, GemmMath math, cudaStream_t stream) {
  const int64_t problems = shape.nz1 * shape.nz2;
  if (problems == 0 || shape.M == 0 || shape.N == 0) return launch_status();
  // 32-bit rows and reduction indices; K's split ranges may round up by up to
  // kGemmSplitAlign per split past K, so K keeps a 2^30 margin.
  if (shape.M >= kFastDivmodLimit || shape.N >= kFastDivmodLimit || shape.K >= kFastDivmodLimit / 2) {
    return "launch_gemm: M and N must stay below 2^31 and K below 2^30 (split the batch)";
  }
  gemm_settle_operand(a, va);
  gemm_settle_operand(b, vb);
  vc.vec = gemm_output_vec<acc_t<T>>(c, vc);
  if (shape.splits < 1) shape.splits = 1;
  if (shape.splits > 1 && vc.partials == nullptr) return "launch_gemm: a split GEMM needs room for its partials";
  if (shape.splits > 1 && !gemm_stores_splits<T, TC>()) {
    return "launch_gemm: a split GEMM stores its partials as C's type, which must be the accumulation type";
  }
  if constexpr (!std::is_same_v<T, double>) {
    if (math == GemmMath::kTensorCore) return launch_gemm_tensor_core(a, va, b, vb, c, vc, bias, shape, stream);
  }
  if constexpr (std::is_same_v<OperandB, GemmOperand> || sizeof(T) >= 4) {
    return launch_gemm_cuda_core(a, va, b, vb, c, vc, bias, shape, stream);
  } else {
    return "launch_gemm: a gathered operand B of a 16-bit type needs the tensor-core GEMM";
  }
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
