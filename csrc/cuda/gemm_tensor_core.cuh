// The im2col GEMM on tensor cores: the same problem, operand views and
// epilogue as gemm_kernel (gemm.cuh),
//   C[z](m, j) = sum_k A[z](m, k) * B[z](j, k)  (+ bias[m]) (+ C[z](m, j)),
// with the products on warp-level mma.sync (mma.cuh) instead of FMAs:
// half and bfloat16 operands as m16n8k16 f16/bf16, float operands rounded to
// tf32 (cvt.rna) as m16n8k8 tf32; fp32 accumulators either way. launch_gemm
// picks it when the op layer asks for GemmMath::kTensorCore (sm_80 and newer
// only; never for double).
//
// A block of 8 warps computes a 64 x 64 tile of C, each warp a 32 x 16
// eighth (2 x 2 mma tiles of 16 x 8), or, for 16-bit operands, a 64 x 128
// tile, each warp 32 x 32 (2 x 4 mma tiles), which does twice the mma per
// k-step on 4 fragment loads where the narrow warp tile does 3
// (gemm_tensor_core_wide weighs the two). BK-deep slices of A and B (32, or
// 16 on the wide tile) pass through double-buffered shared memory as the
// mma's input format (16-bit elements, or tf32 bit patterns), laid out so
// that every fragment register is one 32-bit word: an A fragment is one
// ldmatrix.x4, and so are the B fragments of two adjacent 8-column mma
// tiles (TensorCoreLayout: k-contiguous rows, or for 16-bit operands that
// arrive as quads along rows, k-major rows read with ldmatrix.trans). The
// global loads are gemm_kernel's (GemmSlice: 4-wide vectors where the view
// allows), converted to the input format as they are stored.
#pragma once

#include "gemm.cuh"
#include "mma.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// The shared-memory element of operand type T, and the mma that consumes it.
// Rows are padded so that a fragment load (ldmatrix) is conflict-free: each of
// its phases reads 8 rows of 4 words, and a row stride of 20 (16-bit: 40
// elements) or 36 (tf32) words maps the 8 rows to bank offsets 4 apart (all
// 32 banks), as does 12 (the wide tile's 16-deep 16-bit slices: offsets 0,
// 12, 24, 4, 16, 28, 8, 20); all are 16-byte multiples, as ldmatrix's rows
// must be.
template <typename T>
struct TensorCoreInput;
template <>
struct TensorCoreInput<float> {
  using Stored = uint32_t;  // tf32 in an fp32 bit pattern
  static constexpr int kPerWord = 1, kMmaK = 8, kPad = 4;
  __device__ __forceinline__ static Stored stage(float v) { return to_tf32(v); }
  __device__ __forceinline__ static void mma(float (&acc)[4], const MmaFragA& a, const MmaFragB& b) {
    mma_m16n8k8_tf32(acc, a, b);
  }
};
template <typename T16>
struct TensorCoreInput16 {
  using Stored = uint16_t;  // the raw bits: the staged value is already exact in T16
  static constexpr int kPerWord = 2, kMmaK = 16, kPad = 8;
  __device__ __forceinline__ static Stored stage(float v) { return from_acc<T16>(v).bits; }
  __device__ __forceinline__ static void mma(float (&acc)[4], const MmaFragA& a, const MmaFragB& b) {
    mma_m16n8k16<T16>(acc, a, b);
  }
};
template <>
struct TensorCoreInput<half_t> : TensorCoreInput16<half_t> {};
template <>
struct TensorCoreInput<bfloat16_t> : TensorCoreInput16<bfloat16_t> {};

