"""The GPU performance model (python -m bench.cuda_model) and the SIMT launch recorder behind it:
ptxas parsing, 64-bit divisions in PTX loops, occupancy against the calculator's rules, waves and
roofline arithmetic, the analytic work of each kernel family, and dry runs that record exactly
the launches a real run makes."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastconv import _C
from fastconv.simt import Launch, record_launches

from bench import cuda_model, ptxas_report
from bench.cases import Layer
from bench.gpus import GPUS, by_compute_capability
from bench.kernel_work import (Conv, GemmSplit, MirrorError, Work, chunk_images, conv_pass_work, gemm_items,
                               gemm_split_ranges, inner_loop_ceiling, outputs_per_thread, wgrad_slices)
from bench.occupancy import Occupancy, Query, cuda_include, occupancy

ROOT = Path(__file__).resolve().parent.parent
H100, A100 = GPUS["h100"], GPUS["a100"]

# Captured from `nvcc -Xptxas -v -arch=sm_90 -c csrc/cuda/conv2d.cu` (CUDA 13.0); the second
# kernel's spill line is from a build that spilled.
PTXAS_SAMPLE = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN8fastconv4cuda27conv2d_backward_bias_kernelIdEEvPKT_PS2_NS_12Conv2dParamsE' for 'sm_90'
ptxas info    : Function properties for _ZN8fastconv4cuda27conv2d_backward_bias_kernelIdEEvPKT_PS2_NS_12Conv2dParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 64 bytes smem
ptxas info    : Compile time = 21.583 ms
ptxas info    : Compiling entry function '_ZN8fastconv4cuda36conv2d_direct_backward_weight_kernelIdEEvPKT_S4_PNS_14AccumulateTypeIS2_E4typeEPS2_NS_12Conv2dParamsEll' for 'sm_90'
ptxas info    : Function properties for _ZN8fastconv4cuda36conv2d_direct_backward_weight_kernelIdEEvPKT_S4_PNS_14AccumulateTypeIS2_E4typeEPS2_NS_12Conv2dParamsEll
    24 bytes stack frame, 20 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 124 registers, used 1 barriers, 12288 bytes smem
ptxas info    : Compile time = 56.827 ms
ptxas info    : Compiling entry function '_ZN8fastconv4cuda29conv2d_reduce_partials_kernelIdEEvPKNS_14AccumulateTypeIT_E4typeEPS3_ll' for 'sm_90'
ptxas info    : Function properties for _ZN8fastconv4cuda29conv2d_reduce_partials_kernelIdEEvPKNS_14AccumulateTypeIT_E4typeEPS3_ll
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
"""

# Two kernels in the shape nvcc writes them: a division before any loop, one in a loop, one in a
# loop inside it (reached by two backward branches), and a kernel without any.
PTX_SAMPLE = """\
.visible .entry _Z1aPl(
\t.param .u64 _Z1aPl_param_0
)
{
\tdiv.s64 \t%rd1, %rd2, %rd3;
$L__BB0_1:
\tadd.s64 \t%rd4, %rd4, 1;
\trem.u64 \t%rd5, %rd4, %rd3;
$L__BB0_2:
\tdiv.u64 \t%rd6, %rd5, %rd3;
\tdiv.rn.f64 \t%fd1, %fd2, %fd3;
\t@%p1 bra \t$L__BB0_2;
\t@%p2 bra \t$L__BB0_1;
\t@%p3 bra \t$L__BB0_1;
\tret;
}
.visible .entry _Z1bPf(
\t.param .u64 _Z1bPf_param_0
)
{
\tdiv.s32 \t%r1, %r2, %r3;
$L__BB1_1:
\t@%p1 bra \t$L__BB1_1;
\tret;
}
"""


