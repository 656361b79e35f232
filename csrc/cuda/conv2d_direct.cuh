// Direct convolution kernels: forward, backward input (a transposed
// convolution written as a gather), backward weight (tiled reduction with
// partial sums) and backward bias. Torch-free; tensors are NCHW as described
// in csrc/common/conv2d_params.h. Every kernel accumulates in acc_t<T> (fp32
// for half/bfloat16), keeps offsets into whole tensors in int64, and loops
// over its work items (blockIdx.x, blockIdx.x + gridDim.x, ...), so the whole
// block always takes the same trip count and its barriers stay uniform.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv {
namespace SIMT_KERNEL_NS {

// Shape of a direct-kernel block: a TH x TW tile of pixels, SLOTS x CPT
// channels. Thread t owns pixels (t % kPixSlots) + i * kPixSlots (i < PPT)
// and CPT channels of channel slot t / kPixSlots: PPT * CPT accumulators.
// (The forward gives a slot CPT adjacent channels, read as one vector; the
// input gradient channels slot + j * SLOTS.) All threads of a warp share a
// channel slot, so weight reads from shared memory are broadcasts.
template <int TH_, int TW_, int PPT_, int SLOTS_, int CPT_>
struct DirectTile {
  static constexpr int TH = TH_, TW = TW_, PPT = PPT_, SLOTS = SLOTS_, CPT = CPT_;
  static constexpr int kPixSlots = TH * TW / PPT;
  static constexpr int kThreads = kPixSlots * SLOTS;
  static constexpr int kChannels = SLOTS * CPT;
  // 24 warps per SM (37.5%): a budget of 80 registers a thread. With only
  // the thread count as a bound, ptxas (nvcc 13) settled below that on its
  // own (48-72 registers) and spilled 8-40 bytes in some variants.
  static constexpr int kMinBlocks = 768 / kThreads;
};
// 8x16 pixels x 16 channels, 256 threads, 2 pixels x 4 channels per thread.
using DirectTileWide = DirectTile<8, 16, 2, 4, 4>;
// Few channels per group (2..7): 8x16 pixels x 4 channels, 64 threads.
using DirectTileNarrow = DirectTile<8, 16, 2, 1, 4>;
// One channel per group (depthwise): 8x16 pixels, 64 threads, 2 pixels each.
using DirectTileSingle = DirectTile<8, 16, 2, 1, 1>;

// Channels staged per shared-memory round are capped: more would only lower
// occupancy on a GPU without saving much (two barriers per round).
constexpr int kDirectMaxChunk = 8;
constexpr int64_t kDirectSmemBytes = 48 * 1024;  // no opt-in needed on any arch

// ---------------------------------------------------------------- forward
// Each block computes a TH x TW tile of output pixels for kChannels output
// channels of one group. Per round of `chunk` input channels it stages the
// input patch under the tile (tile + halo, stride and dilation applied:
// patch_h = (TH - 1) * stride_h + (R - 1) * dilation_h + 1) and the weights
// of its output channels in shared memory.
//
// Patch rows are de-interleaved by column phase (x mod stride_w) in shared
// memory: column x lies at (x % stride_w) * cols + x / stride_w, so the lanes
// of a warp, on consecutive output columns, read consecutive words at any
// stride (no bank conflicts at stride 2). The weights are read as
// broadcasts (a warp shares its channels). (Weights laid out for one 16-byte
// read per tap took the wide tile from 64 to ~120 registers on sm_90 and
// made the narrow one spill on sm_80, so they stay scalar.)
struct DirectForwardSmem {
  int cols, pitch, input_elems;  // per phase, per patch row, all channels (a multiple of 4)
};
FASTCONV_HD DirectForwardSmem direct_forward_smem(int chunk, int patch_h, int patch_w, int stride_w) {
  const int cols = (patch_w + stride_w - 1) / stride_w;
  return {cols, cols * stride_w, (chunk * patch_h * cols * stride_w + 3) / 4 * 4};
}

template <typename T, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    conv2d_direct_forward_kernel(const T* __restrict__ input, const T* __restrict__ weight,
                                 const T* __restrict__ bias, T* __restrict__ output, Conv2dParams p,
                                 MixedRadix<4> item_digits, int chunk, int patch_h, int patch_w, bool relu) {
  using A = acc_t<T>;
  constexpr int TW = Tile::TW, PPT = Tile::PPT, SLOTS = Tile::SLOTS, CPT = Tile::CPT, KC = Tile::kChannels;
  SIMT_DYNAMIC_SHARED(A, smem);
  const int R = static_cast<int>(p.kernel_h), S = static_cast<int>(p.kernel_w), RS = R * S;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int patch_hw = patch_h * patch_w;
  const DirectForwardSmem layout = direct_forward_smem(chunk, patch_h, patch_w, sw);
  const int dw_div = dw / sw, dw_mod = dw % sw;
  const int plane = patch_h * layout.pitch;
  A* in_s = smem;                         // [chunk][patch_h][pitch], columns by phase
  A* w_s = smem + layout.input_elems;     // [kChannels][chunk][R * S]
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  const int64_t in_hw = p.in_h * p.in_w, out_hw = p.out_pixels();
  const int64_t tiles_w = ceil_div(p.out_w, TW), tiles_h = ceil_div(p.out_h, Tile::TH);
  const int64_t kblocks = ceil_div(Kg, KC);
  const int64_t items = p.batch * p.groups * kblocks * tiles_h * tiles_w;
  const int tid = static_cast<int>(threadIdx.x);
  const int pslot = tid % Tile::kPixSlots, cslot = tid / Tile::kPixSlots;

  // Where each of this thread's pixels starts inside the (de-interleaved) patch.
  int pix_y[PPT], pix_x[PPT], pix_off[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const int pix = pslot + i * Tile::kPixSlots;
    pix_y[i] = pix / TW;
    pix_x[i] = pix % TW;
    pix_off[i] = pix_y[i] * sh * layout.pitch + pix_x[i];
  }

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    // Channel blocks fastest: blocks sharing a patch run together.
    uint32_t d[5];  // kblock, g, tile_x, tile_y, n (direct_item_digits)
    item_digits.split(static_cast<uint32_t>(item), d);
    const int64_t kb = d[0], g = d[1], tile_x = d[2], tile_y = d[3], n = d[4];
    const int64_t k0 = g * Kg + kb * KC, k_end = (g + 1) * Kg;
    const int64_t oh0 = tile_y * Tile::TH, ow0 = tile_x * TW;
    const int64_t ih0 = oh0 * sh - p.pad_h, iw0 = ow0 * sw - p.pad_w;

    A acc[PPT][CPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i)
#pragma unroll
      for (int j = 0; j < CPT; ++j) acc[i][j] = A(0);

    for (int64_t c0 = 0; c0 < Cg; c0 += chunk) {
      const int cn = static_cast<int>(Cg - c0 < chunk ? Cg - c0 : chunk);
      const T* in_plane = input + (n * p.in_channels + g * Cg + c0) * in_hw;
      // Threads in global order (coalesced along x), so the stores scatter
      // over the stride phases: up to 3-way at stride 3 in double, accepted
      // (tests/cpp/access_allow.txt) for coalesced loads and an unpadded patch.
      for (int e = tid; e < cn * patch_hw; e += Tile::kThreads) {
        const int c = e / patch_hw, rem = e % patch_hw, y = rem / patch_w, x = rem % patch_w;
        const int64_t ih = ih0 + y, iw = iw0 + x;
        const bool inside = ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w;
        in_s[c * plane + y * layout.pitch + (x % sw) * layout.cols + x / sw] =
            inside ? to_acc(in_plane[c * in_hw + ih * p.in_w + iw]) : A(0);
      }
      const int crs = cn * RS;
      for (int e = tid; e < KC * crs; e += Tile::kThreads) {
        const int64_t k = k0 + e / crs;
        w_s[e] = k < k_end ? to_acc(weight[(k * Cg + c0) * RS + e % crs]) : A(0);
      }
      __syncthreads();
      for (int c = 0; c < cn; ++c) {
        for (int r = 0; r < R; ++r) {
          // Column s * dw of the patch, de-interleaved, advanced tap by tap
          // (no integer division in the loop): its phase and offset in it.
          int phase = 0, col = 0;
#pragma unroll 1
          for (int s = 0; s < S; ++s) {
            const int tap_off = c * plane + r * dh * layout.pitch + phase * layout.cols + col;
            phase += dw_mod;
            col += dw_div + (phase >= sw);
            phase -= phase >= sw ? sw : 0;
            const int w_off = c * RS + r * S + s;
            A wv[CPT];
#pragma unroll
            for (int j = 0; j < CPT; ++j) wv[j] = w_s[(cslot + j * SLOTS) * crs + w_off];
#pragma unroll
            for (int i = 0; i < PPT; ++i) {
              const A xv = in_s[tap_off + pix_off[i]];
#pragma unroll
              for (int j = 0; j < CPT; ++j) acc[i][j] += xv * wv[j];
            }
          }
        }
      }
      __syncthreads();  // the next round overwrites the staged patch
    }

#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const int64_t oh = oh0 + pix_y[i], ow = ow0 + pix_x[i];
      if (oh >= p.out_h || ow >= p.out_w) continue;
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const int64_t k = k0 + cslot + j * SLOTS;
        if (k >= k_end) continue;
        const A b = bias != nullptr ? to_acc(bias[k]) : A(0);
        output[(n * p.out_channels + k) * out_hw + oh * p.out_w + ow] =
            from_acc<T>(conv_epilogue(acc[i][j] + b, relu));
      }
    }
  }
}

