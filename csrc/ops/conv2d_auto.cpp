// conv2d's algorithm="auto": one rule for the C++ kernels, measured on a CPU,
// and one per pass for the CUDA kernels (on a GPU and on the SIMT runtime,
// which runs them), reasoned from the GPU performance model. Each op of a
// training step (forward, input gradient, weight gradient) decides for itself.
#include "conv2d_auto.h"

#include <algorithm>

#include "../cpu/conv2d.h"

namespace fastconv {
namespace {

// CPU: direct where each group has a single input channel, Winograd where it
// runs, is accurate enough and is faster, else im2col.
//
// im2col vs direct, measured on the C++ kernels (python -m bench,
// bench/results/cpu-amd-epyc-avx512-2t.json, 2 threads, 3x3, fwd+bwd, batch 16): on
// the seed layers im2col + GEMM is 2-12x faster than direct, because the GEMM
// reuses every loaded value many times; depthwise convolutions have nothing to
// reuse there, and direct wins (32 ch @74: 6.2 vs 14.9 ms; 128 ch @36: 7.8 vs
// 15.8 ms), while with 8 input channels per group im2col is already 2.4x faster.
//
// Winograd F(2x2, 3x3) vs im2col, per pass (fwd / input grad / weight grad),
// im2col's time over Winograd's, both on the AVX-512 GEMM, measured
// interleaved on one thread of a shared 2-core Zen 5 (noisy: +-20%): with 16
// or more channels per group on both sides it wins or ties on convnet4's
// 32->64 @74 (batch 16: 2.2 / 1.16 / 1.19; batch 1: 1.4 / 1.1 / 1.3), 64->128
// @36 (batch 16: 1.36 / 1.10 / 1.18) and 128->128 @17 (batch 16: 1.47 / 1.12 /
// 1.15), VGG16's 64 @224 (batch 1: 1.48 / 1.18 / 1.52) and 16->32 @74 (1.33 /
// 1.04 / 0.96); it loses with 3 or 8 input channels (3->32 @150: 0.3-0.9;
// 8->32 @74: 0.6-1.0) and where a call has few tiles to spread the filter
// transform over (VGG16's 512 @14 at batch 1, 49 tiles: 0.35-0.55; 128 @9,
// 25 tiles: 0.3-0.6; both measured before the filter transform was made
// cheap, below). Before the GEMM had its AVX-512 kernel, 200 tiles (128 @9
// at batch 8) already won 1.0-1.4x.
//
// The tile threshold: since the filter transform runs on every thread, out
// of the L1 sets' way, 128 @17 at batch 1 (64 tiles) runs Winograd at 0.81 /
// 1.33 / 0.73 of torch's time (fwd / input grad / weight grad, interleaved, 2
// threads of the shared machine) against im2col's 1.16 / 1.12 / 0.97: 0.95 of
// torch's fwd+bwd against 1.07 (64->128 @36 at batch 1, 289 tiles: 0.75 /
// 0.86 / 0.75 against 1.16 / 1.03 / 1.01). Since the filter transform
// vectorises and writes the GEMM's packed panels itself, a 7x7 grid of tiles
// pays too: Winograd's time over im2col's at batch 1, per pass, interleaved
// on 2 threads of a shared AVX2 Zen 3 (noisy: +-10%), 49 tiles: 512 @14 0.72
// / 0.77 / 1.18 (0.90 of the three passes' sum), 256 @14 0.68 / 0.90 / 0.94,
// 128 @14 0.73 / 0.86 / 0.79, 64 @14 0.91 / 1.10 / 0.64; 25 tiles still
// lose: 256 @9 1.12 / 1.48 / 1.55, 128 @11 0.96 / 1.72 / 1.32. One threshold
// for every pass, independent of the thread count, so the choice is too.
//
// Its float32 error (max |error| / max |output| against float64) grows slowly
// with the channels summed: 1.6e-7 at 3 to 6.3e-7 at 512 input channels
// (im2col 1.7e-7 .. 5.7e-7; oneDNN's 1.5e-7 .. 1.1e-6), bounded at 2e-6 up to
// kWinogradMaxChannels by tests/test_conv2d_winograd.py, on both widths (the
// input gradient sums over the output channels); wider layers, not measured,
// stay on im2col.
constexpr int64_t kWinogradMinChannels = 16;
constexpr int64_t kWinogradMaxChannels = 1024;
constexpr int64_t kWinogradMinTiles = 48;

bool winograd_pays(const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group(), og = p.out_channels_per_group();
  const int64_t tiles = p.batch * ((p.out_h + 1) / 2) * ((p.out_w + 1) / 2);
  return cpu::winograd_ineligibility(p) == nullptr && std::min(cg, og) >= kWinogradMinChannels &&
         std::max(cg, og) <= kWinogradMaxChannels && tiles >= kWinogradMinTiles;
}

ConvAlgorithm cpu_rule(const Conv2dParams& p) {
  if (p.in_channels_per_group() == 1) return ConvAlgorithm::kDirect;
  return winograd_pays(p) ? ConvAlgorithm::kWinograd : ConvAlgorithm::kIm2col;
}

// CUDA, from the GPU performance model (python -m bench.cuda_model, bench/
// results/cuda_model_h100.json, "auto_rule": estimates in microseconds on an
// H100 at batch 32, direct vs im2col; rerun it when a kernel changes).
//
// Forward: the GEMM is out_channels_per_group x pixels x patch (patch =
// in_channels_per_group * kh * kw) on 64- or 128-wide tiles; with 32 output
// channels or fewer per group most of each tile multiplies zeros. While the
// CUDA-core GEMM unfolded its columns (kh * kw times the input's traffic)
// the model had direct winning there: 3->32 @150 60 vs 111, 32->32 @75 169
// vs 267, depthwise 32 @74 34 vs 389, 8 channels per group 51 vs 114; and
// im2col from 64 output channels on (32->64 @74 247 vs 305, 512->512 @28
// 2302 vs 6934). Measured on an H200 at batch 32 (bench/results/
// cuda-nvidia-h200.json, forward ms, direct vs unfolding im2col): 3->32 @150
// 0.248 vs 0.297 and 32->32 @75 0.506 vs 0.576 agree; a short patch with 64
// output channels does not make direct faster, as the model had it: VGG16's
// 3->64 @224 0.985 vs 0.659 (0.987 vs 0.748 in half). Gathering its columns
// (the model, batch 32: 3->32 @150 42 us, 32->32 @75 119), im2col may now
// win the narrow forwards too; see the misses below.
//
// Input gradient: the GEMM is patch x pixels x out_channels_per_group, and
// col2im gathers; only depthwise-like patches (under 16) make direct faster
// (depthwise 32 @74 31 vs 226); at 3->32 @150 im2col still wins (111 vs 303).
//
// Weight gradient: the im2col GEMM is out_channels_per_group x patch, its
// N * P * Q reduction split into ranges (split-K) sized from the GPU's SM
// count, so it fills the GPU even where dW has few tiles, and it wins on
// every seed layer (3->32 @150: 197 vs 549; 32->64 @74: 268 vs 322;
// 256->256 @56: 2193 vs 5311). Only depthwise-like patches (under 16) keep
// the direct kernel on CUDA cores (32 channels @74: direct 978 vs 1364).
//
// On tensor cores (TF32, CUDA's default for float32 under torch's rule, and
// half and bfloat16 from sm_80; python -m bench.cuda_model --tf32 and
// --dtype float16, cuda_model_h100_{tf32,fp16}.json) the im2col GEMMs run
// 2-8x faster (both gather their columns instead of unfolding them: the
// forward and weight gradient always, the input gradient at stride 1 where
// the input channels of a group fill its rows), so
// only depthwise-like patches (under 16) keep the direct forward and input
// gradient: 8 channels per group @36 at batch 32 runs im2col's forward in
// 22 us (TF32; 6.5 in half) against direct's 51, while depthwise 32 @74
// keeps direct (TF32 23.5 vs 122; in half a near tie, 17.2 vs 21.2). The
// weight gradient is im2col throughout (depthwise 32 @74: 350 vs 1,006).
//
// On the model's H100 the rule runs the faster algorithm in 111 of the 120
// passes of the seed, 1x1 and grouped layers at batch 1 and 32 on CUDA cores,
// in all 120 on TF32 and in 118 in half precision; on its A100
// (cuda_model_a100*.json) in 112, 120 and 120. The misses are within 1.6x:
// weight gradients of narrow or grouped layers on CUDA cores; the narrow
// forwards on CUDA cores (3->32 @150, 32->32 @75, 8 channels per group),
// which since the CUDA-core GEMM gathers its columns the model puts faster
// on im2col (32->32 @75 at batch 32: 119 vs 169 us), where the measurement
// above, made with unfolded columns, keeps them direct until a GPU times the
// gathering GEMM; and in half precision the depthwise 128 @36 forward (22.9
// vs 20.7 us), which TF32 runs 5x faster direct. On the A100 three more,
// within 1.1x: batch-1 weight gradients of VGG16's 128- and 256-channel
// layers, and a tie on 32->32 @75's weight gradient at batch 32, where
// counting the idle tail of a GEMM's last round of blocks puts im2col just
// behind.
constexpr int64_t kGpuNarrowGemm = 32;
constexpr int64_t kGpuDepthwisePatch = 16;

ConvAlgorithm gpu_rule(ConvPass pass, const Conv2dParams& p, bool tensor_cores) {
  bool direct = false;
  switch (pass) {
    case ConvPass::kForward:
      direct = tensor_cores ? p.patch_size() < kGpuDepthwisePatch : p.out_channels_per_group() <= kGpuNarrowGemm;
      break;
    case ConvPass::kBackwardInput:
      direct = p.patch_size() < kGpuDepthwisePatch;
      break;
    case ConvPass::kBackwardWeight:
      direct = !tensor_cores && p.patch_size() < kGpuDepthwisePatch;
      break;
    case ConvPass::kBackwardBias:
      break;
  }
  return direct ? ConvAlgorithm::kDirect : ConvAlgorithm::kIm2col;
}

}  // namespace

ConvAlgorithm auto_algorithm(Backend backend, ConvPass pass, const Conv2dParams& p, bool tensor_cores) {
  return backend == Backend::kCpu ? cpu_rule(p) : gpu_rule(pass, p, tensor_cores);
}

}  // namespace fastconv
