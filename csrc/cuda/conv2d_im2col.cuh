// The im2col convolution path: unfold a chunk of images into a column
// matrix, then multiply with our GEMM (gemm.cuh).
//   forward          Y_g[Kg x PQ]     = W_g[Kg x CgRS] * col_g[CgRS x PQ]     (+ bias)
//                    (then ReLU in the GEMM's epilogue for conv2d_relu); the
//                    GEMM gathers col_g from the input as it loads it
//                    (gemm_im2col_gather.cuh, im2col_gathers): no column buffer;
//                    split-K where its tiles fill under a wave (batch 1, small
//                    images), the bias and ReLU then added by the partials' pass
//   backward input   dcol_g[CgRS x PQ] = W_g^T * dY_g, then col2im (a gather);
//                    at stride 1 one GEMM gathers dY_g and writes
//                    dX_g[Cg x HW] = W_g[Cg x (Kg R S)] * dY_g gathered
//                    (split-K where its tiles fill under a wave)
//   backward weight  dW_g[Kg x CgRS]  = sum over images dY_g * col_g^T, the
//                    images folded into the GEMM's reduction index, which is
//                    split (split-K) to fill the GPU; splits and chunks are
//                    added in order (deterministic); col_g is gathered as in
//                    the forward
// The column buffer (workspace) holds `chunk` images of col[C*R*S][P*Q]:
// im2col_chunk_images keeps it under 256 MiB.
#pragma once

#include <string_view>

#include "conv2d_common.cuh"
#include "gemm_im2col_gather.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// col[n][c][r][s][oh][ow] = input[n0 + n][c][oh*sh - ph + r*dh][ow*sw - pw + s*dw] (0 outside).
// kRun consecutive elements a thread, consecutive threads along ow. With
// kRun = 4 the flat index is split once, for the first, and the other three
// step along ow, wrapping into oh and the next (c, r, s) row where a row of
// output pixels ends: one element a thread splits it every time, 4
// FastDivmods an element (about 20 integer instructions beside one load and
// one store). launch_im2col takes runs of 4 only where they still give
// every SM 4096 threads (twice the 2048 an SM holds on sm_80 and sm_90;
// 1536 on sm_86 and sm_89), so small launches keep one element a thread and
// all their parallelism. Where the column buffer is aligned for it (`vec`)
// a run is stored as one vector: 8 bytes (16-bit), 16 (float) or 32
// (double, two 16-byte stores) a lane, where scalar stores 4 elements apart
// would write each sector 4 times. The price: a warp's loads of one step of
// the runs read elements 4 strides apart, so L1 serves about 4 times the
// wavefronts for the same DRAM traffic.
// Launches cover at most 2^30 elements (launch_im2col), so the flat index
// is split with 32-bit FastDivmods, not 64-bit divisions.
struct Im2colDivisors {
  FastDivmod out_hw, RS, out_w, kernel_w;
};
constexpr int64_t kIm2colRunThreadsPerSm = 4096;

template <typename T, int kRun>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    im2col_kernel(const T* __restrict__ input, T* __restrict__ col, Conv2dParams p, int total, Im2colDivisors d,
                  bool vec) {
  const int64_t in_hw = p.in_h * p.in_w;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int ph = static_cast<int>(p.pad_h), pw = static_cast<int>(p.pad_w);
  const uint32_t P = static_cast<uint32_t>(p.out_h), Q = static_cast<uint32_t>(p.out_w);
  const uint32_t R = static_cast<uint32_t>(p.kernel_h), S = static_cast<uint32_t>(p.kernel_w);
  const int runs = total / kRun + (total % kRun != 0);
  for (int q = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); q < runs;
       q += static_cast<int>(gridDim.x * blockDim.x)) {
    const int e0 = kRun * q;
    uint32_t row, pix, nc, rs, oh, ow, r, s;
    d.out_hw.divmod(static_cast<uint32_t>(e0), row, pix);  // row = (n * C + c) * RS + rs
    d.RS.divmod(row, nc, rs);
    d.out_w.divmod(pix, oh, ow);
    d.kernel_w.divmod(rs, r, s);
    Pack<T, kRun> out;
#pragma unroll
    for (int u = 0; u < kRun; ++u) {
      const int ih = static_cast<int>(oh) * sh - ph + static_cast<int>(r) * dh;
      const int iw = static_cast<int>(ow) * sw - pw + static_cast<int>(s) * dw;
      const bool inside = e0 + u < total && ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w;
      out.v[u] = inside ? input[nc * in_hw + ih * p.in_w + iw] : from_acc<T>(acc_t<T>(0));
      if (kRun > 1 && ++ow == Q) {  // the next element starts a row of output pixels, or a new (c, r, s)
        ow = 0;
        if (++oh == P) {
          oh = 0;
          if (++s == S) {
            s = 0;
            if (++r == R) r = 0, ++nc;
          }
        }
      }
    }
    if (vec && e0 + kRun <= total) {
      *reinterpret_cast<Pack<T, kRun>*>(col + e0) = out;
    } else {
#pragma unroll
      for (int u = 0; u < kRun; ++u) {
        if (e0 + u < total) col[e0 + u] = out.v[u];
      }
    }
  }
}

