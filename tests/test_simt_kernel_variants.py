"""Each CUDA kernel variant on the SIMT runtime, by name, in every dtype it is built for.

The ops pick a kernel variant from the shapes and the alignment of their operands (vector or
scalar paths, tile shapes, staged or unstaged, one slice or several); these cases reach each
one on purpose, check that it ran (``expect_kernels``) and compare with torch. Together with
the rest of the suite they launch every variant built (tests/test_zz_kernel_coverage.py).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from bench.cases import Layer
from bench.cuda_model import record_layer
from simt_kernels import (compute_capability, expect_kernels, expect_no_kernels, launched, multiprocessors,
                          run_tests_in_subprocess, simt_has_tensor_cores)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KERNEL_TYPE = {torch.float32: "float", torch.float64: "double", torch.float16: "half_t",
               torch.bfloat16: "bfloat16_t"}
# Relative to the largest magnitude of the float64 reference.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def _simt():
    with fastconv.backend("simt"):
        yield


def _values(shape, dtype, requires_grad=True):
    return torch.randn(shape).to(dtype).requires_grad_(requires_grad)


def _misaligned(n, dtype):
    """n values whose storage starts one element past a 16-byte boundary (the scalar paths)."""
    t = torch.randn(n + 1).to(dtype)[1:]
    assert t.data_ptr() % 16 != 0
    return t


def _close(ours, expected, dtype):
    scale = expected.abs().max().item() + 1e-12
    torch.testing.assert_close(ours.double() / scale, expected.double() / scale, rtol=0, atol=TOLERANCE[dtype])


def _check_conv(dtype, x_shape, w_shape, algorithm, **geometry):
    x, w = _values(x_shape, dtype), _values(w_shape, dtype)
    y = FF.conv2d(x, w, algorithm=algorithm, **geometry)
    wide = [t.detach().double().requires_grad_() for t in (x, w)]
    expected = F.conv2d(*wide, **geometry)
    _close(y, expected, dtype)
    g = torch.randn(y.shape).to(dtype)
    for ours, theirs in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(expected, wide, g.double())):
        _close(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_scalar_path_on_misaligned_storage(dtype):
    t = KERNEL_TYPE[dtype]
    x = _misaligned(37, dtype).requires_grad_()
    with expect_kernels(f"binary_map_kernel<{t}, 1, ReluForwardOp>"):
        y = FF.relu(x)
    torch.testing.assert_close(y, F.relu(x.detach()), rtol=0, atol=0)
    g = _misaligned(37, dtype)
    with expect_kernels(f"binary_map_kernel<{t}, 1, ReluBackwardOp>"):
        (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, torch.where(y <= 0, torch.zeros_like(g), g), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_scalar_path_on_misaligned_storage(dtype):
    x = _misaligned(41, dtype)
    torch.manual_seed(3)
    with expect_kernels(f"dropout_kernel<{KERNEL_TYPE[dtype]}, false>"):
        y = FF.dropout(x, 0.5)
    torch.manual_seed(3)
    expected = FF.dropout(x.double().contiguous(), 0.5)  # the same mask; x * 2 is exact
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_2x2_two_outputs_per_thread(dtype):
    x = _values((2, 3, 8, 12), dtype)  # width a multiple of 4, aligned: two outputs per thread
    with expect_kernels(f"max_pool2d_2x2_kernel<{KERNEL_TYPE[dtype]}, 2>"):
        y, idx = FF.max_pool2d(x, 2, return_indices=True)
    expected, expected_idx = F.max_pool2d(x.detach().double(), 2, return_indices=True)
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=0)
    torch.testing.assert_close(idx, expected_idx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_without_input_channels_fills_zeros(dtype):
    x, w = torch.randn(2, 0, 5, 5).to(dtype), torch.randn(4, 0, 3, 3).to(dtype)
    with expect_kernels(f"conv2d_zero_kernel<{KERNEL_TYPE[dtype]}>"):
        y = FF.conv2d(x, w)
    # A sum over no channels is zero: [2, 4, 3, 3] zeros. (torch 2.14's CPU conv2d returns an empty
    # [2, 0, 3, 3] here, losing the output channels; we keep the shape the arguments define.)
    torch.testing.assert_close(y, torch.zeros(2, 4, 3, 3, dtype=dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_conv2d_unstaged_when_a_patch_exceeds_shared_memory(dtype):
    # Dilation 60 makes one channel's input patch larger than 48 KiB of shared memory.
    t = KERNEL_TYPE[dtype]
    with expect_kernels(f"conv2d_direct_forward_unstaged_kernel<{t}>",
                        f"conv2d_direct_backward_input_unstaged_kernel<{t}>"):
        _check_conv(dtype, (1, 1, 130, 130), (2, 1, 3, 3), "direct", dilation=60)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_conv2d_unstaged_with_groups_stride_and_padding(dtype):
    # The unstaged kernels split an element's index into (x, y, channel in group, group, image)
    # and find the output rows an input reaches by dividing by the stride: two images, two groups,
    # stride 2 and odd sizes exercise every digit. Dilation 120 overflows shared memory both ways.
    t = KERNEL_TYPE[dtype]
    with expect_kernels(f"conv2d_direct_forward_unstaged_kernel<{t}>",
                        f"conv2d_direct_backward_input_unstaged_kernel<{t}>"):
        _check_conv(dtype, (2, 4, 251, 247), (6, 2, 3, 3), "direct", stride=2, padding=1, dilation=120, groups=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_conv2d_weight_gradient_in_several_slices(dtype):
    # 2 images of 32x32 outputs: 2,048 pixels to reduce, cut into slices added in a second pass.
    t = KERNEL_TYPE[dtype]
    with expect_kernels(f"conv2d_direct_backward_weight_kernel<{t}>", f"conv2d_reduce_partials_kernel<{t}, {t}>"):
        _check_conv(dtype, (2, 2, 34, 34), (3, 2, 3, 3), "direct")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels, tile", [(1, "1, 1>"), (3, "1, 4>"), (8, "4, 4>")],
                         ids=["single", "narrow", "wide"])
def test_direct_conv2d_tiles(dtype, channels, tile):
    # The tile follows the channels per group: output channels forward, input channels backward.
    t = KERNEL_TYPE[dtype]
    with expect_kernels(f"conv2d_direct_forward_kernel<{t}, DirectTile<8, 16, 2, {tile}",
                        f"conv2d_direct_backward_input_kernel<{t}, DirectTile<8, 16, 2, {tile}"):
        _check_conv(dtype, (2, channels * 2, 9, 11), (channels * 2, channels, 3, 3), "direct", padding=1,
                    groups=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_gemm_large_tile(dtype):
    # 128 output channels by 256 pixels on a device of one multiprocessor (two blocks at a time):
    # two 128 x 128 tiles take one round, eight 64 x 64 ones four, at twice the cost a tile
    # element on 128 FP32 lanes (sm_90) and 5/4 on 64 (sm_75; double everywhere). float16 and
    # bfloat16 take it only where there are no tensor cores (FASTCONV_SIMT_ARCH=75:
    # tests/test_tensor_cores.py).
    t = KERNEL_TYPE[dtype]
    on_tensor_cores = dtype in (torch.float16, torch.bfloat16) and simt_has_tensor_cores()
    kernel = f"gemm_tensor_core_kernel<{t}, {t}" if on_tensor_cores else f"gemm_kernel<{t}, {t}, GemmTile<128, 128"
    with multiprocessors(1), expect_kernels(kernel):
        _check_conv(dtype, (1, 4, 16, 16), (128, 4, 3, 3), "im2col", padding=1)


def test_im2col_gemm_wide_tile():
    # 64 output channels by 1,600 pixels on one multiprocessor of 128 FP32 lanes (two blocks at a
    # time): seven 64 x 256 tiles take 4 rounds where thirteen 128 x 128 tiles, half of each
    # idle, take 7 and twenty-five 64 x 64 ones, at twice the cost a tile element, 13. The input
    # gradient's GEMM (36 rows) takes it too. Only float32 has the wide tile: double and 16-bit
    # results spill on it, and float16 and bfloat16 multiply on tensor cores where it would pay.
    with multiprocessors(1), expect_kernels("gemm_kernel<float, float, GemmTile<64, 256"):
        _check_conv(torch.float32, (1, 4, 40, 40), (64, 4, 3, 3), "im2col", padding=1)


def _unfolds_columns(dtype) -> bool:
    """Whether im2col unfolds its columns here: 16-bit GEMMs on CUDA cores (run as an sm_75), and
    float32 and float64 with the gathering GEMMs off (FASTCONV_IM2COL_GATHER=0, a subprocess)."""
    return dtype.itemsize == 2 or os.environ.get("FASTCONV_IM2COL_GATHER") == "0"


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_runs_of_four_elements_a_thread(dtype):
    # On one multiprocessor a launch of more than 16,380 column elements gives each thread 4
    # consecutive ones. 15 output columns a row: runs wrap into the next row of pixels and the
    # next (c, r, s); 24,570 elements in the first case, so its last run is cut short. 2 columns
    # (a 1x1 kernel at stride 2): a run spans two rows. One output pixel of a 1x3 kernel: a run
    # spans four (c, r, s), and with 8,403 elements an image one of them crosses into the next.
    # Only 16-bit convolutions without tensor cores (sm_75) unfold their columns by default;
    # float32 and float64 gather theirs in the GEMM (test_tensor_cores.py) on the same awkward
    # geometries, and unfold them with the gathers off (test_float_and_double_unfold_...).
    t = KERNEL_TYPE[dtype]
    cc = 75 if dtype.itemsize == 2 else 90
    path = [f"im2col_kernel<{t}, 4>"] if _unfolds_columns(dtype) else [f"gemm_kernel<{t}, {t}", "Im2colGatherForward"]
    with multiprocessors(1), compute_capability(cc), expect_kernels(*path):
        _check_conv(dtype, (2, 7, 13, 15), (5, 7, 3, 3), "im2col", padding=1)
        _check_conv(dtype, (2, 7, 27, 29), (4, 7, 3, 3), "im2col", stride=2, padding=2, dilation=2)
        _check_conv(dtype, (5, 420, 7, 3), (3, 420, 1, 1), "im2col", stride=2)
        _check_conv(dtype, (2, 2801, 1, 3), (3, 2801, 1, 3), "im2col")


def test_float_and_double_unfold_their_columns_with_the_gathers_off():
    # FASTCONV_IM2COL_GATHER is read once per process, hence a subprocess.
    runs_of_four = "tests/test_simt_kernel_variants.py::test_im2col_runs_of_four_elements_a_thread"
    launches = run_tests_in_subprocess([runs_of_four], FASTCONV_IM2COL_GATHER="0")
    for t in ("float", "double"):
        assert launched(launches, f"im2col_kernel<{t}, 4>"), t
        assert not any(f"<{t}" in k and "Im2colGather" in k for k in launches), t


def test_small_im2col_launches_keep_one_element_a_thread():
    # The same 24,570 elements on 132 multiprocessors would leave most of them idle in runs of 4
    # (float16 on CUDA cores, an sm_75: it unfolds its columns).
    with compute_capability(75), expect_kernels("im2col_kernel<half_t, 1>"), \
            expect_no_kernels("im2col_kernel<half_t, 4>"):
        _check_conv(torch.float16, (2, 7, 13, 15), (5, 7, 3, 3), "im2col", padding=1)


def _gemm_tiles(x_shape, w_shape, pass_, padding=0, sms=132, cc=90):
    """(BM, BN) and blocks of the GEMMs that one pass of an im2col convolution (stride 1) launches
    on `sms` multiprocessors of compute capability `cc`, in the GPU model's dry run (shapes only,
    no kernel runs)."""
    n, c, h, w = x_shape
    layer = Layer("conv", "test", (c, h, w),
                  dict(out_channels=w_shape[0], kernel=w_shape[2], stride=1, padding=padding, groups=1))
    with multiprocessors(sms), compute_capability(cc):
        [run] = [r for r in record_layer(layer, n) if r.algorithm == "im2col" and r.pass_ == pass_]
    return [(*(int(v) for v in launch.kernel.split("GemmTile<")[1].split(", ")[:2]), launch.blocks)
            for launch in run.launches if launch.kernel.startswith("gemm_kernel")]


def test_gemm_tiles_follow_rounds_of_resident_blocks():
    # Batch 32 on 132 multiprocessors, two blocks each (264 at a time).
    # The reduction: 32 images of 72x72 or 34x34 pixels.
    # 32 -> 64 @74 forward, M = 64, N = 5184: 672 wide tiles take 3 rounds; 1,312 large ones 5,
    # 2,592 small ones 10 at twice the cost a tile element.
    assert _gemm_tiles((32, 32, 74, 74), (64, 32, 3, 3), "fwd") == [(64, 256, 672)]
    # Its input gradient, M = 288: 3,360 wide tiles (13 rounds) against 3,936 large ones (15);
    # the grid stops at 1,024 blocks, which stride through the tiles.
    assert _gemm_tiles((32, 32, 74, 74), (64, 32, 3, 3), "bwd_input") == [(64, 256, 1024)]
    # Its weight gradient, M = 64, N = 288: two wide tiles a reduction range, split for two
    # rounds (264 ranges, 528 blocks).
    assert _gemm_tiles((32, 32, 74, 74), (64, 32, 3, 3), "bwd_weight") == [(64, 256, 528)]
    # 64 -> 128 @36 forward, M = 128, N = 1156: 320 large or wide tiles take 2 rounds either way
    # (the large ones without padding rows), 1,216 small ones 5 at twice the cost. The 56 tiles
    # of the second round would run alone, so the 26 images of the first run whole (260 tiles)
    # and the other 6 in 5 reduction ranges each (300 blocks).
    assert _gemm_tiles((32, 64, 36, 36), (128, 64, 3, 3), "fwd") == [(128, 128, 560)]
    # (20 images whole and 12 in 3 ranges would launch 560 blocks too.) The second pass adds the
    # ranges of 6 images, 6 x 128 x 34 x 34 outputs, an element a thread.
    layer = Layer("conv", "test", (64, 36, 36), dict(out_channels=128, kernel=3, stride=1, padding=0, groups=1))
    with multiprocessors(132), compute_capability(90):
        [run] = [r for r in record_layer(layer, 32) if r.algorithm == "im2col" and r.pass_ == "fwd"]
    [second] = [launch for launch in run.launches if launch.kernel.startswith("conv2d_reduce_forward_partials")]
    assert second.blocks * second.threads == -(-6 * 128 * 34 * 34 // 256) * 256
    # 20 images of 128 x 1024 (32 x 32 pixels): 160 large tiles take one round, 640 small ones
    # three, a small tile element weighing twice a large one's where an SM has 128 FP32 lanes
    # (sm_90) and 5/4 where it has 64 (sm_80).
    conv = ((20, 8, 32, 32), (128, 8, 3, 3), "fwd")
    assert _gemm_tiles(*conv, padding=1, cc=90) == [(128, 128, 160)]
    assert _gemm_tiles(*conv, padding=1, cc=80) == [(64, 64, 640)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_gemm_small_tile_when_large_ones_fill_under_a_wave(dtype):
    # The same problem on 132 multiprocessors: two 128 x 128 tiles would leave 130 idle.
    t = KERNEL_TYPE[dtype]
    on_tensor_cores = dtype in (torch.float16, torch.bfloat16) and simt_has_tensor_cores()
    kernel = f"gemm_tensor_core_kernel<{t}, {t}" if on_tensor_cores else f"gemm_kernel<{t}, {t}, GemmTile<64, 64"
    with expect_kernels(kernel):
        _check_conv(dtype, (1, 4, 16, 16), (128, 4, 3, 3), "im2col", padding=1)