// ---------------------------------------------------------- backward input
// Pixel `pix` of a TH x TW tile in phase-major order: the pixels whose row is
// a mod stride_h and column b mod stride_w come together, phase (a, b) after
// phase (a, b - 1). Input pixels of one phase reach the output through the
// same taps, so with a stride a warp's lanes take the same branches instead
// of half of them (stride 2) idling at each tap. Stride 1: row-major.
template <int TH, int TW>
__device__ __forceinline__ void phase_major_pixel(int pix, int sh, int sw, int& y, int& x) {
  const int phases_h = sh < TH ? sh : TH, phases_w = sw < TW ? sw : TW;
  for (int a = 0; a < phases_h; ++a) {
    const int rows = (TH - a + sh - 1) / sh;
    for (int b = 0; b < phases_w; ++b) {
      const int cols = (TW - b + sw - 1) / sw;
      if (pix < rows * cols) {
        y = a + (pix / cols) * sh;
        x = b + (pix % cols) * sw;
        return;
      }
      pix -= rows * cols;
    }
  }
  y = TH;  // unreachable: the phases hold all TH * TW pixels
  x = TW;
}

// grad_input as a transposed convolution, gathered: input pixel (ih, iw)
// sums dY[oh][ow] * W[r][s] over the taps with ih + pad_h - r * dilation_h =
// oh * stride_h (divisibility test) and oh inside the output. A block owns a
// TH x TW tile of input pixels for kChannels input channels of one group and
// stages, per round of `chunk` output channels, the grad_output rows/columns
// the tile can reach (patch_h = (TH - 1 + (R - 1) * dilation_h) / stride_h + 1,
// starting at oh_lo) and the matching weights.
template <typename T, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    conv2d_direct_backward_input_kernel(const T* __restrict__ grad_output,
                                        const T* __restrict__ weight, T* __restrict__ grad_input,
                                        Conv2dParams p, MixedRadix<4> item_digits, int chunk, int patch_h,
                                        int patch_w) {
  using A = acc_t<T>;
  constexpr int TW = Tile::TW, PPT = Tile::PPT, SLOTS = Tile::SLOTS, CPT = Tile::CPT;
  constexpr int CB = Tile::kChannels;
  SIMT_DYNAMIC_SHARED(A, smem);
  const int R = static_cast<int>(p.kernel_h), S = static_cast<int>(p.kernel_w), RS = R * S;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int patch_hw = patch_h * patch_w;
  A* dy_s = smem;                    // [chunk][patch_h][patch_w]
  A* w_s = smem + chunk * patch_hw;  // [chunk][CB][R * S]
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  const int64_t in_hw = p.in_h * p.in_w, out_hw = p.out_pixels();
  const int64_t tiles_w = ceil_div(p.in_w, TW), tiles_h = ceil_div(p.in_h, Tile::TH);
  const int64_t cblocks = ceil_div(Cg, CB);
  const int64_t items = p.batch * p.groups * cblocks * tiles_h * tiles_w;
  const int tid = static_cast<int>(threadIdx.x);
  const int pslot = tid % Tile::kPixSlots, cslot = tid / Tile::kPixSlots;
  int pix_y[PPT], pix_x[PPT];  // this thread's pixels inside the tile
#pragma unroll
  for (int i = 0; i < PPT; ++i) phase_major_pixel<Tile::TH, TW>(pslot + i * Tile::kPixSlots, sh, sw, pix_y[i], pix_x[i]);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    uint32_t d[5];  // cblock, g, tile_x, tile_y, n (direct_item_digits)
    item_digits.split(static_cast<uint32_t>(item), d);
    const int64_t g = d[1], tile_x = d[2], tile_y = d[3], n = d[4];
    const int64_t c0 = int64_t(d[0]) * CB;  // within the group
    // Plane coordinates fit in 32 bits; only offsets into whole tensors need 64.
    const int ih0 = static_cast<int>(tile_y) * Tile::TH, iw0 = static_cast<int>(tile_x) * TW;
    const int pad_h = static_cast<int>(p.pad_h), pad_w = static_cast<int>(p.pad_w);
    // First output row/column any pixel of the tile reaches: ceil(t_min / stride).
    const int oh_lo = floor_div(ih0 + pad_h - (R - 1) * dh + sh - 1, sh);
    const int ow_lo = floor_div(iw0 + pad_w - (S - 1) * dw + sw - 1, sw);

    A acc[PPT][CPT];
#pragma unroll
    for (int i = 0; i < PPT; ++i)
#pragma unroll
      for (int j = 0; j < CPT; ++j) acc[i][j] = A(0);

    for (int64_t k0 = 0; k0 < Kg; k0 += chunk) {
      const int kn = static_cast<int>(Kg - k0 < chunk ? Kg - k0 : chunk);
      const T* dy_plane = grad_output + (n * p.out_channels + g * Kg + k0) * out_hw;
      for (int e = tid; e < kn * patch_hw; e += Tile::kThreads) {
        const int k = e / patch_hw, rem = e % patch_hw;
        const int oh = oh_lo + rem / patch_w, ow = ow_lo + rem % patch_w;
        const bool inside = oh >= 0 && oh < p.out_h && ow >= 0 && ow < p.out_w;
        dy_s[e] = inside ? to_acc(dy_plane[k * out_hw + oh * p.out_w + ow]) : A(0);
      }
      for (int e = tid; e < kn * CB * RS; e += Tile::kThreads) {
        const int k = e / (CB * RS), rem = e % (CB * RS);
        const int64_t c = c0 + rem / RS;
        w_s[e] = c < Cg ? to_acc(weight[((g * Kg + k0 + k) * Cg + c) * RS + rem % RS]) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < PPT; ++i) {
        const int ih = ih0 + pix_y[i], iw = iw0 + pix_x[i];
        for (int r = 0; r < R; ++r) {
          const int t = ih + pad_h - r * dh;
          if (t % sh != 0) continue;  // no output row lands on this input row via tap r
          const int row = t / sh - oh_lo;
          for (int s = 0; s < S; ++s) {
            const int u = iw + pad_w - s * dw;
            if (u % sw != 0) continue;
            const int dy_off = row * patch_w + (u / sw - ow_lo);
            const int w_off = cslot * RS + r * S + s;
            for (int k = 0; k < kn; ++k) {
              const A v = dy_s[k * patch_hw + dy_off];
#pragma unroll
              for (int j = 0; j < CPT; ++j) acc[i][j] += v * w_s[(k * CB + j * SLOTS) * RS + w_off];
            }
          }
        }
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const int ih = ih0 + pix_y[i], iw = iw0 + pix_x[i];
      if (ih >= p.in_h || iw >= p.in_w) continue;
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const int64_t c = c0 + cslot + j * SLOTS;
        if (c >= Cg) continue;
        grad_input[(n * p.in_channels + g * Cg + c) * in_hw + ih * p.in_w + iw] = from_acc<T>(acc[i][j]);
      }
    }
  }
}