template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int MIN_BLOCKS_>
struct TensorCoreTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int kMinBlocks = MIN_BLOCKS_;  // per SM, for __launch_bounds__
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // one warp's part of the tile
  static constexpr int kTilesM = WM / 16, kTilesN = WN / 8;   // mma tiles per warp
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0,
                "tiles are made of whole mma tiles, B's in pairs (load_fragment_b_pair)");
};
using GemmTensorCoreTile = TensorCoreTile<64, 64, 32, 2, 4, 2>;       // 256 threads, 32 x 16 per warp
// The wide tile's slices are 16 deep: with 32, the registers holding the
// next slice's 6 quads a thread pushed it past 128 (40-48 bytes of spills on
// sm_80 and sm_90); a 16-deep slice still feeds 8 mma a warp per barrier, as
// the narrow tile's 32-deep one does.
using GemmTensorCoreTileWide = TensorCoreTile<64, 128, 16, 2, 4, 2>;  // 256 threads, 32 x 32 per warp
static_assert(GemmTensorCoreTile::kMinBlocks == GemmTensorCoreTileWide::kMinBlocks,
              "a wave of either tensor-core tile is the same number of blocks (gemm_blocks_per_sm)");

// Element u of a quad, u chosen per lane: selects rather than an indexed
// register array, which nvcc would put in local memory.
template <typename A>
__device__ __forceinline__ A quad_element(const A (&v)[4], int u) {
  return u == 0 ? v[0] : u == 1 ? v[1] : u == 2 ? v[2] : v[3];
}

// Where one operand's BR x BK slice lies in shared memory, in one of two
// layouts chosen per launch from the operand's vector mode:
// - k-contiguous rows, [BR][BK + kPad]: a quad along k (kVecRed) is one
//   8-byte (16-bit) or 16-byte (tf32) vector store. A 16-byte phase (8
//   lanes) covers one whole row: conflict-free; an 8-byte phase (16 lanes)
//   two rows 20 words apart (four 8-word rows 12 apart on the wide tile's
//   16-deep slices): 2-way in 4 banks (a pitch of 16 mod 32 words would
//   avoid that but break the fragment loads).
// - transposed, [BK][BR + 8], for 16-bit quads along rows (kVecRows, and
//   kVecNone's scalar quads): one 8-byte store a quad, a half-warp's 16
//   quads one contiguous 128-byte run (conflict-free), where the first
//   layout took 4 scalar stores a quad, 2- to 4-way conflicted (any 32 rows
//   of one column fall in 8 banks at a pitch that suits the fragment loads).
//   Its fragments are loaded with ldmatrix.trans; a pitch of 72 or 136
//   elements (36 or 68 words, 4 mod 32) keeps those loads conflict-free too.
// tf32 quads along rows keep the first layout: ldmatrix moves 16-bit
// elements and cannot transpose 32-bit words. Their 4 stores are ordered so
// that each step's lanes cover every (quad % 2, element) pair: the warp's 16
// quads of one k start 4 rows apart, and quad pair a = (quad / 2) % 4
// starts at element a, so the rows' offsets 16 * (quad % 2) + 4 * element
// mod 32, over tf32's two k columns, are 16 distinct banks: 2-way at most.
template <typename T, int BR, int BK>
struct TensorCoreLayout {
  using In = TensorCoreInput<T>;
  using Stored = typename In::Stored;
  static constexpr int kLd = BK + In::kPad, kLdT = BR + 8;
  static constexpr bool kCanTranspose = In::kPerWord == 2;
  static constexpr int kElems = kCanTranspose && BK * kLdT > BR * kLd ? BK * kLdT : BR * kLd;
  static_assert(kLd * sizeof(Stored) % 16 == 0 && kLdT * sizeof(Stored) % 16 == 0, "ldmatrix rows are 16-byte aligned");

  template <typename Op>
  __device__ __forceinline__ static bool transposed(const Op& op) {
    return kCanTranspose && op.vec != kVecRed;
  }
  __device__ __forceinline__ static Stored (*rows(Stored* s))[kLd] { return reinterpret_cast<Stored (*)[kLd]>(s); }
  __device__ __forceinline__ static const Stored (*rows(const Stored* s))[kLd] {
    return reinterpret_cast<const Stored (*)[kLd]>(s);
  }
  __device__ __forceinline__ static Stored (*cols(Stored* s))[kLdT] { return reinterpret_cast<Stored (*)[kLdT]>(s); }
  __device__ __forceinline__ static const Stored (*cols(const Stored* s))[kLdT] {
    return reinterpret_cast<const Stored (*)[kLdT]>(s);
  }
};