def test_ptxas_report_is_parsed_per_kernel():
    kernels = ptxas_report.parse(PTXAS_SAMPLE.splitlines())
    assert [k["name"] for k in kernels] == [
        "void conv2d_backward_bias_kernel<double>", "void conv2d_direct_backward_weight_kernel<double>",
        "void conv2d_reduce_partials_kernel<double>"]
    bias, wgrad, reduce = kernels
    assert (bias["regs"], bias["smem"], bias["spill_st"], bias["spill_ld"]) == (32, 64, 0, 0)
    assert (wgrad["regs"], wgrad["smem"], wgrad["stack"], wgrad["spill_st"], wgrad["spill_ld"]) == (124, 12288, 24, 20, 16)
    assert (reduce["regs"], reduce["smem"]) == (32, 0)


def test_64_bit_divisions_are_counted_inside_loops():
    bodies = ptxas_report.ptx_entries(PTX_SAMPLE)
    assert sorted(bodies) == ["_Z1aPl", "_Z1bPf"]
    # div.s64 before the loops, rem.u64 in the outer loop, div.u64 in the inner one; div.rn.f64 and
    # div.s32 are not 64-bit integer divisions.
    assert ptxas_report.divisions_64(bodies["_Z1aPl"]) == {"div64": 3, "div64_in_loop": 2, "div64_loop_depth": 2}
    assert ptxas_report.divisions_64(bodies["_Z1bPf"]) == {"div64": 0, "div64_in_loop": 0, "div64_loop_depth": 0}


def _has_occupancy_header() -> bool:
    try:
        cuda_include()
    except FileNotFoundError:
        return False
    return shutil.which(os.environ.get("CXX", "g++")) is not None


needs_occupancy = pytest.mark.skipif(not _has_occupancy_header(), reason="needs cuda_occupancy.h and g++")


@needs_occupancy
@pytest.mark.parametrize("gpu, query, blocks, limited_by", [
    # 64 registers x 32 lanes = 2048 per warp (a multiple of the 256-register unit), 8 warps a
    # block: 16384 registers, 65536 / 16384 = 4 blocks, 32 of 64 warps.
    ("h100", Query(256, 64, 0, 256, 0), 4, "registers"),
    # 37 registers: 1184 per warp, rounded up to 1280 (5 units): 65536 / 1280 = 51 warps = 6 blocks of 8.
    ("h100", Query(256, 37, 0, 256, 0), 6, "registers"),
    # 32 registers: 8 blocks by registers and 8 by threads (2048 / 256): the full 64 warps.
    ("h100", Query(256, 32, 0, 256, 0), 8, "warps"),
    # 48 KiB dynamic + 1 KiB reserved per block on A100's 164 KiB: 3 blocks.
    ("a100", Query(256, 32, 0, 256, 48 * 1024), 3, "shared memory"),
    # 12 KiB static + 36 KiB dynamic on H100's 228 KiB: 228 / 49 = 4 blocks.
    ("h100", Query(256, 32, 12 * 1024, 256, 36 * 1024), 4, "shared memory"),
    # 2-warp blocks: the 32 blocks per SM cap bites first (64 warps).
    ("h100", Query(64, 32, 0, 64, 0), 32, "blocks"),
])
def test_occupancy_follows_the_calculator_rules(gpu, query, blocks, limited_by):
    [result] = occupancy(GPUS[gpu], [query])
    assert result.blocks_per_sm == blocks
    assert result.warps_per_sm == blocks * query.block_threads // 32
    assert result.fraction == pytest.approx(result.warps_per_sm / 64)
    assert limited_by in result.limited_by


def test_gpu_table_matches_its_datasheet_arithmetic():
    for gpu in GPUS.values():
        # FP32: SMs x lanes x 2 (FMA) x boost clock.
        assert gpu.sms * gpu.fp32_lanes_per_sm * 2 * gpu.boost_mhz / 1e6 == pytest.approx(gpu.fp32_tflops, rel=0.01)
    assert by_compute_capability("9.0") == "h100" and by_compute_capability("8.0") == "a100"
    assert by_compute_capability("9.0", "NVIDIA H200") == "h200"
    assert by_compute_capability("9.0", "NVIDIA H100 80GB HBM3") == "h100"
    with pytest.raises(KeyError, match="compute capability 7.5"):
        by_compute_capability("7.5")


