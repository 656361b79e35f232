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
// eighth (2 x 2 mma tiles of 16 x 8). BK = 32 deep slices of A and B pass
// through double-buffered shared memory as the mma's input format (16-bit
// elements, or tf32 bit patterns), both operands stored k-contiguous
// ([row][k]) so that every fragment register is one 32-bit word and a whole
// fragment is one ldmatrix (A: .x4, B: .x2; a warp's k-step of 2 x 2 mma
// tiles takes 4 shared loads, where 32-bit loads took 12). The global loads
// are gemm_kernel's (GemmSlice: 4-wide vectors where the view allows),
// converted to the input format as they are stored.
#pragma once

#include "gemm.cuh"
#include "mma.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// The shared-memory element of operand type T, and the mma that consumes it.
// Rows are padded so that a fragment load (ldmatrix) is conflict-free: each of
// its phases reads 8 rows of 4 words, and a row stride of 20 (16-bit: 40
// elements) or 36 (tf32) words maps the 8 rows to bank offsets 4 apart (all
// 32 banks); both strides are 16-byte multiples, as ldmatrix's rows must be.
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
  static_assert(WM % 16 == 0 && WN % 8 == 0 && BK % 16 == 0, "tiles are made of whole mma tiles");
};
using GemmTensorCoreTile = TensorCoreTile<64, 64, 32, 2, 4, 2>;  // 256 threads, 32 x 16 per warp

// Element u of a quad, u chosen per lane: selects rather than an indexed
// register array, which nvcc would put in local memory.
template <typename A>
__device__ __forceinline__ A quad_element(const A (&v)[4], int u) {
  return u == 0 ? v[0] : u == 1 ? v[1] : u == 2 ? v[2] : v[3];
}

// Converts one GemmSlice (BR x BK quads in registers) into the [BR][LD]
// shared-memory slice the fragments are read from. The row pitch is fixed by
// the fragment loads (20 or 36 words, TensorCoreInput: they run every k-step,
// the staging once a slice), so the stores are arranged around it:
// - kVecRed (a quad is 4 consecutive k of one row): one 8-byte (16-bit) or
//   16-byte (tf32) vector store. A 16-byte phase (8 lanes) covers one whole
//   row: conflict-free; an 8-byte phase (16 lanes) two rows 20 words apart:
//   2-way in 4 banks (a pitch of 16 mod 32 words would avoid that but break
//   the fragment loads).
// - kVecRows (a quad is 4 consecutive rows at one k): the warp's 16 quads of
//   one k start 4 rows apart, 16 * (quad % 2) mod 32 banks: written element
//   by element in the same order, 16 lanes hit 2 banks (8-way). So quad
//   pair a = (quad / 2) % 4 starts at element a: at each step the lanes
//   cover every (quad % 2, element) pair, whose rows' offsets 16 * (quad % 2)
//   + 20 * element (16-bit) or + 4 * element (tf32) mod 32 are 8 distinct
//   banks (16 with tf32's two k columns): 2-way at most.
template <typename T, int BR, int BK, int THREADS, int LD>
__device__ __forceinline__ void stage_tensor_core_slice(const GemmSlice<T, BR, BK, THREADS>& slice,
                                                        typename TensorCoreInput<T>::Stored (*s)[LD],
                                                        const GemmOperand& op, int tid) {
  using In = TensorCoreInput<T>;
  using Stored = typename In::Stored;
  using Slice = GemmSlice<T, BR, BK, THREADS>;
#pragma unroll
  for (int t = 0; t < Slice::kPerThread; ++t) {
    const int q = tid + t * THREADS;
    if (q >= Slice::kQuads) break;
    int di, dk;
    Slice::quad_coords(op, q, di, dk);
    if (op.vec == kVecRed) {
      Stored staged[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) staged[u] = In::stage(slice.v[t][u]);
      smem_store_vector<4>(&s[di][dk], staged);
    } else {
      const int first = (di / 8) % 4;  // di = 4 * quad
#pragma unroll
      for (int step = 0; step < 4; ++step) {
        const int u = (first + step) % 4;
        s[di + u][dk] = In::stage(quad_element(slice.v[t], u));
      }
    }
  }
}