// ------------------------------------------- fallbacks for huge footprints
// When one channel's patch plus weights exceed kDirectSmemBytes (very large
// kernels with large dilation), one thread per output element reads global
// memory directly. Rare; correctness over speed.
// The launchers run them on pieces of whole images, fewer than 2^30 elements
// each (elementwise_images_per_launch), so an element's index splits into
// its coordinates with 32-bit FastDivmods (unstaged_digits), never with a
// 64-bit division.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    conv2d_direct_forward_unstaged_kernel(const T* __restrict__ input, const T* __restrict__ weight,
                                          const T* __restrict__ bias, T* __restrict__ output,
                                          Conv2dParams p, int total, MixedRadix<4> digits, bool relu) {
  using A = acc_t<T>;
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t d[5];  // ow, oh, channel within the group, g, n
    digits.split(static_cast<uint32_t>(e), d);
    const int64_t ow = d[0], oh = d[1], g = d[3], n = d[4];
    const int64_t k = g * Kg + d[2];
    A acc = bias != nullptr ? to_acc(bias[k]) : A(0);
    for (int64_t c = 0; c < Cg; ++c) {
      const T* plane = input + (n * p.in_channels + g * Cg + c) * p.in_h * p.in_w;
      const T* wk = weight + (k * Cg + c) * p.kernel_h * p.kernel_w;
      for (int64_t r = 0; r < p.kernel_h; ++r) {
        const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dilation_h;
        if (ih < 0 || ih >= p.in_h) continue;
        for (int64_t s = 0; s < p.kernel_w; ++s) {
          const int64_t iw = ow * p.stride_w - p.pad_w + s * p.dilation_w;
          if (iw < 0 || iw >= p.in_w) continue;
          acc += to_acc(plane[ih * p.in_w + iw]) * to_acc(wk[r * p.kernel_w + s]);
        }
      }
    }
    output[e] = from_acc<T>(conv_epilogue(acc, relu));
  }
}