def _row(gpu, blocks, blocks_per_sm, work, kernel="relu_kernel<float>"):
    layer = Layer("relu", "test", (4, 8, 8), {})
    run = cuda_model.PassRun(layer, 1, None, None, "fwd", ())
    launch = Launch(0, kernel, "", (blocks, 1, 1), (256, 1, 1), 0)
    info = {"regs": 32, "smem": 0, "spill_st": 0, "spill_ld": 0, "div64_in_loop": 0}
    occ = Occupancy(blocks_per_sm, blocks_per_sm * 8, blocks_per_sm * 8 / 64, "")
    return cuda_model._row(gpu, run, 0, launch, work, info, occ)


def test_waves_and_roofline_arithmetic():
    # H100: 132 SMs x 8 resident blocks = 1056 per wave.
    one_second_of_compute = Work(H100.fp32_tflops * 1e12, 1.0, 10**9)
    row = _row(H100, 1056 * 3, 8, one_second_of_compute)
    assert row["waves"] == pytest.approx(3.0)
    assert row["roofline_us"] == pytest.approx(1e6)
    assert row["intensity"] == pytest.approx(H100.fp32_tflops * 1e12)
    # Memory bound: bytes / DRAM bandwidth.
    row = _row(H100, 1056, 8, Work(1.0, H100.dram_gbps * 1e9 / 1000, 10**9))
    assert row["roofline_us"] == pytest.approx(1000.0)
    assert row["model_us"] == pytest.approx(1000.0)
    # Half a wave: the estimate doubles (half the GPU works), the bound does not, and the launch is
    # flagged because its work could have filled a wave.
    row = _row(H100, 528, 8, Work(1.0, H100.dram_gbps * 1e9 / 1000, 10**9))
    assert row["waves"] == pytest.approx(0.5)
    assert row["roofline_us"] == pytest.approx(1000.0) and row["model_us"] == pytest.approx(2000.0)
    assert "under 1 wave" in row["flags"]
    # Under a wave with nothing more to spread: no flag; a quarter occupancy is flagged.
    row = _row(H100, 1, 1, Work(1.0, 1.0, 256))
    assert "under 1 wave" not in row["flags"] and "occupancy < 25%" in row["flags"]
    # 1.5 waves: flagged under 2 waves while the work has pieces for two waves of threads (2 x 1056
    # blocks of 256), not with fewer; a launch under one wave carries the under-1 flag alone.
    resident_threads = 1056 * 256
    assert _row(H100, 1584, 8, Work(1.0, 1.0, 2 * resident_threads))["flags"] == ["under 2 waves"]
    assert _row(H100, 1584, 8, Work(1.0, 1.0, 2 * resident_threads - 1))["flags"] == []
    assert _row(H100, 528, 8, Work(1.0, 1.0, 2 * resident_threads))["flags"] == ["under 1 wave"]
    # An elementwise kernel's thread takes a pack: the same elements are a quarter as many pieces.
    relu = "binary_map_kernel<float, 4, ReluForwardOp>"
    assert _row(H100, 528, 8, Work(1.0, 1.0, 4 * resident_threads - 4), relu)["flags"] == []
    assert _row(H100, 528, 8, Work(1.0, 1.0, 4 * resident_threads), relu)["flags"] == ["under 1 wave"]


def test_outputs_per_thread_reads_the_elementwise_kernels_packs():
    assert outputs_per_thread("binary_map_kernel<float, 4, ReluBackwardOp>") == 4
    assert outputs_per_thread("binary_map_kernel<half_t, 8, ReluForwardOp>") == 8
    assert outputs_per_thread("binary_map_kernel<float, 1, ReluForwardOp>") == 1
    assert outputs_per_thread("dropout_kernel<float, true>") == 4
    assert outputs_per_thread("max_pool2d_2x2_kernel<float, 2>") == 2
    assert outputs_per_thread("max_pool2d_forward_kernel<float>") == 1
    assert outputs_per_thread("gemm_kernel<float, float, GemmTile<128, 128, 8, 8, 8> >") == 1