// grad_input[n][c][ih][iw] = sum of dcol[n][c][r][s][oh][ow] over the taps
// that read (ih, iw): each thread owns one input element and gathers (no
// atomics, fixed order). Launches cover at most 2^30 elements. kUnitStride
// (stride 1 both ways, every seed layer) drops the divisibility tests and
// the divisions by the stride, which are real integer divisions on a GPU
// (the stride is a run-time value): 36 of them an element for a 3x3 kernel.
template <typename T, bool kUnitStride>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    col2im_kernel(const acc_t<T>* __restrict__ dcol, T* __restrict__ grad_input, Conv2dParams p, int total,
                  FastDivmod in_hw_div, FastDivmod in_w_div) {
  using A = acc_t<T>;
  const int64_t RS = p.kernel_h * p.kernel_w, out_hw = p.out_pixels();
  const int P = static_cast<int>(p.out_h), Q = static_cast<int>(p.out_w);
  const int R = static_cast<int>(p.kernel_h), S = static_cast<int>(p.kernel_w);
  const int sh = kUnitStride ? 1 : static_cast<int>(p.stride_h), sw = kUnitStride ? 1 : static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int ph = static_cast<int>(p.pad_h), pw = static_cast<int>(p.pad_w);
  for (int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); e < total;
       e += static_cast<int>(gridDim.x * blockDim.x)) {
    uint32_t nc, hw, ih32, iw32;
    in_hw_div.divmod(static_cast<uint32_t>(e), nc, hw);
    in_w_div.divmod(hw, ih32, iw32);
    const int ih = static_cast<int>(ih32), iw = static_cast<int>(iw32);
    const A* rows = dcol + nc * RS * out_hw;
    A sum = A(0);
    for (int r = 0; r < R; ++r) {
      const int t = ih + ph - r * dh;
      if (t < 0 || (!kUnitStride && t % sh != 0) || t / sh >= P) continue;
      for (int s = 0; s < S; ++s) {
        const int u = iw + pw - s * dw;
        if (u < 0 || (!kUnitStride && u % sw != 0) || u / sw >= Q) continue;
        sum += rows[(r * S + s) * out_hw + (t / sh) * Q + u / sw];
      }
    }
    grad_input[e] = from_acc<T>(sum);
  }
}

// A reduction index that never wraps (GemmOperand::kin == 0): element (i, k)
// lies at i * si + k * sk, with no division.
constexpr int64_t kGemmNoWrap = 0;

// FASTCONV_IM2COL_GATHER=0 (read once) turns the gathering GEMMs off: every
// im2col pass then unfolds its columns into the buffer, and the input
// gradient folds them back with col2im. A switch to compare the two paths on
// a GPU (or to fall back, should a gather misbehave there), and the way the
// tests reach the unfolding kernels of float and double.
inline bool im2col_gather_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("FASTCONV_IM2COL_GATHER");
    return value == nullptr || std::string_view(value) != "0";
  }();
  return enabled;
}