// Input (ih, iw) is reached by tap r from output row t / stride_h when
// t = ih + pad_h - r * dilation_h is a non-negative multiple of stride_h
// (likewise for columns): FastDivmods of the strides, t and u below 2^31.
template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kElementwiseThreads))
    conv2d_direct_backward_input_unstaged_kernel(const T* __restrict__ grad_output,
                                                 const T* __restrict__ weight, T* __restrict__ grad_input,
                                                 Conv2dParams p, int total, MixedRadix<4> digits,
                                                 FastDivmod stride_h, FastDivmod stride_w) {
  using A = acc_t<T>;
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  const int R = static_cast<int>(p.kernel_h), S = static_cast<int>(p.kernel_w);
  const int pad_h = static_cast<int>(p.pad_h), pad_w = static_cast<int>(p.pad_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t d[5];  // iw, ih, channel within the group, g, n
    digits.split(static_cast<uint32_t>(e), d);
    const int iw = static_cast<int>(d[0]), ih = static_cast<int>(d[1]);
    const int64_t cg = d[2], g = d[3], n = d[4];
    A acc = A(0);
    for (int r = 0; r < R; ++r) {
      const int t = ih + pad_h - r * dh;
      if (t < 0) continue;
      uint32_t oh, t_rem;
      stride_h.divmod(static_cast<uint32_t>(t), oh, t_rem);
      if (t_rem != 0 || oh >= p.out_h) continue;
      for (int s = 0; s < S; ++s) {
        const int u = iw + pad_w - s * dw;
        if (u < 0) continue;
        uint32_t ow, u_rem;
        stride_w.divmod(static_cast<uint32_t>(u), ow, u_rem);
        if (u_rem != 0 || ow >= p.out_w) continue;
        const int64_t pix = int64_t(oh) * p.out_w + ow;
        for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
          acc += to_acc(grad_output[(n * p.out_channels + k) * p.out_pixels() + pix]) *
                 to_acc(weight[((k * Cg + cg) * p.kernel_h + r) * p.kernel_w + s]);
        }
      }
    }
    grad_input[e] = from_acc<T>(acc);
  }
}

// ----------------------------------------------- split N*P*Q reductions
// The weight and bias gradients cut the flat reduction f = n * PQ + pixel
// into `slices` ranges of slice_len. Where range `slice` begins, without a
// 64-bit division: slice_len = images * PQ + rest on the host, so it begins
// at image slice * images + (slice * rest) / PQ, and slice * rest <
// slices * PQ < 2^31 (reduction_slices_cap keeps it so).
struct ReductionSlices {
  int64_t images;
  uint32_t rest;
  FastDivmod pixels;

  static ReductionSlices make(int64_t slice_len, int64_t pixels) {
    const int64_t pq = pixels > 0 ? pixels : 1;
    return ReductionSlices{slice_len / pq, static_cast<uint32_t>(slice_len % pq), FastDivmod::make(pq)};
  }
  __device__ __forceinline__ void start(int64_t slice, int64_t& n, uint32_t& pixel) const {
    uint32_t dn;
    pixels.divmod(static_cast<uint32_t>(slice) * rest, dn, pixel);
    n = slice * images + dn;
  }
};
inline int64_t reduction_slices_cap(int64_t pixels) {
  return (kFastDivmodLimit - 1) / (pixels > 0 ? pixels : 1);
}

// --------------------------------------------------------- backward weight
// dW_g[Kg x Cg*R*S] = dY_g[Kg x N*P*Q] * col_g^T, the column matrix gathered
// on the fly. A block computes a 32 x 64 tile of dW (16 x 16 threads, 2 x 4
// each) over one contiguous slice of the N*P*Q reduction, 16 pixels per
// shared-memory round. With one slice the block writes dW itself; with more,
// it writes its partial sums to the workspace and a second kernel adds the
// slices in slice order. Either way the summation order is fixed by the
// launch configuration, never by scheduling: the result is deterministic, so
// the `deterministic` flag needs no separate path.
constexpr int kWgradTileK = 32, kWgradTileC = 64, kWgradPixels = 16, kWgradThreads = 256;
// Four blocks per SM (50%), 64 registers a thread: with the thread count
// alone as a bound ptxas (nvcc 13) kept half/bfloat16 at 48 and spilled.
constexpr int kWgradMinBlocks = 4;