// Fragment r of a 16-row A tile (or 8-row B tile) starting at `row`, k-step
// at word `kw`: PTX's layouts (csrc/simt/simt.h) in 32-bit words are
//   A: row + g + 8 (r % 2), word kw + t + 4 (r / 2);  B: row + g, word kw + t + 4 r
// (g = lane / 4, t = lane % 4) for f16/bf16 and tf32 alike: a tf32 word is
// two 16-bit halves to ldmatrix, moved as they lie in memory. That is word t
// of row g of the 8 x 4-word matrix r, which ldmatrix hands lane `lane` as
// register r. So lane 8 r + i gives row i of matrix r: for A, rows row + 8
// (r % 2) + i at word kw + 4 (r / 2); for B, row + i at word kw + 4 r (lanes
// 16-31, whose addresses .x2 ignores, repeat lanes 0-15's).
template <typename Stored, int LD>
__device__ __forceinline__ MmaFragA load_fragment_a(const Stored (*s)[LD], int row, int kw, int lane) {
  constexpr int kPerWord = sizeof(uint32_t) / sizeof(Stored);
  const int r = lane / 8, i = lane % 8;
  MmaFragA f;
  ldmatrix_x4(f.r, &s[row + 8 * (r % 2) + i][(kw + 4 * (r / 2)) * kPerWord]);
  return f;
}
template <typename Stored, int LD>
__device__ __forceinline__ MmaFragB load_fragment_b(const Stored (*s)[LD], int row, int kw, int lane) {
  constexpr int kPerWord = sizeof(uint32_t) / sizeof(Stored);
  const int r = (lane / 8) % 2, i = lane % 8;
  MmaFragB f;
  ldmatrix_x2(f.r, &s[row + i][(kw + 4 * r) * kPerWord]);
  return f;
}

// Eight warps of 32 x 16 rather than four of 32 x 32: half the accumulators
// and half the staged quads a thread, so two blocks per SM (16 warps, 25%
// occupancy, at most 128 registers) fit without spills (~112-117 registers on
// sm_80 and sm_90, nvcc 13). Four warps of 32 x 32 needed ~160 registers: 3
// blocks (18.75%), and spilled when held to 128.
template <typename T, typename TC, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    gemm_tensor_core_kernel(const T* __restrict__ a, GemmOperand va, const T* __restrict__ b, GemmOperand vb,
                            TC* c, GemmOutput vc, const T* __restrict__ bias, GemmShape shape) {
  using In = TensorCoreInput<T>;
  using Stored = typename In::Stored;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, LD = BK + In::kPad;
  constexpr int kThreads = Tile::kThreads, kWordsK = In::kMmaK / In::kPerWord;
  // One aligned struct: ldmatrix reads 16-byte rows.
  struct alignas(16) Slices {
    Stored a[2][BM][LD];
    Stored b[2][BN][LD];
  };
  __shared__ Slices smem;
  auto& as = smem.a;
  auto& bs = smem.b;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int wm0 = (warp / Tile::WARPS_N) * Tile::WM, wn0 = (warp % Tile::WARPS_N) * Tile::WN;
  const int M = static_cast<int>(shape.M), N = static_cast<int>(shape.N);
  const int64_t items = gemm_work_items<BM, BN>(shape);
  const int range_len = gemm_range_len(shape);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const GemmWorkItem w = gemm_work_item<BM, BN>(item, shape, range_len);
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
    GemmSlice<T, BN, BK, kThreads> rb;
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
        for (int i = 0; i < Tile::kTilesM; ++i) fa[i] = load_fragment_a(as[cur], wm0 + 16 * i, kw, lane);
#pragma unroll
        for (int j = 0; j < Tile::kTilesN; ++j) fb[j] = load_fragment_b(bs[cur], wn0 + 8 * j, kw, lane);
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
    TC* c_z = c + w.z1 * vc.b1 + w.z2 * vc.b2 + w.split * vc.bsplit;
    const T* bias_z = bias != nullptr ? bias + w.z2 * vc.bias_b2 : nullptr;
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
            if (vc.accumulate) v += to_acc(*dst);
            *dst = from_acc<TC>(conv_epilogue(v, vc.relu));
          }
        }
      }
    }
  }
}

// Blocks per SM of the GEMM launch_gemm runs for operands of `element_size`
// bytes and `math` (its __launch_bounds__ minimum, which its registers and
// shared memory meet): one wave of that GEMM is this many blocks per SM.
inline int gemm_blocks_per_sm(int64_t element_size, GemmMath math) {
  if (element_size < 8 && math == GemmMath::kTensorCore) return GemmTensorCoreTile::kMinBlocks;
  return gemm_cuda_core_min_blocks(acc_size_for(element_size));
}
// The most of either GEMM: workspace sized by it fits the splits of both.
inline int gemm_max_blocks_per_sm(int64_t element_size) {
  const int cuda_core = gemm_blocks_per_sm(element_size, GemmMath::kCudaCore);
  const int tensor_core = gemm_blocks_per_sm(element_size, GemmMath::kTensorCore);
  return cuda_core > tensor_core ? cuda_core : tensor_core;
}

// Operand vector modes, divisors and splits are settled by launch_gemm, which calls this.
template <typename T, typename TC>
const char* launch_gemm_tensor_core(const T* a, GemmOperand va, const T* b, GemmOperand vb, TC* c, GemmOutput vc,
                                    const T* bias, GemmShape shape, cudaStream_t stream) {
  using Tile = GemmTensorCoreTile;
  return launch_gemm_kernel<Tile>(gemm_tensor_core_kernel<T, TC, Tile>, a, va, b, vb, c, vc, bias, shape, stream);
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
