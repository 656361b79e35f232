"""conv2d's algorithm="winograd" (F(2x2, 3x3), CPU only, csrc/cpu/conv2d_winograd.cpp): forward,
conv2d_relu and every gradient against torch on awkward shapes, its float32 error bound, its
determinism, and the errors it raises where it cannot run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn
from fastconv import _C

from conftest import assert_close_relative, check_conv_against_torch, on_each_thread_count

ops = torch.ops.fastconv

# (input, weight, padding, groups, bias)
SHAPES = {
    "batch1_odd": ((1, 3, 7, 9), (4, 3, 3, 3), 0, 1, True),
    "batch0": ((0, 4, 8, 8), (6, 4, 3, 3), 1, 1, True),
    "output_1x1": ((2, 2, 3, 3), (3, 2, 3, 3), 0, 1, False),
    "smaller_than_a_tile": ((2, 2, 1, 2), (3, 2, 3, 3), 1, 1, True),
    "one_row": ((2, 3, 3, 12), (2, 3, 3, 3), 0, 1, True),
    "pad2": ((2, 5, 6, 7), (4, 5, 3, 3), 2, 1, True),
    "pad_pair": ((2, 3, 8, 5), (4, 3, 3, 3), (2, 0), 1, False),
    "pad3_wider_than_the_kernel": ((1, 3, 5, 4), (2, 3, 3, 3), 3, 1, True),
    "same": ((2, 4, 9, 10), (5, 4, 3, 3), "same", 1, True),
    "groups2": ((2, 6, 9, 8), (4, 3, 3, 3), 1, 2, True),
    "depthwise": ((2, 5, 10, 11), (5, 1, 3, 3), 1, 5, True),
    "depthwise_multiplier": ((1, 4, 7, 6), (8, 1, 3, 3), 0, 4, False),
    # one image, several tile blocks that start and end inside tile rows: both threads split it
    "blocks_across_rows": ((1, 16, 70, 69), (8, 16, 3, 3), 1, 1, True),
    "batch_of_blocks": ((3, 24, 41, 37), (40, 24, 3, 3), 0, 1, True),
    # filters packed panel by panel: 7 rows a group (a partial panel of the 6- and 8-row tiles),
    # 340 columns (two K blocks of the GEMM, on either tile), two groups; the input gradient
    # swaps the two
    "packed_filters_in_two_k_blocks": ((1, 680, 5, 6), (14, 340, 3, 3), 1, 2, True),
    # 81 tiles at batch 1, which two threads split by output channels (88 and 96 a group, in
    # parts of whole GEMM tiles with a partial last panel), each part's filters packed apart
    "channel_parts": ((1, 192, 17, 17), (176, 96, 3, 3), 1, 2, True),
    # one tile block of deep filters (260 x 264 a group: 16 x 68,640 transformed, above the
    # 2^20 kept whole): each thread packs its own rows in slices of 64, the last one partial;
    # the input gradient packs 264 x 260 rotated
    "filters_packed_per_thread": ((1, 264, 5, 7), (260, 264, 3, 3), 1, 1, True),
    "filters_packed_per_thread_groups2": ((1, 528, 4, 3), (528, 264, 3, 3), 1, 2, False),
}

def _make(name, dtype):
    xs, ws, padding, groups, bias = SHAPES[name]
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(xs, generator=g, dtype=dtype)
    w = torch.randn(ws, generator=g, dtype=dtype) / (ws[1] * 9) ** 0.5
    b = torch.randn(ws[0], generator=g, dtype=dtype) if bias else None
    return x, w, b, dict(padding=padding, groups=groups)


@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_and_gradients_match_torch(name, dtype, fused):
    x, w, b, geometry = _make(name, dtype)
    check_conv_against_torch(x, w, b, geometry, dtype, "winograd", fused)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_layouts(layout):
    base = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    x = {"channels_last": base.to(memory_format=torch.channels_last),
         "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
         "sliced": torch.randn(2, 12, 9, 16, dtype=torch.float64)[:, ::2, :, ::2]}[layout].requires_grad_()
    w = torch.randn(4, 6, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    y = FF.conv2d(x, w, padding=1, algorithm="winograd")
    expected = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(expected).to(memory_format=torch.channels_last)
    for a, e in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("padding,groups", [(0, 1), (1, 2), (2, 1), (3, 3)])
def test_gradcheck(padding, groups):
    x = torch.randn(2, 2 * groups, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, x.shape[1] // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: FF.conv2d(x, w, b, padding=padding, groups=groups, algorithm="winograd")
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_layer_and_unbatched_input():
    layer = fnn.Conv2d(4, 6, 3, padding=1, algorithm="winograd").double()
    reference = torch.nn.Conv2d(4, 6, 3, padding=1).double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(x))
    assert "algorithm='winograd'" in repr(layer)


def test_deterministic():
    x = torch.randn(2, 32, 30, 31)
    w = torch.randn(48, 32, 3, 3)
    y = FF.conv2d(x, w, padding=1, algorithm="winograd")
    dy = torch.randn_like(y)
    geo = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    runs = [(ops.conv2d(x, w, None, *geo, "winograd", "cpu"),
             ops.conv2d_backward_input(dy, w, list(x.shape), *geo, "winograd", "cpu"),
             ops.conv2d_backward_weight(dy, x, list(w.shape), *geo, "winograd", "cpu")) for _ in range(3)]
    for run in runs[1:]:
        for a, e in zip(run, runs[0]):
            assert torch.equal(a, e)


def test_weight_gradient_of_one_tile_block_splits_rows_over_the_threads():
    """Batch 1 with all 100 tiles in one block: two threads each sum every tile into their own
    rows of the transformed weight gradient, in one thread's order, so the result is the
    one-thread result bit for bit, and matches torch."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 32, 20, 20, generator=g)
    w = torch.randn(24, 32, 3, 3, generator=g) / (32 * 9) ** 0.5
    dy = torch.randn(1, 24, 20, 20, generator=g)
    geo = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    grads = on_each_thread_count(
        (1, 2), lambda: ops.conv2d_backward_weight(dy, x, list(w.shape), *geo, "winograd", "cpu"))
    assert torch.equal(grads[0], grads[1])
    xd, wd = x.double(), w.double().requires_grad_()
    (expected,) = torch.autograd.grad(F.conv2d(xd, wd, padding=1), wd, dy.double())
    assert_close_relative(grads[1], expected, torch.float32, "grad weight")


