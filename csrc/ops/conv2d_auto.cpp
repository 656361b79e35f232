// conv2d's algorithm="auto": one rule for the C++ kernels, measured on a CPU,
// and one for the CUDA kernels (on a GPU and on the SIMT runtime, which runs
// them), reasoned from the GPU performance model.
#include "conv2d_auto.h"

namespace fastconv {
namespace {

// CPU: im2col unless each group has a single input channel. Measured on the
// C++ kernels (python -m bench, bench/results/cpu-amd-epyc-2t.json, 2 threads,
// 3x3, fwd+bwd, batch 16): on the seed layers im2col + GEMM is 2-12x faster
// than direct, because the GEMM reuses every loaded value many times;
// depthwise convolutions have nothing to reuse there, and direct wins (32 ch
// @74: 6.2 vs 14.9 ms; 128 ch @36: 7.8 vs 15.8 ms), while with 8 input
// channels per group im2col is already 2.4x faster.
ConvAlgorithm cpu_rule(const Conv2dParams& p) {
  return p.in_channels_per_group() == 1 ? ConvAlgorithm::kDirect : ConvAlgorithm::kIm2col;
}

// CUDA: direct where a GEMM of the im2col path would run on tiles that are
// mostly empty, im2col otherwise. The GEMMs are out_channels_per_group x
// pixels (forward), patch x pixels (input gradient) and out_channels_per_group
// x patch (weight gradient), patch = in_channels_per_group * kh * kw, on 64-
// or 128-wide tiles; below 32 rows, more than half of each tile computes
// zeros, and the column buffer costs kh * kw times the input's traffic on top.
// The direct kernels stage the input once and waste nothing on narrow groups.
// GPU performance model (python -m bench.cuda_model, bench/results/
// cuda_model_h100.json, "auto_rule"): FILLED_IN_FROM_THE_MODEL.
ConvAlgorithm gpu_rule(const Conv2dParams& p) {
  const bool narrow = p.out_channels_per_group() < 32 || p.patch_size() < 32;
  return narrow ? ConvAlgorithm::kDirect : ConvAlgorithm::kIm2col;
}

}  // namespace

ConvAlgorithm auto_algorithm(Backend backend, const Conv2dParams& p) {
  return backend == Backend::kCpu ? cpu_rule(p) : gpu_rule(p);
}

}  // namespace fastconv