// Converts one GemmSlice (BR x BK quads in registers) into its layout.
template <typename T, int BR, int BK, int THREADS, typename Op>
__device__ __forceinline__ void stage_tensor_core_slice(const GemmSlice<T, BR, BK, THREADS>& slice,
                                                        typename TensorCoreInput<T>::Stored* s, const Op& op,
                                                        int tid) {
  using L = TensorCoreLayout<T, BR, BK>;
  using In = TensorCoreInput<T>;
  using Stored = typename In::Stored;
  using Slice = GemmSlice<T, BR, BK, THREADS>;
#pragma unroll
  for (int t = 0; t < Slice::kPerThread; ++t) {
    const int q = tid + t * THREADS;
    if (q >= Slice::kQuads) break;
    int di, dk;
    Slice::quad_coords(op, q, di, dk);
    if (op.vec == kVecRed || L::kCanTranspose) {
      Stored staged[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) staged[u] = In::stage(slice.v[t][u]);
      if (op.vec == kVecRed) {
        smem_store_vector<4>(&L::rows(s)[di][dk], staged);
      } else {
        smem_store_vector<4>(&L::cols(s)[dk][di], staged);
      }
    } else {
      const int first = (di / 8) % 4;  // di = 4 * quad
#pragma unroll
      for (int step = 0; step < 4; ++step) {
        const int u = (first + step) % 4;
        L::rows(s)[di + u][dk] = In::stage(quad_element(slice.v[t], u));
      }
    }
  }
}

// Four 8 x 8 matrices in one ldmatrix.x4: lane 8 r + i names row i of
// matrix r, which starts at slice row `row` (a row of A or B) and word `kw`
// of k; transposed, that block lies in k-major rows, read with .trans.
template <typename T, int BR, int BK>
__device__ __forceinline__ void load_matrices(const typename TensorCoreInput<T>::Stored* s, bool transposed,
                                              int row, int kw, int i, uint32_t (&regs)[4]) {
  using L = TensorCoreLayout<T, BR, BK>;
  constexpr int kPerWord = TensorCoreInput<T>::kPerWord;
  if constexpr (L::kCanTranspose) {
    if (transposed) {
      ldmatrix_x4_trans(regs, &L::cols(s)[kw * kPerWord + i][row]);
      return;
    }
  }
  ldmatrix_x4(regs, &L::rows(s)[row + i][kw * kPerWord]);
}

// Fragment r of a 16-row A tile (or 8-row B tile) starting at `row`, k-step
// at word `kw`: PTX's layouts (csrc/simt/simt.h) in 32-bit words are
//   A: row + g + 8 (r % 2), word kw + t + 4 (r / 2);  B: row + g, word kw + t + 4 r
// (g = lane / 4, t = lane % 4) for f16/bf16 and tf32 alike: a tf32 word is
// two 16-bit halves to ldmatrix, moved as they lie in memory. That is word t
// of row g of the 8 x 4-word matrix r, which ldmatrix hands lane `lane` as
// register r. So lane 8 r + i gives row i of matrix r: for A, rows row + 8
// (r % 2) + i at word kw + 4 (r / 2); for one B tile, row + i at word kw +
// 4 r (load_fragment_b_pair loads two). Transposed (16-bit only, k = 2 kw),
// matrix r is the same 8 x 8 block read from k-major rows: lane 8 r + i
// gives k row k + 8 (r / 2) + i at column row + 8 (r % 2) for A, k + 8 r +
// i at column row for one B tile, and .trans hands lane (g, t) column g of
// k rows 2t and 2t + 1: the same register.
template <typename T, int BR, int BK>
__device__ __forceinline__ MmaFragA load_fragment_a(const typename TensorCoreInput<T>::Stored* s, bool transposed,
                                                    int row, int kw, int lane) {
  const int r = lane / 8;
  MmaFragA f;
  load_matrices<T, BR, BK>(s, transposed, row + 8 * (r % 2), kw + 4 * (r / 2), lane % 8, f.r);
  return f;
}