// Whether the forward and the weight gradient gather their columns in the
// GEMM rather than unfolding them: on tensor cores, and on CUDA cores for
// float and double (double always runs there, whatever `math` says). 16-bit
// GEMMs run on CUDA cores only before sm_80 and keep explicit columns there.
// A 1x1 stride-1 convolution's columns are the input itself, read with
// vector loads. Offsets within one image's group of channels must stay
// 32-bit (Im2colGatherGeometry): an image whose group holds 2^31 elements
// or more unfolds instead, one image a chunk (and fails cleanly where its
// column matrix passes 2^30 elements).
inline bool im2col_gathers(const Conv2dParams& p, GemmMath math, int64_t element_size) {
  return im2col_gather_enabled() && (math == GemmMath::kTensorCore || element_size >= 4) &&
         !p.im2col_is_identity() && p.in_channels_per_group() * p.in_h * p.in_w < kFastDivmodLimit;
}
// The input gradient gathers grad_output in its GEMM and writes grad_input
// itself (no fp32 column gradient, no col2im) at stride 1, where every tap of
// an input pixel reads an output pixel or padding; at larger strides most
// taps fall between output pixels, which only a division per tap would tell.
// Its GEMM's rows are the input channels of a group, padded to 64-row tiles,
// where the explicit one's are channels times taps.
// - On tensor cores, whose GEMMs the loads and the column traffic bound,
//   it gathers from kGatherMinInputChannels a group: below, most of each
//   tile would multiply zeros (the GPU model: VGG16's 3->64 @224 at batch
//   32 in half, 221 us gathered against 168 unfolded; 8 channels a group
//   @36, 6.2 against 54).
// - On CUDA cores a GEMM is bound by its multiply-adds, padded rows
//   included, so it gathers only where the channels fill at least 3/4 of
//   their 64-row tiles (48, 64, 96, 128, ...): with 32 (convnet4's 32->64
//   @74, float, batch 32, H100) the model has the gathered GEMM at 0.5 of
//   the tile against the unfolded one's 288 rows at 0.9 plus col2im.
// The group's P x Q planes it reads keep 32-bit offsets too.
constexpr int64_t kGatherMinInputChannels = 8;
inline bool im2col_gathers_input_gradient(const Conv2dParams& p, GemmMath math, int64_t element_size) {
  const int64_t Cg = p.in_channels_per_group(), tile_rows = GemmTileSmall::BM;  // the wide tile's too
  const bool rows_pay = gemm_on_tensor_cores(element_size, math)
                            ? Cg >= kGatherMinInputChannels
                            : 4 * Cg >= 3 * ceil_div(Cg, tile_rows) * tile_rows;
  return im2col_gathers(p, math, element_size) && p.stride_h == 1 && p.stride_w == 1 && rows_pay &&
         p.out_channels_per_group() * p.out_pixels() < kFastDivmodLimit;
}
// Images per gathering GEMM launch of rows x cols outputs per problem: its
// work items (at most one a 64 x 64 tile, the smallest GEMM tile)
// stay below 2^31.
inline int64_t im2col_gather_chunk_images(const Conv2dParams& p, int64_t rows, int64_t cols) {
  const int64_t per_image = p.groups * ceil_div(rows, 64) * ceil_div(cols, 64);
  const int64_t chunk = (kFastDivmodLimit - 1) / (per_image > 0 ? per_image : 1);
  return chunk < 1 ? 1 : chunk;
}

// Split-K for a GEMM whose `tiles` output tiles would not fill the GPU: its
// reduction of `K` indices is cut into enough ranges for kSplitWaves full
// waves of the chosen GEMM (blocks_per_sm blocks, gemm_blocks_per_sm, on
// each of the GPU's multiprocessors): a second wave lets blocks that finish
// early pick up work where one exact wave would idle them at its end. No
// range but the last is shorter than kMinSplitLen (16 k-slices of the GEMM:
// below that, writing and re-reading a tile of partials costs as much as
// the range's multiply-adds), and a reduction shorter than two such ranges
// stays whole: at most ceil(K / kMinSplitLen) ranges, whose
// lengths round up to whole multiples of kGemmSplitAlign. (At most
// K / kMinSplitLen rounded 7,200 indices in 56 ranges up to 192 each, which
// left 18 ranges empty and the busy ones two rounds of 192 long, where 57
// ranges of 128 take two rounds of 128: 128 -> 128 @17's weight gradient at
// batch 32 on an H100, 63 us against 45 in the model.) The partials (fp32
// for half/bfloat16) are summed in split order (deterministic). The cap on
// splits only guards tiny-output layers with huge reductions (the weight
// gradient of 3 -> 64).
constexpr int64_t kMinSplitLen = 128, kMaxSplits = 1024, kSplitWaves = 2;

inline int64_t im2col_gemm_splits(int64_t tiles, int64_t K, int multiprocessors, int blocks_per_sm) {
  int64_t splits = ceil_div(kSplitWaves * blocks_per_sm * multiprocessors, tiles > 0 ? tiles : 1);
  if (K < 2 * kMinSplitLen) return 1;
  const int64_t by_length = ceil_div(K, kMinSplitLen);
  if (splits > by_length) splits = by_length;
  if (splits > kMaxSplits) splits = kMaxSplits;
  return splits < 1 ? 1 : splits;
}

// The output tiles of one reduction range on the tile a split GEMM runs: on
// tensor cores the narrow 64 x 64 tile (16-bit GEMMs may still take the
// 64 x 128 one, where its rounds favour it); on CUDA cores the largest-area
// tile a split problem may take (gemm_tiles_per_split; the launch then picks
// its own: 128 -> 128 @17's forward at batch 32 runs its 9 ranges on the
// large tile, where the unsplit one took the small). (Counted on the
// CUDA-core tile, tensor-core GEMMs were split 2-4 times too finely, the
// model, H100, half, at batch 32: the input gradient of 64 -> 128 @36, 16 us
// against 11; the weight gradient of 128 -> 128 @17 in 56 ranges, which
// wrote and read back 33 MB of partials, 21 us against 6.7 in 15.)
inline int64_t im2col_split_tiles(const GemmShape& one, int64_t element_size, GemmMath math) {
  return gemm_on_tensor_cores(element_size, math)
             ? gemm_tile_items(one, GemmTensorCoreTile::BM, GemmTensorCoreTile::BN)
             : gemm_tiles_per_split(one, device_fp32_lanes_per_sm());
}