def test_inner_loop_ceilings_follow_the_instruction_mix():
    large, small = "gemm_kernel<float, float, GemmTile<128, 128, 8, 8, 8> >", "gemm_kernel<float, float, GemmTile<64, 64, 8, 4, 4> >"
    wide = "conv2d_direct_forward_kernel<float, DirectTile<8, 16, 2, 4, 4> >"
    # H100 (4 warp FMAs a clock): 64 FMAs + 4 128-bit loads issue in 17 clocks; 16 FMAs wait for 8 wavefronts.
    assert inner_loop_ceiling(large, H100) == pytest.approx(16 / 17)
    assert inner_loop_ceiling(small, H100) == pytest.approx(0.5)
    assert inner_loop_ceiling(wide, H100) == pytest.approx(2 / 6)
    # A100 has half the FP32 lanes: the same loops are FMA-bound.
    assert inner_loop_ceiling(small, A100) == pytest.approx(1.0)
    assert inner_loop_ceiling(wide, A100) == pytest.approx(4 / 6)
    assert inner_loop_ceiling("im2col_kernel<float>", H100) is None
    # mma.sync tf32, 32 x 16 per warp: 4 mma of 16x8x8 (4096 MACs) per 2 * 4 + 2 * 2 = 12 fragment
    # wavefronts, 341 MACs a clock against the H100's 946 (494.7 TFLOP/s) and the A100's 512 (156).
    tensor_core = "gemm_tensor_core_kernel<float, float, TensorCoreTile<64, 64, 32, 2, 4, 2> >"
    assert inner_loop_ceiling(tensor_core, H100) == pytest.approx(4096 / 12 / (494.7e12 / (2 * 132 * 1.98e9)))
    assert inner_loop_ceiling(tensor_core, A100) == pytest.approx(4096 / 12 / 512, abs=1e-3)
    # 32 x 32 per warp: 8 mma (8192 MACs) per 16 wavefronts, 512 a clock: the A100's whole peak.
    wide_warps = "gemm_tensor_core_kernel<float, float, TensorCoreTile<64, 64, 32, 2, 2, 3> >"
    assert inner_loop_ceiling(wide_warps, A100) == pytest.approx(1.0, abs=1e-3)


def test_conv_work_per_kernel_family():
    conv = Conv(n=2, c=3, h=10, w=10, k=4, r=3, s=3)  # 8x8 outputs, patch 27
    small = "gemm_kernel<float, float, GemmTile<64, 64, 8, 4, 4> >"
    im2col, gemm = conv_pass_work(conv, "fwd", ["im2col_kernel<float>", small])
    assert im2col.flops == 0 and im2col.bytes == 4 * (2 * 3 * 100 + 2 * 27 * 64)
    assert gemm.flops == 2 * 2 * 4 * 64 * 27
    assert gemm.bytes == 4 * (4 * 27 + 2 * 27 * 64 + 4 + 2 * 4 * 64)
    # M = 4 of 64 rows, N = 64 of 64, K = 27 of 32.
    assert gemm.tile_efficiency == pytest.approx(4 / 64 * 1.0 * 27 / 32)
    [direct] = conv_pass_work(conv, "fwd", ["conv2d_direct_forward_kernel<float, DirectTile<8, 16, 2, 1, 4> >"])
    assert direct.flops == gemm.flops and direct.bytes == 4 * (2 * 300 + 4 * 27 + 4 + 2 * 4 * 64)
    # The mirrored chunking is checked against the launches: two GEMMs cannot serve one chunk.
    with pytest.raises(MirrorError, match="chunks"):
        conv_pass_work(conv, "fwd", ["im2col_kernel<float>", small, "im2col_kernel<float>", small])
    big = Conv(n=32, c=64, h=224, w=224, k=64, r=3, s=3, pad=1)
    assert chunk_images(big, 4) == 2  # 64*9*224*224*4 = 115.6 MB per image, 256 MiB buffer
    # dW tiles: 2 x 9 of 32 x 64; ceil(512 / 18) = 29 slices (N*P*Q allows 1568); 128 pixels: one.
    assert wgrad_slices(big) == 29 and wgrad_slices(conv) == 1