template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kWgradThreads), kWgradMinBlocks)
    conv2d_direct_backward_weight_kernel(const T* __restrict__ grad_output,
                                         const T* __restrict__ input, acc_t<T>* __restrict__ partial,
                                         T* __restrict__ grad_weight, Conv2dParams p, int64_t slices,
                                         int64_t slice_len, MixedRadix<3> item_digits, ReductionSlices starts) {
  using A = acc_t<T>;
  // Staged pixel-fastest, as the loads run (pq = tid % 16): a warp's stores
  // cover two rows of 16 pixels. The multiply reads dy_s rows ty, ty + 1
  // (banks 16 apart at pitch 16) and col_s rows tx = 0..15 at one pixel, so
  // col_s's pitch is odd: 17 puts those 16 reads in 16 banks, and costs the
  // stores at most a 2-way conflict.
  __shared__ A dy_s[kWgradTileK][kWgradPixels];
  __shared__ A col_s[kWgradTileC][kWgradPixels + 1];
  const int64_t Cg = p.in_channels_per_group(), Kg = p.out_channels_per_group();
  const int64_t RS = p.kernel_h * p.kernel_w, CRS = Cg * RS;
  const int64_t out_hw = p.out_pixels(), in_hw = p.in_h * p.in_w;
  const int64_t red_total = p.batch * out_hw;
  const int64_t ktiles = ceil_div(Kg, kWgradTileK), ctiles = ceil_div(CRS, kWgradTileC);
  const int64_t items = p.groups * ktiles * ctiles * slices;
  const int64_t weights_total = p.out_channels * CRS;
  const int tid = static_cast<int>(threadIdx.x), tx = tid % 16, ty = tid / 16;

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    uint32_t d[4];  // slice, ct, kt, g
    item_digits.split(static_cast<uint32_t>(item), d);
    const int64_t slice = d[0], ct = d[1], kt = d[2], g = d[3];
    const int64_t red_begin = slice * slice_len;
    const int64_t red_end = red_begin + slice_len < red_total ? red_begin + slice_len : red_total;

    A acc[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = A(0);

    // Every load below uses pixel column pq = tid % 16 (both loops stride by a
    // multiple of 16), so this thread's reduction index q = q0 + pq is tracked
    // as (image n, pixel) and advanced without 64-bit division.
    const int pq = tid % kWgradPixels;
    int64_t n;
    uint32_t pix_begin;
    starts.start(slice, n, pix_begin);
    int pix = static_cast<int>(pix_begin) + pq;  // < PQ + 16 < 2^31 (checked by the launcher)
    while (pix >= out_hw) {
      pix -= static_cast<int>(out_hw);
      ++n;
    }
    const int out_w = static_cast<int>(p.out_w), S = static_cast<int>(p.kernel_w), RSi = static_cast<int>(RS);

    for (int64_t q0 = red_begin; q0 < red_end; q0 += kWgradPixels) {
      // Pixels fastest: consecutive threads read consecutive grad_output/input addresses.
      const bool live = q0 + pq < red_end;
      const int oh_base = static_cast<int>((pix / out_w) * p.stride_h - p.pad_h);
      const int ow_base = static_cast<int>((pix % out_w) * p.stride_w - p.pad_w);
      for (int e = tid; e < kWgradPixels * kWgradTileK; e += kWgradThreads) {
        const int kk = e / kWgradPixels;
        const int64_t k = kt * kWgradTileK + kk;
        A v = A(0);
        if (live && k < Kg) v = to_acc(grad_output[(n * p.out_channels + g * Kg + k) * out_hw + pix]);
        dy_s[kk][pq] = v;
      }
      for (int e = tid; e < kWgradPixels * kWgradTileC; e += kWgradThreads) {
        const int cc = e / kWgradPixels;
        const int crs = static_cast<int>(ct * kWgradTileC) + cc;
        A v = A(0);
        if (live && crs < CRS) {
          const int c = crs / RSi, rs = crs % RSi;
          const int ih = oh_base + (rs / S) * static_cast<int>(p.dilation_h);
          const int iw = ow_base + (rs % S) * static_cast<int>(p.dilation_w);
          if (ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w) {
            v = to_acc(input[(n * p.in_channels + g * Cg + c) * in_hw + ih * p.in_w + iw]);
          }
        }
        col_s[cc][pq] = v;
      }
      pix += kWgradPixels;
      while (pix >= out_hw) {
        pix -= static_cast<int>(out_hw);
        ++n;
      }
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kWgradPixels; ++k) {
        A a[2], b[4];
#pragma unroll
        for (int i = 0; i < 2; ++i) a[i] = dy_s[ty + 16 * i][k];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = col_s[tx + 16 * j][k];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t k = kt * kWgradTileK + ty + 16 * i;
      if (k >= Kg) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t crs = ct * kWgradTileC + tx + 16 * j;
        if (crs >= CRS) continue;
        const int64_t e = (g * Kg + k) * CRS + crs;
        if (slices == 1) {
          grad_weight[e] = from_acc<T>(acc[i][j]);
        } else {
          partial[slice * weights_total + e] = acc[i][j];
        }
      }
    }
  }
}