// The weight gradient's GEMM has M = Kg, N = Cg*R*S: few output tiles for
// the usual layers (64 -> 64 channels, 3x3: 9 tiles on 132 SMs), each with
// a reduction over a whole chunk of images, so it is split.
inline int64_t im2col_wgrad_splits(const Conv2dParams& p, int64_t images, int multiprocessors, int64_t element_size,
                                   GemmMath math) {
  const GemmShape one{p.out_channels_per_group(), p.patch_size(), images * p.out_pixels(), 1, p.groups};
  return im2col_gemm_splits(im2col_split_tiles(one, element_size, math), one.K, multiprocessors,
                            gemm_blocks_per_sm(element_size, math));
}
// How a GEMM of per-image problems (the forward, the gathering input
// gradient) is split: problems from `whole` on in `splits` ranges each.
struct Im2colSplit {
  int64_t splits = 1, whole = 0;
};

// A GEMM whose tiles fill between one and two waves leaves most of its
// second wave idle (64 -> 128 @36's forward at batch 32 on an H100: 320
// large tiles on 264 slots, so 56 tiles run alone after the first 264).
// Its first wave of problems then runs whole, and the remaining problems are
// split, their ranges' partials added into the result by the same pass as
// the split of a small GEMM. The split count fills the second wave at least
// (kSplitWaves) with ranges no shorter than kMinSplitLen, none empty; of
// those, the one the rounds estimate (gemm_tail_finish) says finishes first,
// a range's partials costing as much as kMinSplitLen indices of its
// multiply-adds; and only where that beats running every problem whole.
// 64 -> 128 @36's forward: 26 images whole and 6 in 5 ranges of 128 (of
// 576), 560 blocks, an estimated 1,088 indices against 1,152 whole.
inline Im2colSplit im2col_tail_split(const GemmShape& one, int multiprocessors, int64_t element_size,
                                     GemmMath math) {
  const GemmTileShape tile = gemm_launch_tile(one, element_size, math, multiprocessors);
  const int64_t resident = int64_t(gemm_blocks_per_sm(element_size, math)) * multiprocessors;
  const int64_t per_problem = gemm_tiles_per_problem(one, tile.bm, tile.bn), tiles = per_problem * one.nz1;
  const int64_t whole = resident / per_problem;  // problems that fit the first wave
  // The partials have C's type (launch_gemm): half and bfloat16 results keep every problem whole.
  if (acc_size_for(element_size) != element_size) return Im2colSplit{};
  if (tiles >= kSplitWaves * resident || whole < 1 || whole >= one.nz1) return Im2colSplit{};
  const int64_t whole_tiles = whole * per_problem, split_tiles = tiles - whole_tiles;
  const int64_t fewest = ceil_div(kSplitWaves * resident - whole_tiles, split_tiles);
  Im2colSplit best{};
  int64_t best_finish = ceil_div(tiles, resident) * one.K;  // every problem whole
  for (int64_t splits = fewest > 2 ? fewest : 2; splits <= kMaxSplits; ++splits) {
    const int64_t len = gemm_split_len(one.K, splits);
    if (len < kMinSplitLen) break;
    if (ceil_div(one.K, len) < splits) continue;  // the last range would be empty
    const int64_t finish = gemm_tail_finish(whole_tiles, split_tiles * splits, one.K, len + kMinSplitLen, resident);
    if (finish < best_finish) best = Im2colSplit{splits, whole}, best_finish = finish;
  }
  return best;
}

// A GEMM whose output tiles fill under one wave of the GPU (the forward at
// batch 1 or on small images: 64 -> 128 @36 has 38 tiles for 264 block
// slots on an H100; the gathering input gradient, whose GEMM has Cg rows
// where the unfolding one has Cg*R*S: 128 -> 128 @17 fills a quarter of a
// wave) is split the same way as the weight gradient, into partials of the
// whole chunk that one pass adds into the result. Close under a wave it
// costs about as much as it gains (in the model as it was when this rule
// was set, counting waves and not rounds: the same layer's forward on
// tensor cores, 256 tiles of 264, 17.9 us in three ranges against 14.0
// whole, TF32; half 8.4 against 7.0), where stopping at half a wave would
// lose more elsewhere (on CUDA cores a split problem also moves to the
// large tile: 64 -> 128 @36's input gradient at batch 32, 115 against 141
// us whole). Between one and two waves see im2col_tail_split.
inline Im2colSplit im2col_result_split(const GemmShape& one, int multiprocessors, int64_t element_size,
                                       GemmMath math) {
  const int64_t tiles = im2col_split_tiles(one, element_size, math);
  const int blocks_per_sm = gemm_blocks_per_sm(element_size, math);
  if (tiles < int64_t(blocks_per_sm) * multiprocessors) {
    return Im2colSplit{im2col_gemm_splits(tiles, one.K, multiprocessors, blocks_per_sm), 0};
  }
  return im2col_tail_split(one, multiprocessors, element_size, math);
}

