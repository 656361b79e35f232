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
#pragma once

#include "conv2d_common.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// Element (i, k) of problem z = z1 * nz2 + z2 of an operand lies at
//   z1 * b1 + z2 * b2 + i * si + (k / kin) * sko + (k % kin) * sk,
// or, with kin == 0 (a reduction index that never wraps), at
//   z1 * b1 + z2 * b2 + i * si + k * sk.
// The forward and input-gradient GEMMs never wrap: kin == 0 spares every
// quad load of theirs a 64-bit division (a software routine on a GPU).
// `vec` says how quads are read: kVecNone (scalars, quads along i),
// kVecRows (4-wide vectors along i) or kVecRed (4-wide vectors along k).
enum GemmVec : int { kVecNone = 0, kVecRows = 1, kVecRed = 2 };

struct GemmOperand {
  int64_t si, sk, kin, sko, b1, b2;
  int vec;
};

// C(m, j) of problem z at z1 * b1 + z2 * b2 + m * ldc + j; bias (may be
// null) is indexed bias[z2 * bias_b2 + m]. `relu` clamps the finished value
// (after bias and accumulation) with torch's ReLU before the store.
struct GemmOutput {
  int64_t ldc, b1, b2, bias_b2;
  bool accumulate;
  bool relu = false;
};

struct GemmShape {
  int64_t M, N, K, nz1, nz2;
};

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;
  static constexpr int kThreads = kThreadsM * kThreadsN;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide quads");
};
using GemmTileLarge = GemmTile<128, 128, 8, 8, 8>;  // 256 threads, 8 x 8 each
using GemmTileSmall = GemmTile<64, 64, 8, 4, 4>;    // 256 threads, 4 x 4 each

// The quads of one BR x BK slice and the per-thread registers that hold them.
template <typename T, int BR, int BK, int THREADS>
struct GemmSlice {
  using A = acc_t<T>;
  static constexpr int kQuads = BR * BK / 4;
  static constexpr int kPerThread = (kQuads + THREADS - 1) / THREADS;
  A v[kPerThread][4];

  __device__ __forceinline__ static int64_t offset(const GemmOperand& op, int64_t i, int64_t k) {
    if (op.kin == 0) return i * op.si + k * op.sk;  // the same for every thread: no divergence
    return i * op.si + (k / op.kin) * op.sko + (k % op.kin) * op.sk;
  }

  // Quad q covers rows i..i+3 at reduction index k (along i) or row i at
  // k..k+3 (along k). Rows >= rows and k >= K read zero.
  __device__ __forceinline__ static void quad_coords(const GemmOperand& op, int q, int& i, int& k) {
    if (op.vec == kVecRed) {
      i = q / (BK / 4);
      k = (q % (BK / 4)) * 4;
    } else {
      k = q / (BR / 4);
      i = (q % (BR / 4)) * 4;
    }
  }

  __device__ __forceinline__ void load(const T* base, const GemmOperand& op, int64_t rows, int64_t K,
                                       int64_t i0, int64_t k0, int tid) {
#pragma unroll
    for (int t = 0; t < kPerThread; ++t) {
      const int q = tid + t * THREADS;
      if (q >= kQuads) break;
      int di, dk;
      quad_coords(op, q, di, dk);
      const int64_t i = i0 + di, k = k0 + dk;
      const bool whole_vector = op.vec == kVecRows ? (i + 3 < rows && k < K)
                                                   : (op.vec == kVecRed && i < rows && k + 3 < K);
      if (whole_vector) {
        const Pack<T, 4> pk = *reinterpret_cast<const Pack<T, 4>*>(base + offset(op, i, k));
#pragma unroll
        for (int u = 0; u < 4; ++u) v[t][u] = to_acc(pk.v[u]);
      } else {
        const bool along_k = op.vec == kVecRed;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int64_t iu = along_k ? i : i + u, ku = along_k ? k + u : k;
          v[t][u] = (iu < rows && ku < K) ? to_acc(base[offset(op, iu, ku)]) : A(0);
        }
      }
    }
  }

  // Writes the quads into a [BK][BR] shared-memory slice.
  __device__ __forceinline__ void store(A (*s)[BR], const GemmOperand& op, int tid) const {
#pragma unroll
    for (int t = 0; t < kPerThread; ++t) {
      const int q = tid + t * THREADS;
      if (q >= kQuads) break;
      int di, dk;
      quad_coords(op, q, di, dk);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        if (op.vec == kVecRed) {
          s[dk + u][di] = v[t][u];
        } else {
          s[dk][di + u] = v[t][u];
        }
      }
    }
  }
};

// Row (or column) of register u of a thread: TM/4 quads spread BM/(TM/4)
// apart, so a warp's shared-memory reads of one quad are contiguous.
template <int B, int TR>
__device__ __forceinline__ int gemm_local(int thread_coord, int u) {
  return (u / 4) * (B / (TR / 4)) + thread_coord * 4 + (u % 4);
}