// Slices of the N*P*Q reduction for the weight gradient: enough blocks to
// fill a GPU (about 512), but never slices shorter than 1024 pixels, where
// the partial traffic would cost more than the parallelism gains.
inline int64_t wgrad_slices(const Conv2dParams& p) {
  const int64_t red_total = p.batch * p.out_pixels();
  const int64_t tiles = p.groups * ceil_div(p.out_channels_per_group(), kWgradTileK) *
                        ceil_div(p.patch_size(), kWgradTileC);
  int64_t slices = ceil_div(512, tiles);
  const int64_t by_length = red_total / 1024;
  if (slices > by_length) slices = by_length;
  if (slices > 64) slices = 64;
  const int64_t cap = reduction_slices_cap(p.out_pixels());
  if (slices > cap) slices = cap;
  return slices < 1 ? 1 : slices;
}
inline int64_t wgrad_slice_len(const Conv2dParams& p, int64_t slices) {
  // A multiple of the pixel round, so that only the last slice has a ragged end.
  return ceil_div(ceil_div(p.batch * p.out_pixels(), slices), kWgradPixels) * kWgradPixels;
}

// ----------------------------------------------------------- backward bias
// grad_bias[k] = sum over N, P, Q of dY. Channel k's N*P*Q values are cut
// into `slices` contiguous ranges (flat index f = n * PQ + pixel), enough
// (channel, range) items for kBiasWaves waves of resident blocks; a block
// sums one range with consecutive threads on consecutive addresses, four
// independent loads in flight a thread, then warp shuffles and one word per
// warp in shared memory. With several ranges each writes a partial, and
// conv2d_reduce_partials_kernel adds them in a fixed order: deterministic.
// (n, pixel) of f comes from FastDivmods (ReductionSlices), never from a
// 64-bit division.
constexpr int kBiasThreads = 256;
// 2048 threads an SM (sm_80, sm_90); GPUs that hold fewer run more waves.
constexpr int kBiasBlocksPerSm = 2048 / kBiasThreads, kBiasWaves = 2, kBiasLoads = 4;
constexpr int64_t kBiasMinSliceLen = 1024, kBiasMaxSlices = 1024;  // ranges of at least 4 values a thread

inline int64_t bias_slices(const Conv2dParams& p, int multiprocessors) {
  const int64_t total = p.batch * p.out_pixels();
  const int64_t blocks = int64_t(kBiasWaves) * kBiasBlocksPerSm * multiprocessors;
  int64_t slices = ceil_div(blocks, p.out_channels > 0 ? p.out_channels : 1);
  if (slices > total / kBiasMinSliceLen) slices = total / kBiasMinSliceLen;
  if (slices > kBiasMaxSlices) slices = kBiasMaxSlices;
  const int64_t cap = reduction_slices_cap(p.out_pixels());
  if (slices > cap) slices = cap;
  return slices < 1 ? 1 : slices;
}
inline int64_t bias_slice_len(const Conv2dParams& p, int64_t slices) {
  return ceil_div(ceil_div(p.batch * p.out_pixels(), slices), kBiasThreads) * kBiasThreads;
}

template <typename T>
__global__ void __launch_bounds__(launch_bound<T>(kBiasThreads))
    conv2d_backward_bias_kernel(const T* __restrict__ grad_output, acc_t<T>* __restrict__ partial,
                                T* __restrict__ grad_bias, Conv2dParams p, int64_t slices, int64_t slice_len,
                                FastDivmod by_slices, ReductionSlices starts) {
  using A = acc_t<T>;
  __shared__ A warp_sums[kBiasThreads / 32];
  const int64_t out_hw = p.out_pixels(), total = p.batch * out_hw;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  for (int64_t item = blockIdx.x; item < p.out_channels * slices; item += gridDim.x) {
    uint32_t k32, slice32;
    by_slices.divmod(static_cast<uint32_t>(item), k32, slice32);
    const int64_t k = k32, slice = slice32;
    const int64_t begin = slice * slice_len;
    const int64_t len = begin + slice_len < total ? slice_len : (total > begin ? total - begin : 0);
    int64_t n_begin;
    uint32_t pix_begin;
    starts.start(slice, n_begin, pix_begin);
    const T* channel = grad_output + k * out_hw;
    // Value e of the range; pix_begin + e < out_hw + slice_len < 2^31 (checked by the launcher).
    auto value = [&](int64_t e) {
      uint32_t dn, pix;
      starts.pixels.divmod(pix_begin + static_cast<uint32_t>(e), dn, pix);
      return to_acc(channel[(n_begin + dn) * p.out_channels * out_hw + pix]);
    };
    static_assert(kBiasLoads == 4, "the sums are added pairwise below");
    A sums[kBiasLoads] = {};
    int64_t e = tid;
    for (; e + (kBiasLoads - 1) * kBiasThreads < len; e += kBiasLoads * kBiasThreads) {
#pragma unroll
      for (int u = 0; u < kBiasLoads; ++u) sums[u] += value(e + u * kBiasThreads);
    }
    for (; e < len; e += kBiasThreads) sums[0] += value(e);
    A sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (warp == 0) {
      sum = lane < kBiasThreads / 32 ? warp_sums[lane] : A(0);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
      if (lane == 0) {
        if (slices == 1) {
          grad_bias[k] = from_acc<T>(sum);
        } else {
          partial[slice * p.out_channels + k] = sum;
        }
      }
    }
    __syncthreads();  // warp_sums is reused by the next item
  }
}

inline int64_t direct_backward_bias_workspace(const Conv2dParams& p, int64_t element_size) {
  const int64_t slices = bias_slices(p, device_multiprocessors());
  return slices == 1 ? 0 : round_up16(slices * p.out_channels * acc_size_for(element_size));
}