// The forward's GEMM of `images`: Kg x P*Q outputs a problem, over Cg*R*S.
// Its partials' second pass divides in 32 bits: at 2^31 outputs or more
// (never under a wave of tiles) it stays whole.
inline GemmShape im2col_forward_shape(const Conv2dParams& p, int64_t images) {
  return GemmShape{p.out_channels_per_group(), p.out_pixels(), p.patch_size(), images, p.groups};
}
inline Im2colSplit im2col_forward_split(const Conv2dParams& p, int64_t images, int multiprocessors,
                                        int64_t element_size, GemmMath math) {
  if (images * p.out_channels * p.out_pixels() >= kFastDivmodLimit) return Im2colSplit{};
  return im2col_result_split(im2col_forward_shape(p, images), multiprocessors, element_size, math);
}
// The gathering input gradient's GEMM: Cg x H*W outputs a problem, over Kg*R*S.
inline GemmShape im2col_input_gradient_gather_shape(const Conv2dParams& p, int64_t images) {
  return GemmShape{p.in_channels_per_group(), p.in_h * p.in_w, p.out_channels_per_group() * p.kernel_h * p.kernel_w,
                   images, p.groups};
}
inline Im2colSplit im2col_input_gradient_gather_split(const Conv2dParams& p, int64_t images, int multiprocessors,
                                                      int64_t element_size, GemmMath math) {
  return im2col_result_split(im2col_input_gradient_gather_shape(p, images), multiprocessors, element_size, math);
}

// The largest of f(images) over the chunks a batch runs in: a whole chunk,
// or the shorter last one (fewer tiles, so more splits). Workspace that
// holds one chunk's split partials is sized by it.
template <typename F>
inline int64_t im2col_most_over_chunks(int64_t batch, int64_t chunk, F f) {
  int64_t most = 0;
  for (int64_t images : {chunk < batch ? chunk : batch, chunk > 0 ? batch % chunk : 0}) {
    const int64_t value = images > 0 ? f(images) : 0;
    most = value > most ? value : most;
  }
  return most;
}
// Room for the partials of a split chunk of `per_image` results an image:
// the ranges of its split images.
template <typename SplitOf>
inline int64_t im2col_split_partials_elems(int64_t batch, int64_t chunk, int64_t per_image, SplitOf split_of) {
  return im2col_most_over_chunks(batch, chunk, [&](int64_t images) {
    const Im2colSplit split = split_of(images);
    return split.splits > 1 ? split.splits * (images - split.whole) * per_image : 0;
  });
}

// The forward's chunk of images, and its workspace: the column buffer (none
// where the GEMM gathers, or for 1x1 stride-1 convolutions), then the
// partials of a split chunk.
inline int64_t im2col_forward_chunk_images(const Conv2dParams& p, int64_t element_size, GemmMath math) {
  return im2col_gathers(p, math, element_size)
             ? im2col_gather_chunk_images(p, p.out_channels_per_group(), p.out_pixels())
             : im2col_chunk_images(p, element_size);
}
inline int64_t im2col_column_workspace(const Conv2dParams& p, int64_t element_size, GemmMath math) {
  if (p.im2col_is_identity() || im2col_gathers(p, math, element_size)) return 0;
  return round_up16(im2col_chunk_images(p, element_size) * im2col_column_elems(p) * element_size);
}
inline int64_t im2col_forward_workspace(const Conv2dParams& p, int64_t element_size, GemmMath math) {
  const int64_t partials = im2col_split_partials_elems(
      p.batch, im2col_forward_chunk_images(p, element_size, math), p.out_channels * p.out_pixels(),
      [&](int64_t images) { return im2col_forward_split(p, images, device_multiprocessors(), element_size, math); });
  return im2col_column_workspace(p, element_size, math) + round_up16(partials * acc_size_for(element_size));
}
// Gathering, the input gradient needs room only for the partials of a split chunk.
inline int64_t im2col_backward_input_workspace(const Conv2dParams& p, int64_t element_size, GemmMath math) {
  const int64_t acc = acc_size_for(element_size);
  if (im2col_gathers_input_gradient(p, math, element_size)) {
    const int64_t partials = im2col_split_partials_elems(
        p.batch, im2col_gather_chunk_images(p, p.in_channels_per_group(), p.in_h * p.in_w),
        p.in_channels * p.in_h * p.in_w, [&](int64_t images) {
          return im2col_input_gradient_gather_split(p, images, device_multiprocessors(), element_size, math);
        });
    return round_up16(partials * acc);
  }
  return round_up16(im2col_chunk_images(p, acc) * im2col_column_elems(p) * acc);
}