// The B fragments of the two mma tiles at rows `row` and `row` + 8 in one
// ldmatrix.x4: matrices 0 and 1 are the first tile's registers (words kw and
// kw + 4), 2 and 3 the second's. So lane 8 r + i gives row row + 8 (r / 2) +
// i at word kw + 4 (r % 2).
template <typename T, int BR, int BK>
__device__ __forceinline__ void load_fragment_b_pair(const typename TensorCoreInput<T>::Stored* s, bool transposed,
                                                     int row, int kw, int lane, MmaFragB& first, MmaFragB& second) {
  const int r = lane / 8;
  uint32_t regs[4];
  load_matrices<T, BR, BK>(s, transposed, row + 8 * (r / 2), kw + 4 * (r % 2), lane % 8, regs);
  first.r[0] = regs[0], first.r[1] = regs[1];
  second.r[0] = regs[2], second.r[1] = regs[3];
}

// Eight warps either way, two blocks per SM (16 warps, 25% occupancy, at
// most 128 registers), without spills (ptxas, nvcc 13, sm_80 and sm_90):
// the narrow tile's warps of 32 x 16 take 116-125 registers; the wide
// tile's of 32 x 32 twice the accumulators but, on 16-deep slices, half the
// staged quads a thread: 120-125 (on 32-deep slices they spilled). Four
// warps of 32 x 32 on a 64 x 64 tile needed ~160 registers: 3 blocks
// (18.75%), and spilled when held to 128. No GPU has run the wide tile.
template <typename T, typename TC, typename Tile, typename OperandB>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    gemm_tensor_core_kernel(const T* __restrict__ a, GemmOperand va, const T* __restrict__ b, OperandB vb,
                            TC* c, GemmOutput vc, const T* __restrict__ bias, GemmShape shape) {
  using In = TensorCoreInput<T>;
  using Stored = typename In::Stored;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK;
  constexpr int kThreads = Tile::kThreads, kWordsK = In::kMmaK / In::kPerWord;
  using LayoutA = TensorCoreLayout<T, BM, BK>;
  using LayoutB = TensorCoreLayout<T, BN, BK>;
  // One aligned struct: ldmatrix reads 16-byte rows.
  struct alignas(16) Slices {
    Stored a[2][LayoutA::kElems];
    Stored b[2][LayoutB::kElems];
  };
  __shared__ Slices smem;
  auto& as = smem.a;
  auto& bs = smem.b;
  const bool a_transposed = LayoutA::transposed(va), b_transposed = LayoutB::transposed(vb);
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int wm0 = (warp / Tile::WARPS_N) * Tile::WM, wn0 = (warp % Tile::WARPS_N) * Tile::WN;
  const int M = static_cast<int>(shape.M), N = static_cast<int>(shape.N);
  constexpr bool kSplits = gemm_stores_splits<T, TC>();
  const int64_t items = gemm_kernel_items<BM, BN, kSplits>(shape);
  const GemmItemSplit item_split = gemm_item_split<BM, BN>(shape);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const GemmWorkItem w = gemm_work_item<BM, BN, kSplits>(item, shape, item_split);
    const T* a_z = a + w.z1 * va.b1 + w.z2 * va.b2;
    const T* b_z = b + w.z1 * vb.b1 + w.z2 * vb.b2;
    const int m0 = w.m0, n0 = w.n0;
    const int slices = w.k_end > w.k_begin ? (w.k_end - w.k_begin + BK - 1) / BK : 0;

    float acc[Tile::kTilesM][Tile::kTilesN][4];
#pragma unroll
    for (int i = 0; i < Tile::kTilesM; ++i)
#pragma unroll
      for (int j = 0; j < Tile::kTilesN; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    GemmSlice<T, BM, BK, kThreads> ra;
    typename GemmLoader<OperandB>::template Slice<T, BN, BK, kThreads> rb;
    ra.begin(a_z, va, m0, tid);
    rb.begin(b_z, vb, n0, tid);
    ra.load(va, M, w.k_end, w.k_begin, tid);
    rb.load(vb, N, w.k_end, w.k_begin, tid);
    stage_tensor_core_slice(ra, as[0], va, tid);
    stage_tensor_core_slice(rb, bs[0], vb, tid);
    __syncthreads();
    for (int sl = 0; sl < slices; ++sl) {
      const int cur = sl & 1;
      const bool more = sl + 1 < slices;
      if (more) {  // global loads in flight while this slice is multiplied
        ra.load(va, M, w.k_end, w.k_begin + (sl + 1) * BK, tid);
        rb.load(vb, N, w.k_end, w.k_begin + (sl + 1) * BK, tid);
      }
#pragma unroll
      for (int kw = 0; kw < BK / In::kPerWord; kw += kWordsK) {
        MmaFragA fa[Tile::kTilesM];
        MmaFragB fb[Tile::kTilesN];
#pragma unroll
        for (int i = 0; i < Tile::kTilesM; ++i) {
          fa[i] = load_fragment_a<T, BM, BK>(as[cur], a_transposed, wm0 + 16 * i, kw, lane);
        }
#pragma unroll
        for (int j = 0; j < Tile::kTilesN; j += 2) {
          load_fragment_b_pair<T, BN, BK>(bs[cur], b_transposed, wn0 + 8 * j, kw, lane, fb[j], fb[j + 1]);
        }
#pragma unroll
        for (int i = 0; i < Tile::kTilesM; ++i)
#pragma unroll
          for (int j = 0; j < Tile::kTilesN; ++j) In::mma(acc[i][j], fa[i], fb[j]);
      }
      if (more) {  // the other buffer was last read before the previous barrier
        stage_tensor_core_slice(ra, as[cur ^ 1], va, tid);
        stage_tensor_core_slice(rb, bs[cur ^ 1], vb, tid);
      }
      __syncthreads();
    }

    // Accumulator r of mma tile (i, j) is C(16 i + g + 8 (r / 2), 8 j + 2 t + r % 2) of the warp's part.
    const bool partial = kSplits && w.partial;
    TC* c_z = partial ? static_cast<TC*>(vc.partials) + gemm_partial_offset(vc, shape, w)
                      : c + w.z1 * vc.b1 + w.z2 * vc.b2;
    const T* bias_z = bias != nullptr && !partial ? bias + w.z2 * vc.bias_b2 : nullptr;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < Tile::kTilesM; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm0 + 16 * i + g + 8 * h;
        if (m >= M) continue;
        const float bm = bias_z != nullptr ? to_acc(bias_z[m]) : 0.0f;
#pragma unroll
        for (int j = 0; j < Tile::kTilesN; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int n = n0 + wn0 + 8 * j + 2 * t + e;
            if (n >= N) continue;
            TC* dst = c_z + static_cast<int64_t>(m) * vc.ldc + n;
            float v = acc[i][j][2 * h + e] + bm;
            if (vc.accumulate && !partial) v += to_acc(*dst);
            *dst = from_acc<TC>(conv_epilogue(v, vc.relu && !partial));
          }
        }
      }
    }
  }
}