@pytest.mark.parametrize("threads", [1, 3])
def test_filters_packed_per_thread_match_any_thread_count(threads):
    """A deep layer on one tile block: the threads pack their own output channels' filters in
    slices, so the forward and input gradient are the same bit for bit on any thread count as
    on two, and match torch."""
    g = torch.Generator().manual_seed(threads)
    x = torch.randn(1, 272, 6, 6, generator=g)
    w = torch.randn(264, 272, 3, 3, generator=g) / (272 * 9) ** 0.5
    dy = torch.randn(1, 264, 6, 6, generator=g)
    geo = ([1, 1], [1, 1, 1, 1], [1, 1], 1)
    results = on_each_thread_count(
        (2, threads), lambda: (ops.conv2d(x, w, None, *geo, "winograd", "cpu"),
                               ops.conv2d_backward_input(dy, w, list(x.shape), *geo, "winograd", "cpu")))
    for ours, base in zip(results[1], results[0]):
        assert torch.equal(ours, base)
    xd, wd = x.double().requires_grad_(), w.double()
    y = F.conv2d(xd, wd, padding=1)
    (dx,) = torch.autograd.grad(y, xd, dy.double())
    assert_close_relative(results[1][0], y.detach(), torch.float32, "forward")
    assert_close_relative(results[1][1], dx, torch.float32, "grad input")


# The float32 error of F(2x2, 3x3), max |ours - float64 reference| / max |reference|, measured
# with 3 to 512 input channels (64 outputs, 20x20, padding 1, unit-variance outputs): forward
# 1.6e-7 (3 ch) .. 6.3e-7 (512 ch), input gradient 2.7e-7 .. 4.0e-7, weight gradient
# 2.8e-7 .. 4.6e-7; im2col's is 1.7e-7 .. 5.7e-7 and torch's own float32 (oneDNN) 1.5e-7 ..
# 1.1e-6 on the same tensors. F(4x4, 3x3), emulated in float32 with torch ops (forward, 64
# outputs, 26x26, no padding), reaches 3.0e-6 .. 1.2e-5, 15-45x a float32 direct convolution's
# on the same tensors: too close to the 1e-5 these tests allow, so it is not used. csrc/ops/conv2d_auto.cpp lets "auto" pick winograd only up to
# WINOGRAD_AUTO_MAX_CHANNELS input and output channels per group, the widths bounded here.
WINOGRAD_AUTO_MAX_CHANNELS = 1024
ERROR_BOUND = 2e-6


# The forward and the weight gradient sum over the input channels, the input gradient over the
# output channels: both widths are bounded.
@pytest.mark.parametrize("channels,out_channels", [(256, 32), (WINOGRAD_AUTO_MAX_CHANNELS, 32),
                                                   (32, WINOGRAD_AUTO_MAX_CHANNELS)])
def test_float32_error_bound_on_wide_layers(channels, out_channels):
    g = torch.Generator().manual_seed(channels + out_channels)
    x = torch.randn(1, channels, 12, 12, generator=g)
    w = torch.randn(out_channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, padding=1)
    dy = torch.randn(expected.shape, generator=g)
    expected_grads = torch.autograd.grad(expected, (xd, wd), dy.double())
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = FF.conv2d(xs, ws, padding=1, algorithm="winograd")
    grads = torch.autograd.grad(y, (xs, ws), dy)
    for name, a, e in zip(("forward", "grad input", "grad weight"), (y, *grads), (expected, *expected_grads)):
        error = ((a.double() - e).abs().max() / e.abs().max()).item()
        assert error < ERROR_BOUND, f"{name}: relative error {error:.2e} over {ERROR_BOUND:.0e}"