template <typename T, typename TC, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads)
    gemm_kernel(const T* __restrict__ a, GemmOperand va, const T* __restrict__ b, GemmOperand vb,
                TC* c, GemmOutput vc, const T* __restrict__ bias, GemmShape shape) {
  using A = acc_t<T>;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int kThreads = Tile::kThreads;
  __shared__ A as[2][BK][BM];
  __shared__ A bs[2][BK][BN];
  const int tid = static_cast<int>(threadIdx.x);
  const int tn = tid % Tile::kThreadsN, tm = tid / Tile::kThreadsN;
  const int64_t tiles_m = ceil_div(shape.M, BM), tiles_n = ceil_div(shape.N, BN);
  const int64_t items = shape.nz1 * shape.nz2 * tiles_m * tiles_n;
  const int64_t slices = ceil_div(shape.K, BK);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    int64_t rest = item;
    const int64_t tile_n = rest % tiles_n;
    rest /= tiles_n;
    const int64_t tile_m = rest % tiles_m;
    rest /= tiles_m;
    const int64_t z2 = rest % shape.nz2, z1 = rest / shape.nz2;
    const T* a_z = a + z1 * va.b1 + z2 * va.b2;
    const T* b_z = b + z1 * vb.b1 + z2 * vb.b2;
    const int64_t m0 = tile_m * BM, n0 = tile_n * BN;

    A acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

    GemmSlice<T, BM, BK, kThreads> ra;
    GemmSlice<T, BN, BK, kThreads> rb;
    ra.load(a_z, va, shape.M, shape.K, m0, 0, tid);
    rb.load(b_z, vb, shape.N, shape.K, n0, 0, tid);
    ra.store(as[0], va, tid);
    rb.store(bs[0], vb, tid);
    __syncthreads();
    for (int64_t sl = 0; sl < slices; ++sl) {
      const int cur = static_cast<int>(sl & 1);
      const bool more = sl + 1 < slices;
      if (more) {  // global loads in flight while this slice is multiplied
        ra.load(a_z, va, shape.M, shape.K, m0, (sl + 1) * BK, tid);
        rb.load(b_z, vb, shape.N, shape.K, n0, (sl + 1) * BK, tid);
      }
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        A ar[TM], br[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) ar[i] = as[cur][kk][gemm_local<BM, TM>(tm, i)];
#pragma unroll
        for (int j = 0; j < TN; ++j) br[j] = bs[cur][kk][gemm_local<BN, TN>(tn, j)];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += ar[i] * br[j];
      }
      if (more) {  // the other buffer was last read before the previous barrier
        ra.store(as[cur ^ 1], va, tid);
        rb.store(bs[cur ^ 1], vb, tid);
      }
      __syncthreads();
    }

    TC* c_z = c + z1 * vc.b1 + z2 * vc.b2;
    const T* bias_z = bias != nullptr ? bias + z2 * vc.bias_b2 : nullptr;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + gemm_local<BM, TM>(tm, i);
      if (m >= shape.M) continue;
      const A bm = bias_z != nullptr ? to_acc(bias_z[m]) : A(0);
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t n = n0 + gemm_local<BN, TN>(tn, j);
        if (n >= shape.N) continue;
        TC* dst = c_z + m * vc.ldc + n;
        A v = acc[i][j] + bm;
        if (vc.accumulate) v += to_acc(*dst);
        *dst = from_acc<TC>(conv_epilogue(v, vc.relu));
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

// The tensor-core GEMM (gemm_tensor_core.cuh, which includes this header).
template <typename T, typename TC>
const char* launch_gemm_tensor_core(const T* a, GemmOperand va, const T* b, GemmOperand vb, TC* c, GemmOutput vc,
                                    const T* bias, GemmShape shape, cudaStream_t stream);

// `math` chooses CUDA cores or tensor cores; double always runs on CUDA cores.
template <typename T, typename TC>
const char* launch_gemm(const T* a, GemmOperand va, const T* b, GemmOperand vb, TC* c, GemmOutput vc,
                        const T* bias, GemmShape shape, GemmMath math, cudaStream_t stream) {
  const int64_t problems = shape.nz1 * shape.nz2;
  if (problems == 0 || shape.M == 0 || shape.N == 0) return launch_status();
  va.vec = gemm_vec_mode(a, va);
  vb.vec = gemm_vec_mode(b, vb);
  if constexpr (!std::is_same_v<T, double>) {
    if (math == GemmMath::kTensorCore) return launch_gemm_tensor_core(a, va, b, vb, c, vc, bias, shape, stream);
  }
  // Large tiles only when both sides fill them; small problems (most
  // convolutions of small images) would leave most of a 128 x 128 tile idle.
  if (shape.M >= 128 && shape.N >= 128) {
    const int64_t items = problems * ceil_div(shape.M, 128) * ceil_div(shape.N, 128);
    auto kernel = gemm_kernel<T, TC, GemmTileLarge>;
    SIMT_LAUNCH(kernel, conv_grid(items), GemmTileLarge::kThreads, 0, stream, a, va, b, vb, c, vc, bias, shape);
  } else {
    const int64_t items = problems * ceil_div(shape.M, 64) * ceil_div(shape.N, 64);
    auto kernel = gemm_kernel<T, TC, GemmTileSmall>;
    SIMT_LAUNCH(kernel, conv_grid(items), GemmTileSmall::kThreads, 0, stream, a, va, b, vb, c, vc, bias, shape);
  }
  return launch_status();
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