template <typename T>
const char* launch_backward_bias(const T* grad_output, T* grad_bias, const Conv2dParams& p, void* workspace,
                                 cudaStream_t stream) {
  const int64_t slices = bias_slices(p, device_multiprocessors());
  const int64_t slice_len = bias_slice_len(p, slices);
  if (p.out_pixels() + slice_len >= kFastDivmodLimit || p.out_channels * slices >= kFastDivmodLimit) {
    return "conv2d_backward_bias: an output plane plus a reduction range, and the channels times the ranges, "
           "must stay below 2^31";
  }
  auto* partial = static_cast<acc_t<T>*>(workspace);
  // A block per (channel, range) item: bias_slices sized the items for its waves, which
  // conv_grid's cap (made for the GEMMs' tiles) would cut.
  const unsigned blocks = static_cast<unsigned>(p.out_channels > 0 ? p.out_channels * slices : 1);
  SIMT_LAUNCH(conv2d_backward_bias_kernel<T>, blocks, kBiasThreads, 0, stream,
              grad_output, partial, grad_bias, p, slices, slice_len, FastDivmod::make(slices),
              ReductionSlices::make(slice_len, p.out_pixels()));
  const char* err = launch_status();
  if (err != nullptr || slices == 1) return err;
  return launch_reduce_partials<T>(static_cast<const acc_t<T>*>(partial), grad_bias, p.out_channels, slices, false,
                                   stream);
}

// ----------------------------------------------------------------- launchers
// The tiled kernels' work items, split by MixedRadix (32-bit FastDivmods, no
// 64-bit division on the GPU) into channel block, group, tile column, tile
// row and image, channel blocks fastest.
constexpr const char* kDirectTooManyTiles = "conv2d (direct): more than 2^31 tiles; split the batch";
inline MixedRadix<4> direct_item_digits(int64_t channel_blocks, const Conv2dParams& p, int64_t tiles_w,
                                        int64_t tiles_h) {
  return MixedRadix<4>::make(channel_blocks, p.groups, tiles_w, tiles_h);
}

// Input channels staged per round for a block with `channels` output channels
// (forward) or input channels (backward input); 0 when even one does not fit.
// `patch_pitch`: words per staged patch row (the forward pads rows to whole
// stride phases); 16 bytes of slack for the forward's aligned weight area.
template <typename T>
int direct_chunk(int64_t channels_in_group, int block_channels, int patch_h, int patch_pitch,
                 const Conv2dParams& p) {
  const int64_t per_channel =
      (int64_t(patch_h) * patch_pitch + block_channels * p.kernel_h * p.kernel_w) *
      static_cast<int64_t>(sizeof(acc_t<T>));
  int64_t chunk = (kDirectSmemBytes - 16) / per_channel;
  if (chunk > kDirectMaxChunk) chunk = kDirectMaxChunk;
  if (chunk > channels_in_group) chunk = channels_in_group;
  return static_cast<int>(chunk);
}