def test_split_gemms_count_their_partials():
    # 128 -> 128 @17 at batch 1: 128 x 289 outputs (one problem), a 1152-long reduction. In 9
    # ranges of the large tile (1 x 3 tiles, 27 blocks) the GEMM writes 9 fp32 partials of each
    # output, and the forward's second pass reads them back, adds the bias, writes the output.
    conv = Conv(n=1, c=128, h=19, w=19, k=128, r=3, s=3)
    large = "gemm_kernel<float, float, GemmTile<128, 128, 8, 8, 8>, Im2colGatherForward>"
    second = "conv2d_reduce_forward_partials_kernel<float>"
    outputs = 128 * 289
    gemm, add = conv_pass_work(conv, "fwd", [large, second], blocks=[27, 40], split=lambda images, tile: GemmSplit(9))
    whole, = conv_pass_work(conv, "fwd", [large], blocks=[3])
    assert gemm.flops == whole.flops and gemm.bytes - whole.bytes == 4 * (9 - 1) * outputs
    assert add.bytes == 4 * (9 * outputs + outputs + 128) and add.outputs == outputs
    # The mirrored ranges must match the recorded blocks.
    with pytest.raises(MirrorError, match="27 blocks"):
        conv_pass_work(conv, "fwd", [large, second], blocks=[27, 40], split=lambda images, tile: GemmSplit(8))
    # The launchers' rule on an H100: 3 large tiles of 264 block slots, two waves' worth capped
    # at 1152 / 128 = 9 ranges; at batch 32 (32 x 2 x 4 = 256 tiles of 64 x 64 on tensor cores,
    # 32 x 2 = 64 large ones on CUDA cores) both split: ceil(528 / 64) = 9; ceil(528 / 256) = 3.
    assert gemm_split_ranges(conv, "fwd", 1, 132, 128, False) == GemmSplit(9)
    big = Conv(n=32, c=128, h=17, w=17, k=128, r=3, s=3)
    assert gemm_split_ranges(big, "fwd", 32, 132, 128, False) == GemmSplit(9)
    assert gemm_split_ranges(big, "fwd", 32, 132, 128, True) == GemmSplit(3)
    # The weight gradient always splits: 9 large tiles, 7200-long reduction: ceil(528 / 9) = 59,
    # capped at ceil(7200 / 128) = 57 (56 of 128 and one of 32); on tensor cores, 36 tiles of
    # 64 x 64: ceil(528 / 36) = 15.
    assert gemm_split_ranges(big, "bwd_weight", 32, 132, 128, False) == GemmSplit(57)
    assert gemm_split_ranges(big, "bwd_weight", 32, 132, 128, True) == GemmSplit(15)