def _auto(xs, ws, padding=1, conv_pass="fwd", stride=1, dilation=1):
    return _C.conv2d_auto_algorithm("cpu", conv_pass, list(xs), list(ws), [stride, stride], [padding, padding],
                                    [dilation, dilation], 1)


@pytest.mark.parametrize("conv_pass", ["fwd", "bwd_input", "bwd_weight"])
def test_auto_picks_winograd_where_it_measured_faster(conv_pass):
    picks = lambda xs, ws, padding=0: _auto(xs, ws, padding, conv_pass)  # noqa: E731
    # convnet4's layers: not the RGB one, the others down to 128 @17 at batch 1 (64 tiles)
    assert picks((16, 3, 150, 150), (32, 3, 3, 3)) == "im2col"
    assert picks((1, 32, 74, 74), (64, 32, 3, 3)) == "winograd"
    assert picks((1, 64, 36, 36), (128, 64, 3, 3)) == "winograd"
    assert picks((16, 64, 36, 36), (128, 64, 3, 3)) == "winograd"
    assert picks((1, 128, 17, 17), (128, 128, 3, 3)) == "winograd"
    assert picks((16, 128, 17, 17), (128, 128, 3, 3)) == "winograd"
    # VGG16: 64 @224 and 512 @14 at batch 1 (49 tiles) yes; 256 @9 at batch 1 (25 tiles) no
    assert picks((1, 64, 224, 224), (64, 64, 3, 3), 1) == "winograd"
    assert picks((1, 512, 14, 14), (512, 512, 3, 3), 1) == "winograd"
    assert picks((1, 256, 9, 9), (256, 256, 3, 3), 1) == "im2col"
    # 8 channels per group: not faster
    assert picks((16, 8, 74, 74), (32, 8, 3, 3)) == "im2col"


def test_auto_runs_winograd_and_matches_torch():
    x = torch.randn(2, 16, 24, 24, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    assert _auto(x.shape, w.shape) == "winograd"
    y = FF.conv2d(x, w, padding=1, algorithm="auto")
    expected = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
        torch.testing.assert_close(a, e)


def test_auto_stays_within_the_bounded_width():
    assert _auto((1, WINOGRAD_AUTO_MAX_CHANNELS * 2, 14, 14), (64, WINOGRAD_AUTO_MAX_CHANNELS * 2, 3, 3)) != "winograd"
    assert _auto((4, 16, 24, 24), (WINOGRAD_AUTO_MAX_CHANNELS * 2, 16, 3, 3)) != "winograd"
    # and never where winograd cannot run
    assert _auto((16, 64, 36, 36), (128, 64, 3, 3), stride=2) != "winograd"
    assert _auto((16, 64, 36, 36), (128, 64, 3, 3), dilation=2) != "winograd"
    assert _auto((16, 64, 36, 36), (128, 64, 5, 5)) != "winograd"


@pytest.mark.parametrize("kwargs,reason", [
    (dict(weight=(4, 3, 5, 5)), "3x3 kernel"),
    (dict(weight=(4, 3, 3, 1)), "3x3 kernel"),
    (dict(stride=2), "stride 1"),
    (dict(stride=(1, 2)), "stride 1"),
    (dict(dilation=2), "dilation 1"),
])
def test_ineligible_geometry_raises_value_error(kwargs, reason):
    x = torch.randn(1, 3, 12, 12)
    w = torch.randn(kwargs.pop("weight", (4, 3, 3, 3)))
    with pytest.raises(ValueError, match=f"winograd.*{reason}"):
        FF.conv2d(x, w, algorithm="winograd", **kwargs)
    with pytest.raises(ValueError, match=f"winograd.*{reason}"):
        fnn.Conv2d(3, w.shape[0], tuple(w.shape[2:]), algorithm="winograd", **kwargs)(x)


def test_cpu_only():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with fastconv.backend("simt"), pytest.raises(ValueError, match="'winograd' runs on the 'cpu' backend only"):
        FF.conv2d(x, w, algorithm="winograd")
    geo = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(ValueError, match="'cpu' backend only"):
        ops.conv2d_backward_weight(torch.randn(1, 4, 6, 6), x, [4, 3, 3, 3], *geo, "winograd", "simt")


def test_unknown_algorithm_names_winograd():
    with pytest.raises(ValueError, match="'winograd'"):
        FF.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), algorithm="winograd4")


def test_opcheck():
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    geometry = ([1, 1], [1, 0, 2, 1], [1, 1], 2, "winograd", "cpu")  # asymmetric padding, two groups
    y = ops.conv2d(x, w, b, *geometry)
    torch.testing.assert_close(y, F.conv2d(F.pad(x, [2, 1, 1, 0]), w, b, groups=2))
    g = torch.randn_like(y)
    torch.library.opcheck(ops.conv2d.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *geometry))
    torch.library.opcheck(ops.conv2d_relu.default, (x.detach(), w.detach(), None, *geometry))
    torch.library.opcheck(ops.conv2d_backward_input.default, (g, w.detach(), list(x.shape), *geometry))
    torch.library.opcheck(ops.conv2d_backward_weight.default, (g, x.detach(), list(w.shape), *geometry))