// The weight gradient's workspace, in this order: the column buffer (none
// where the GEMM gathers); for half/bfloat16 over several chunks an fp32 dW
// accumulator; with split-K the partials of one chunk (splits x dW, in the
// accumulation type). Gathering, a chunk is bounded only by the GEMM's
// 32-bit reduction index (images * P * Q < 2^30).
struct Im2colWgradLayout {
  int64_t chunk, splits, accumulator_at, partials_at, bytes;
};
inline Im2colWgradLayout im2col_wgrad_layout(const Conv2dParams& p, int64_t element_size, int multiprocessors,
                                             GemmMath math) {
  Im2colWgradLayout l{};
  const int64_t acc = acc_size_for(element_size), weights = p.out_channels * p.patch_size();
  l.chunk = im2col_gathers(p, math, element_size) ? im2col_index_chunk_images(p)
                                                   : im2col_chunk_images(p, element_size);
  // The most ranges of a whole chunk or of the shorter last one.
  l.splits = im2col_most_over_chunks(p.batch, l.chunk, [&](int64_t images) {
    return im2col_wgrad_splits(p, images, multiprocessors, element_size, math);
  });
  if (l.splits < 1) l.splits = 1;
  l.accumulator_at = im2col_column_workspace(p, element_size, math);  // the columns (the forward's buffer)
  const bool accumulator = element_size < 4 && l.chunk < p.batch;
  l.partials_at = l.accumulator_at + (accumulator ? round_up16(weights * acc) : 0);
  l.bytes = l.partials_at + (l.splits > 1 ? round_up16(l.splits * weights * acc) : 0);
  return l;
}
inline int64_t im2col_backward_weight_workspace(const Conv2dParams& p, int64_t element_size, GemmMath math) {
  return im2col_wgrad_layout(p, element_size, device_multiprocessors(), math).bytes;
}

template <typename T>
const char* launch_im2col(const T* input, T* col, const Conv2dParams& p, int64_t images, cudaStream_t stream) {
  const int64_t per_image = im2col_column_elems(p), step = elementwise_images_per_launch(per_image);
  if (step == 0) return "conv2d (im2col): one image's column matrix has more than 2^30 elements";
  const Im2colDivisors d{FastDivmod::make(p.out_pixels()), FastDivmod::make(p.kernel_h * p.kernel_w),
                         FastDivmod::make(p.out_w), FastDivmod::make(p.kernel_w)};
  const int64_t in_image = p.in_channels * p.in_h * p.in_w;
  return launch_in_pieces(images, step, [&](int64_t n, int64_t count) {
    const int total = static_cast<int>(count * per_image);
    T* piece = col + n * per_image;
    if (ceil_div(total, 4) >= kIm2colRunThreadsPerSm * int64_t(device_multiprocessors())) {
      SIMT_LAUNCH((im2col_kernel<T, 4>), grid_stride_blocks(ceil_div(total, 4)), kElementwiseThreads, 0, stream,
                  input + n * in_image, piece, p, total, d, is_aligned(piece, 4 * static_cast<int>(sizeof(T))));
    } else {
      SIMT_LAUNCH((im2col_kernel<T, 1>), grid_stride_blocks(total), kElementwiseThreads, 0, stream,
                  input + n * in_image, piece, p, total, d, true);
    }
    return launch_status();
  });
}

template <typename T>
const char* launch_col2im(const acc_t<T>* dcol, T* grad_input, const Conv2dParams& p, int64_t images,
                          cudaStream_t stream) {
  const int64_t per_image = p.in_channels * p.in_h * p.in_w, step = elementwise_images_per_launch(per_image);
  if (step == 0) return "conv2d (im2col): one image has more than 2^30 elements";
  const int64_t col_image = im2col_column_elems(p);
  return launch_in_pieces(images, step, [&](int64_t n, int64_t count) {
    const int total = static_cast<int>(count * per_image);
    auto kernel = p.stride_h == 1 && p.stride_w == 1 ? col2im_kernel<T, true> : col2im_kernel<T, false>;
    SIMT_LAUNCH(kernel, grid_stride_blocks(total), kElementwiseThreads, 0, stream, dcol + n * col_image,
                grad_input + n * per_image, p, total, FastDivmod::make(p.in_h * p.in_w), FastDivmod::make(p.in_w));
    return launch_status();
  });
}

// The column matrix of images [n0, n0 + images): the input itself for 1x1
// stride-1 convolutions, else unfolded into `workspace`.
template <typename T>
const T* columns_of(const T* input, const Conv2dParams& p, int64_t n0, int64_t images, void* workspace,
                    cudaStream_t stream, const char** err) {
  const T* images_in = input + n0 * p.in_channels * p.in_h * p.in_w;
  if (p.im2col_is_identity()) return images_in;
  T* col = static_cast<T*>(workspace);
  *err = launch_im2col(images_in, col, p, images, stream);
  return col;
}