def test_tail_split_mirror_and_its_work_items():
    # 64 -> 128 @36 forward at batch 32 on an H100: 10 large tiles an image, 320 on 264 slots.
    # The first 26 images run whole, the other 6 in 5 ranges of 128 (the last 64) of 576.
    conv = Conv(n=32, c=64, h=36, w=36, k=128, r=3, s=3)
    split = gemm_split_ranges(conv, "fwd", 32, 132, 128, False, tile=(128, 128))
    assert split == GemmSplit(5, 26)
    # Each split image's ranges in turn (its 10 tiles a range), as gemm_work_item decodes them.
    assert gemm_items(split, 32, 1, 10, 576) == ((260, 576),) + (((10, 128),) * 4 + ((10, 64),)) * 6
    large = "gemm_kernel<float, float, GemmTile<128, 128, 8, 8, 8>, Im2colGatherForward>"
    gemm, add = conv_pass_work(conv, "fwd", [large, "conv2d_reduce_forward_partials_kernel<float>"],
                               blocks=[560, 4096], split=lambda images, tile: split)
    per_image = 128 * 34 * 34
    assert add.outputs == 6 * per_image and add.bytes == 4 * (5 * 6 * per_image + 6 * per_image + 128)
    assert gemm.bytes - conv_pass_work(conv, "fwd", [large], blocks=[320])[0].bytes == 4 * 4 * 6 * per_image
    # 300 images fill more than two waves: they run whole.
    assert gemm_split_ranges(conv, "fwd", 300, 132, 128, False, tile=(128, 128)) == GemmSplit()
    # The slots' busy fraction: 320 equal tiles on 264 slots keep them busy 320 / 528 of two
    # rounds; the split above, 26 images whole and 6 in ranges, far more of a shorter time.
    assert cuda_model.slot_efficiency(((320, 576),), 264) == pytest.approx(320 / 528)
    assert cuda_model.slot_efficiency(gemm_items(split, 32, 1, 10, 576), 264) > 0.85
    assert cuda_model.slot_efficiency(((100, 7),), 264) == pytest.approx(100 / 264)
    # More items than blocks: a block takes items a grid apart. Items of 1, 1, 1, 5, 5 in 3 blocks
    # make blocks of 6, 6 and 1, which end at 7 on two slots.
    assert cuda_model.slot_efficiency(((3, 1), (2, 5)), 2, grid=3) == pytest.approx(13 / (2 * 7))


def test_dry_run_records_the_launches_of_a_real_run():
    x, w, b = torch.randn(2, 5, 9, 8), torch.randn(6, 5, 3, 3), torch.randn(6)
    dy = torch.randn(2, 6, 9, 8)
    ops = torch.ops.fastconv
    calls = [lambda a=a: (ops.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, a, "simt"),
                          ops.conv2d_backward_input(dy, w, list(x.shape), [1, 1], [1, 1, 1, 1], [1, 1], 1, a, "simt"),
                          ops.conv2d_backward_weight(dy, x, list(w.shape), [1, 1], [1, 1, 1, 1], [1, 1], 1, a, "simt"),
                          ops.conv2d_backward_bias(dy, "simt"))
             for a in ("direct", "im2col")]
    calls += [lambda: ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, "simt"),
              lambda: ops.relu(x, "simt"), lambda: ops.dropout(x, 0.5, torch.zeros(2, dtype=torch.int64), "simt")]
    for call in calls:
        before = sum(n for _o, _s, n in _C.simt_launch_counts())
        with record_launches() as real:
            call()
        middle = sum(n for _o, _s, n in _C.simt_launch_counts())
        with record_launches(dry_run=True) as dry:
            call()
        assert real and [(l.kernel, l.grid, l.block, l.smem) for l in dry] == \
            [(l.kernel, l.grid, l.block, l.smem) for l in real]
        # Real launches count as kernels that ran; dry ones do not, and the recorder is off after.
        assert middle - before == len(real)
        assert sum(n for _o, _s, n in _C.simt_launch_counts()) == middle
        assert not _C.simt_dry_run() and not _C.simt_take_recorded_launches()


def test_dry_run_from_the_environment():
    code = ("import torch, fastconv; from fastconv import _C; "
            "x = torch.ones(64); y = torch.ops.fastconv.relu(x, 'simt'); "
            "print(_C.simt_dry_run(), len(_C.simt_launch_counts()), len(_C.simt_take_recorded_launches()))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTCONV_SIMT_DRY_RUN": "1"},
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["True", "0", "1"]