// Whether launch_gemm runs a GEMM of `element_size`-byte operands on tensor
// cores: as `math` says, but double always on CUDA cores.
inline bool gemm_on_tensor_cores(int64_t element_size, GemmMath math) {
  return element_size < 8 && math == GemmMath::kTensorCore;
}

// Blocks per SM of the GEMM launch_gemm runs for operands of `element_size`
// bytes and `math` (its __launch_bounds__ minimum, which its registers and
// shared memory meet): one wave of that GEMM is this many blocks per SM.
inline int gemm_blocks_per_sm(int64_t element_size, GemmMath math) {
  if (gemm_on_tensor_cores(element_size, math)) return GemmTensorCoreTile::kMinBlocks;
  return gemm_cuda_core_min_blocks(acc_size_for(element_size));
}

// Shared-memory wavefronts a warp spends per mma on a tile with 16-bit
// operands, in eighths: fragment loads (4 a 16-row A tile and 4 a pair of
// 8-column B tiles, every 16-deep k-step) plus staging (one 8-byte store a
// quad in either layout, 2 wavefronts a warp, counted conflict-free). The
// narrow tile takes 32, the wide one 22. Counting the k-contiguous stores'
// 2-way conflicts would give 36 and 24 in the forward, 40 and 28 in the
// weight gradient: the same ratio, within 5%.
template <typename Tile>
constexpr int tensor_core_wavefronts_x8() {
  constexpr int kSteps = Tile::BK / 16, kMma = Tile::kTilesM * Tile::kTilesN * kSteps;
  constexpr int kFragments = (4 * Tile::kTilesM + 4 * (Tile::kTilesN / 2)) * kSteps;
  constexpr int kStaging = 2 * (Tile::BM + Tile::BN) * Tile::BK / 4 / Tile::kThreads;
  return 8 * (kFragments + kStaging) / kMma;
}
static_assert(tensor_core_wavefronts_x8<GemmTensorCoreTile>() == 32 &&
              tensor_core_wavefronts_x8<GemmTensorCoreTileWide>() == 22, "the costs the comments quote");