// A chunk's forward may be split (im2col_forward_split): its split images'
// GEMM ranges write fp32 partials (after the column buffer) without bias or
// ReLU, and the second pass adds them, the bias and the ReLU into their
// output; whole images get both in the GEMM's epilogue.
template <typename T>
const char* conv2d_im2col_forward(const T* input, const T* weight, const T* bias, T* output,
                                  const Conv2dParams& p, bool relu, GemmMath math, void* workspace,
                                  cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t Kg = p.out_channels_per_group(), CRSg = p.patch_size(), PQ = p.out_pixels();
  const int64_t CRS = p.in_channels * p.kernel_h * p.kernel_w, out_image = p.out_channels * PQ;
  // Problem (image n, group g): A = W_g (row m = k, reduction = crs), B = col (row j = pixel).
  const GemmOperand wa{CRSg, 1, kGemmNoWrap, 0, 0, Kg * CRSg, 0};
  const bool gathers = im2col_gathers(p, math, sizeof(T));
  const int64_t chunk = im2col_forward_chunk_images(p, sizeof(T), math);
  const int64_t in_image = p.in_channels * p.in_h * p.in_w;
  A* partials = reinterpret_cast<A*>(static_cast<char*>(workspace) + im2col_column_workspace(p, sizeof(T), math));
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t images = p.batch - n0 < chunk ? p.batch - n0 : chunk;
    GemmShape shape = im2col_forward_shape(p, images);
    const Im2colSplit split = im2col_forward_split(p, images, device_multiprocessors(), sizeof(T), math);
    shape.splits = split.splits;
    shape.whole = split.whole;
    const int64_t split_elems = (images - split.whole) * out_image;
    T* output_chunk = output + n0 * out_image;
    const char* err = nullptr;
    const T* col = gathers ? nullptr : columns_of(input, p, n0, images, workspace, stream, &err);
    if (err) return err;
    // W * col into the output (with bias and ReLU) and the split images' partials.
    GemmOutput out{PQ, out_image, Kg * PQ, Kg, false, relu};
    if (shape.splits > 1) out.partials = partials, out.bsplit = split_elems;
    auto multiply = [&](auto* c) -> const char* {
      if (gathers) {
        return launch_gemm(weight, wa, input + n0 * in_image, Im2colGatherForward::make(p), c, out, bias, shape, math,
                           stream);
      }
      const GemmOperand cb{1, PQ, kGemmNoWrap, 0, CRS * PQ, CRSg * PQ, 0};
      return launch_gemm(weight, wa, col, cb, c, out, bias, shape, math, stream);
    };
    // With every image split there is no C (of the partials' type, as launch_gemm asks).
    err = shape.splits > 1 && shape.whole == 0 ? multiply(static_cast<A*>(nullptr)) : multiply(output_chunk);
    if (!err && shape.splits > 1) {
      err = launch_reduce_forward_partials<T>(partials, output_chunk + split.whole * out_image, bias, split_elems,
                                              shape.splits, p.out_channels, PQ, relu, stream);
    }
    if (err) return err;
  }
  return nullptr;
}

template <typename T>
const char* conv2d_im2col_backward_input(const T* grad_output, const T* weight, T* grad_input,
                                         const Conv2dParams& p, GemmMath math, void* workspace,
                                         cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t Kg = p.out_channels_per_group(), CRSg = p.patch_size(), PQ = p.out_pixels();
  const int64_t CRS = p.in_channels * p.kernel_h * p.kernel_w;
  if (im2col_gathers_input_gradient(p, math, sizeof(T))) {
    // Problem (n, g): A = W_g read as [c][(o, r, s)] (row m = c, reduction k = o * RS + rs), B =
    // grad_output gathered (row j = input pixel); C = grad_input, or split partials that one
    // pass adds into it.
    const int64_t RS = p.kernel_h * p.kernel_w, HW = p.in_h * p.in_w, Cg = p.in_channels_per_group();
    const GemmOperand wt{RS, 1, RS, CRSg, 0, Kg * CRSg, 0};
    const int64_t chunk = im2col_gather_chunk_images(p, Cg, HW);
    const auto gathered = Im2colGatherForward::make_for_input_gradient(p);
    for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
      const int64_t images = p.batch - n0 < chunk ? p.batch - n0 : chunk, in_image = p.in_channels * HW;
      GemmShape shape = im2col_input_gradient_gather_shape(p, images);
      const Im2colSplit split =
          im2col_input_gradient_gather_split(p, images, device_multiprocessors(), sizeof(T), math);
      shape.splits = split.splits;
      shape.whole = split.whole;
      const int64_t split_elems = (images - split.whole) * in_image;
      T* dx = grad_input + n0 * in_image;
      GemmOutput out{HW, in_image, Cg * HW, 0, false};
      if (shape.splits > 1) out.partials = workspace, out.bsplit = split_elems;
      const T* dy = grad_output + n0 * p.out_channels * PQ;
      auto multiply = [&](auto* c) -> const char* {
        return launch_gemm(weight, wt, dy, gathered, c, out, static_cast<const T*>(nullptr), shape, math, stream);
      };
      // With every image split there is no C (of the partials' type, as launch_gemm asks).
      const char* err = shape.splits > 1 && shape.whole == 0 ? multiply(static_cast<A*>(nullptr)) : multiply(dx);
      if (!err && shape.splits > 1) {
        err = launch_reduce_partials<T>(static_cast<const A*>(workspace), dx + split.whole * in_image, split_elems,
                                        shape.splits, false, stream);
      }
      if (err) return err;
    }
    return nullptr;
  }
  const int64_t chunk = im2col_chunk_images(p, sizeof(A));
  A* dcol = static_cast<A*>(workspace);
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t images = p.batch - n0 < chunk ? p.batch - n0 : chunk;
    // Problem (n, g): A = W_g^T (row m = crs, reduction = k), B = dY (row j = pixel).
    const GemmOperand wt{1, CRSg, kGemmNoWrap, 0, 0, Kg * CRSg, 0};
    const GemmOperand dy{1, PQ, kGemmNoWrap, 0, p.out_channels * PQ, Kg * PQ, 0};
    const GemmOutput out{PQ, CRS * PQ, CRSg * PQ, 0, false};
    const char* err = launch_gemm(weight, wt, grad_output + n0 * p.out_channels * PQ, dy, dcol, out,
                                  static_cast<const T*>(nullptr), GemmShape{CRSg, PQ, Kg, images, p.groups},
                                  math, stream);
    if (err) return err;
    err = launch_col2im<T>(dcol, grad_input + n0 * p.in_channels * p.in_h * p.in_w, p, images, stream);
    if (err) return err;
  }
  return nullptr;
}