@pytest.mark.skipif(shutil.which("nvcc") is None or not _has_occupancy_header(), reason="needs nvcc")
def test_model_rows_of_a_small_layer():
    """The whole chain on one layer: ptxas (cached under build/cuda_model), dry runs, occupancy."""
    layer = Layer("conv", "test", (8, 12, 12), {"out_channels": 16, "kernel": 3, "stride": 1, "padding": 1,
                                                "groups": 1})
    runs = cuda_model.record_layer(layer, 2)
    assert {r.pass_ for r in runs} == {"fwd", "bwd_input", "bwd_weight", "bwd_bias"}
    rows = cuda_model.launch_rows(H100, runs, cuda_model.kernel_table(H100.arch, progress=False))
    assert len(rows) == sum(len(r.launches) for r in runs)
    for row in rows:
        assert 0 < row["occupancy"] <= 1 and row["regs"] > 0 and row["roofline_us"] > 0
        assert row["model_us"] >= row["roofline_us"] * 0.999
    auto = {(r["pass"], r["kernel"].split("<")[0]) for r in rows if r["auto"]}
    # 16 output channels per group: direct forward; patch 72: im2col input and weight gradients.
    assert ("fwd", "conv2d_direct_forward_kernel") in auto
    assert ("bwd_input", "gemm_kernel") in auto and ("bwd_input", "col2im_kernel") in auto
    assert ("bwd_weight", "gemm_kernel") in auto
    totals = cuda_model.pass_totals(rows)
    assert math.isclose(sum(t["flops"] for t in totals), sum(r["flops"] for r in rows))
    assert len(cuda_model.auto_rule(totals)) == 3


@pytest.mark.skipif(shutil.which("nvcc") is None or not _has_occupancy_header(), reason="needs nvcc")
def test_model_rows_in_half_precision():
    """float16 (--dtype float16): the forward GEMM runs on tensor cores, against the FP16 tensor
    peak, with the same FLOPs as float32; both gather their columns from the input (float32 on
    CUDA cores), so the GEMMs move the same elements: 2 bytes each against 4."""
    from simt_kernels import compute_capability

    layer = Layer("conv", "test", (16, 12, 12), {"out_channels": 64, "kernel": 3, "stride": 1, "padding": 1,
                                                 "groups": 1})
    kernels = cuda_model.kernel_table(H100.arch, progress=False)

    def forward_launches(dtype):
        with compute_capability(90):
            runs = [r for r in cuda_model.record_layer(layer, 2, dtype=dtype)
                    if r.algorithm == "im2col" and r.pass_ == "fwd"]
        return cuda_model.launch_rows(H100, runs, kernels, dtype.itemsize)

    half_rows, single_rows = forward_launches(torch.float16), forward_launches(torch.float32)
    assert [r["kernel"].split("<")[0] for r in half_rows] == ["gemm_tensor_core_kernel"]
    assert [r["kernel"].split("<")[0] for r in single_rows] == ["gemm_kernel"]
    half, single = half_rows[0], single_rows[0]
    assert half["kernel"].startswith("gemm_tensor_core_kernel<half_t, half_t") and "Im2colGather" in half["kernel"]
    assert single["kernel"].startswith("gemm_kernel<float, float") and "Im2colGather" in single["kernel"]
    assert half["flops"] == single["flops"]
    weights, inputs, outputs = 64 * 16 * 9, 2 * 16 * 144, 2 * 64 * 144
    assert half["dram_bytes"] == pytest.approx(2 * (weights + inputs + 64 + outputs))
    assert single["dram_bytes"] == pytest.approx(4 * (weights + inputs + 64 + outputs))
    peak_us = half["flops"] / (H100.fp16_tensor_tflops * 1e12) * 1e6
    assert half["roofline_us"] == pytest.approx(max(peak_us, half["dram_bytes"] / (H100.dram_gbps * 1e3)))
    with pytest.raises(ValueError, match="tf32 applies to float32"):
        cuda_model.build_model("h100", [1], progress=False, tf32=True, dtype="float16")