template <typename T, typename Tile>
const char* launch_direct_forward(const T* input, const T* weight, const T* bias, T* output,
                                  const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int patch_h = static_cast<int>((Tile::TH - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1);
  const int patch_w = static_cast<int>((Tile::TW - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1);
  const int pitch = direct_forward_smem(1, patch_h, patch_w, static_cast<int>(p.stride_w)).pitch;
  const int chunk = direct_chunk<T>(p.in_channels_per_group(), Tile::kChannels, patch_h, pitch, p);
  if (chunk == 0) {
    const int64_t out_image = p.out_channels * p.out_pixels(), in_image = p.in_channels * p.in_h * p.in_w;
    const int64_t step = elementwise_images_per_launch(out_image);
    if (step == 0) return "conv2d (direct): one output image has more than 2^30 elements";
    const MixedRadix<4> digits = MixedRadix<4>::make(p.out_w, p.out_h, p.out_channels_per_group(), p.groups);
    return launch_in_pieces(p.batch, step, [&](int64_t n, int64_t images) {
      const int total = static_cast<int>(images * out_image);
      SIMT_LAUNCH(conv2d_direct_forward_unstaged_kernel<T>, grid_stride_blocks(total), kElementwiseThreads, 0,
                  stream, input + n * in_image, weight, bias, output + n * out_image, p, total, digits, relu);
      return launch_status();
    });
  }
  const int64_t kblocks = ceil_div(p.out_channels_per_group(), Tile::kChannels);
  const int64_t tiles_h = ceil_div(p.out_h, Tile::TH), tiles_w = ceil_div(p.out_w, Tile::TW);
  const int64_t items = p.batch * p.groups * kblocks * tiles_h * tiles_w;
  if (items >= kFastDivmodLimit) return kDirectTooManyTiles;
  const MixedRadix<4> item_digits = direct_item_digits(kblocks, p, tiles_w, tiles_h);
  const int input_elems = direct_forward_smem(chunk, patch_h, patch_w, static_cast<int>(p.stride_w)).input_elems;
  const size_t smem =
      (size_t(input_elems) + size_t(Tile::kChannels) * chunk * p.kernel_h * p.kernel_w) * sizeof(acc_t<T>);
  auto kernel = conv2d_direct_forward_kernel<T, Tile>;
  SIMT_LAUNCH(kernel, conv_grid(items), Tile::kThreads, smem, stream, input, weight, bias, output, p,
              item_digits, chunk, patch_h, patch_w, relu);
  return launch_status();
}

template <typename T, typename Tile>
const char* launch_direct_backward_input(const T* grad_output, const T* weight, T* grad_input,
                                         const Conv2dParams& p, cudaStream_t stream) {
  const int patch_h = static_cast<int>((Tile::TH - 1 + (p.kernel_h - 1) * p.dilation_h) / p.stride_h + 1);
  const int patch_w = static_cast<int>((Tile::TW - 1 + (p.kernel_w - 1) * p.dilation_w) / p.stride_w + 1);
  const int chunk = direct_chunk<T>(p.out_channels_per_group(), Tile::kChannels, patch_h, patch_w, p);
  if (chunk == 0) {
    const int64_t in_image = p.in_channels * p.in_h * p.in_w, out_image = p.out_channels * p.out_pixels();
    const int64_t step = elementwise_images_per_launch(in_image);
    if (step == 0) return "conv2d (direct): one input image has more than 2^30 elements";
    const MixedRadix<4> digits = MixedRadix<4>::make(p.in_w, p.in_h, p.in_channels_per_group(), p.groups);
    const FastDivmod stride_h = FastDivmod::make(p.stride_h), stride_w = FastDivmod::make(p.stride_w);
    return launch_in_pieces(p.batch, step, [&](int64_t n, int64_t images) {
      const int total = static_cast<int>(images * in_image);
      SIMT_LAUNCH(conv2d_direct_backward_input_unstaged_kernel<T>, grid_stride_blocks(total), kElementwiseThreads,
                  0, stream, grad_output + n * out_image, weight, grad_input + n * in_image, p, total, digits,
                  stride_h, stride_w);
      return launch_status();
    });
  }
  const int64_t cblocks = ceil_div(p.in_channels_per_group(), Tile::kChannels);
  const int64_t tiles_h = ceil_div(p.in_h, Tile::TH), tiles_w = ceil_div(p.in_w, Tile::TW);
  const int64_t items = p.batch * p.groups * cblocks * tiles_h * tiles_w;
  if (items >= kFastDivmodLimit) return kDirectTooManyTiles;
  const MixedRadix<4> item_digits = direct_item_digits(cblocks, p, tiles_w, tiles_h);
  const size_t smem = (size_t(chunk) * patch_h * patch_w + size_t(Tile::kChannels) * chunk * p.kernel_h * p.kernel_w) *
                      sizeof(acc_t<T>);
  auto kernel = conv2d_direct_backward_input_kernel<T, Tile>;
  SIMT_LAUNCH(kernel, conv_grid(items), Tile::kThreads, smem, stream, grad_output, weight, grad_input, p,
              item_digits, chunk, patch_h, patch_w);
  return launch_status();
}

// The tile whose channel count fits the group: wide for >= 8 channels per
// group, narrow for 2..7, single for depthwise-style groups of one. `relu`:
// conv2d_relu's epilogue.
template <typename T>
const char* conv2d_direct_forward(const T* input, const T* weight, const T* bias, T* output,
                                  const Conv2dParams& p, bool relu, cudaStream_t stream) {
  const int64_t kg = p.out_channels_per_group();
  if (kg >= 8) return launch_direct_forward<T, DirectTileWide>(input, weight, bias, output, p, relu, stream);
  if (kg >= 2) return launch_direct_forward<T, DirectTileNarrow>(input, weight, bias, output, p, relu, stream);
  return launch_direct_forward<T, DirectTileSingle>(input, weight, bias, output, p, relu, stream);
}

template <typename T>
const char* conv2d_direct_backward_input(const T* grad_output, const T* weight, T* grad_input,
                                         const Conv2dParams& p, cudaStream_t stream) {
  const int64_t cg = p.in_channels_per_group();
  if (cg >= 8) return launch_direct_backward_input<T, DirectTileWide>(grad_output, weight, grad_input, p, stream);
  if (cg >= 2) return launch_direct_backward_input<T, DirectTileNarrow>(grad_output, weight, grad_input, p, stream);
  return launch_direct_backward_input<T, DirectTileSingle>(grad_output, weight, grad_input, p, stream);
}

inline int64_t direct_backward_weight_workspace(const Conv2dParams& p, int64_t element_size) {
  const int64_t slices = wgrad_slices(p);
  if (slices == 1) return 0;
  return round_up16(slices * p.out_channels * p.patch_size() * acc_size_for(element_size));
}

template <typename T>
const char* conv2d_direct_backward_weight(const T* grad_output, const T* input, T* grad_weight,
                                          const Conv2dParams& p, void* workspace, cudaStream_t stream) {
  const int64_t slices = wgrad_slices(p);
  const int64_t slice_len = wgrad_slice_len(p, slices);
  auto* partial = static_cast<acc_t<T>*>(workspace);
  const int64_t ktiles = ceil_div(p.out_channels_per_group(), kWgradTileK);
  const int64_t ctiles = ceil_div(p.patch_size(), kWgradTileC);
  const int64_t items = p.groups * ktiles * ctiles * slices;
  if (items >= kFastDivmodLimit || p.out_pixels() + kWgradPixels >= kFastDivmodLimit) {
    return "conv2d (direct) weight gradient: the tiles and an output plane must stay below 2^31";
  }
  SIMT_LAUNCH(conv2d_direct_backward_weight_kernel<T>, conv_grid(items), kWgradThreads, 0, stream,
              grad_output, input, partial, grad_weight, p, slices, slice_len,
              MixedRadix<3>::make(slices, ctiles, ktiles), ReductionSlices::make(slice_len, p.out_pixels()));
  const char* err = launch_status();
  if (err != nullptr || slices == 1) return err;
  return launch_reduce_partials<T>(static_cast<const acc_t<T>*>(partial), grad_weight,
                                   p.out_channels * p.patch_size(), slices, false, stream);
}

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