// dW accumulates chunk after chunk: into grad_weight itself when its type is
// the accumulation type or there is one chunk, else into an fp32 buffer
// converted at the end. A split chunk writes partials, which one pass adds
// (in split order) into that destination.
template <typename T>
const char* conv2d_im2col_backward_weight(const T* grad_output, const T* input, T* grad_weight,
                                          const Conv2dParams& p, GemmMath math, void* workspace,
                                          cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t Kg = p.out_channels_per_group(), CRSg = p.patch_size(), PQ = p.out_pixels();
  const int64_t CRS = p.in_channels * p.kernel_h * p.kernel_w, weights = p.out_channels * CRSg;
  const int sms = device_multiprocessors();
  const Im2colWgradLayout layout = im2col_wgrad_layout(p, sizeof(T), sms, math);
  const bool gathers = im2col_gathers(p, math, sizeof(T));
  const int64_t in_image = p.in_channels * p.in_h * p.in_w;
  char* ws = static_cast<char*>(workspace);
  A* acc = layout.partials_at > layout.accumulator_at ? reinterpret_cast<A*>(ws + layout.accumulator_at) : nullptr;
  A* partials = reinterpret_cast<A*>(ws + layout.partials_at);
  for (int64_t n0 = 0; n0 < p.batch; n0 += layout.chunk) {
    const int64_t images = p.batch - n0 < layout.chunk ? p.batch - n0 : layout.chunk;
    const char* err = nullptr;
    const T* col = gathers ? nullptr : columns_of(input, p, n0, images, workspace, stream, &err);
    if (err) return err;
    // Problem g: reduction index = image * PQ + pixel.
    const GemmOperand dy{PQ, 1, PQ, p.out_channels * PQ, 0, Kg * PQ, 0};
    const GemmOperand cl{PQ, 1, PQ, CRS * PQ, 0, CRSg * PQ, 0};
    const T* dy_chunk = grad_output + n0 * p.out_channels * PQ;
    GemmShape shape{Kg, CRSg, images * PQ, 1, p.groups};
    shape.splits = im2col_wgrad_splits(p, images, sms, sizeof(T), math);
    // dY * col^T into c (partials, the fp32 accumulator or grad_weight itself).
    auto multiply = [&](auto* c, const GemmOutput& out) -> const char* {
      if (gathers) {
        return launch_gemm(dy_chunk, dy, input + n0 * in_image, Im2colGatherWgrad::make(p), c, out,
                           static_cast<const T*>(nullptr), shape, math, stream);
      }
      return launch_gemm(dy_chunk, dy, col, cl, c, out, static_cast<const T*>(nullptr), shape, math, stream);
    };
    if (shape.splits > 1) {
      // Every range goes to the partials, so there is no C (of the partials' type, as
      // launch_gemm asks).
      GemmOutput out{CRSg, 0, Kg * CRSg, 0, false};
      out.partials = partials, out.bsplit = weights;
      err = multiply(static_cast<A*>(nullptr), out);
      if (err) return err;
      err = acc != nullptr ? launch_reduce_partials<T>(partials, acc, weights, shape.splits, n0 > 0, stream)
                           : launch_reduce_partials<T>(partials, grad_weight, weights, shape.splits, n0 > 0, stream);
    } else {
      const GemmOutput out{CRSg, 0, Kg * CRSg, 0, n0 > 0};
      err = acc != nullptr ? multiply(acc, out) : multiply(grad_weight, out);
    }
    if (err) return err;
  }
  if (acc != nullptr) return launch_reduce_partials<T>(static_cast<const A*>(acc), grad_weight, weights, 1, false, stream);
  return nullptr;
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