// Whether a 16-bit GEMM runs the wide tensor-core tile (64 x 128) rather
// than the narrow one (64 x 64): the one with less estimated time, counted
// as gemm_cuda_core_tile counts it (rounds of resident blocks times a
// block's area), with the wavefronts above as the cost of an element; ties
// go to the narrow one. An estimate: no GPU has timed the wide tile yet.
// float operands keep the narrow tile: their quads along rows cannot be
// transposed by ldmatrix (scalar stores, as above), the wavefront count
// covers 16-bit operands only, and a tf32 wide tile has no tests.
inline bool gemm_tensor_core_wide(const GemmShape& shape, int64_t resident) {
  using Narrow = GemmTensorCoreTile;
  using Wide = GemmTensorCoreTileWide;
  return gemm_tile_time(shape, resident, Wide::BM, Wide::BN, tensor_core_wavefronts_x8<Wide>()) <
         gemm_tile_time(shape, resident, Narrow::BM, Narrow::BN, tensor_core_wavefronts_x8<Narrow>());
}

// Whether launch_gemm_tensor_core runs a GEMM of `element_size`-byte
// operands on the wide tile (16-bit operands only).
inline bool gemm_tensor_core_launch_wide(const GemmShape& shape, int64_t element_size, int multiprocessors) {
  const int64_t resident = int64_t(GemmTensorCoreTileWide::kMinBlocks) * multiprocessors;
  return element_size == 2 && gemm_tensor_core_wide(gemm_tile_choice_shape(shape), resident);
}

// The tile launch_gemm runs a GEMM on, for operands and results of
// `element_size` bytes: the choice both launchers make.
inline GemmTileShape gemm_launch_tile(const GemmShape& shape, int64_t element_size, GemmMath math,
                                      int multiprocessors) {
  if (gemm_on_tensor_cores(element_size, math)) {
    using Wide = GemmTensorCoreTileWide;
    using Narrow = GemmTensorCoreTile;
    return gemm_tensor_core_launch_wide(shape, element_size, multiprocessors) ? GemmTileShape{Wide::BM, Wide::BN}
                                                                              : GemmTileShape{Narrow::BM, Narrow::BN};
  }
  return gemm_tile_shape(gemm_cuda_core_launch_tile(shape, element_size, multiprocessors));
}

// Operand vector modes, divisors and splits are settled by launch_gemm, which calls this.
template <typename T, typename TC, typename OperandB>
const char* launch_gemm_tensor_core(const T* a, GemmOperand va, const T* b, OperandB vb, TC* c, GemmOutput vc,
                                    const T* bias, GemmShape shape, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (gemm_tensor_core_launch_wide(shape, sizeof(T), device_multiprocessors())) {
      using Tile = GemmTensorCoreTileWide;
      return launch_gemm_kernel<Tile>(gemm_tensor_core_kernel<T, TC, Tile, OperandB>, a, va, b, vb, c, vc, bias, shape,
                                      stream);
    }
  }
  using Tile = GemmTensorCoreTile;
  return launch_gemm_kernel<Tile>(gemm_tensor_core_kernel<T, TC, Tile, OperandB>, a, va, b, vb, c, vc, bias, shape,
                                  stream);
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
