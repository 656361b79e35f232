"""The CPU direct algorithm's depthwise kernels (csrc/cpu/conv2d_depthwise.cpp: one input channel
per group, square 3x3, 5x5 or 7x7 kernels, horizontal stride 1 or 2): forward, conv2d_relu and every gradient against
torch on awkward geometries, in float32 and float64, and the layers next to them that stay on the
general direct kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from conftest import check_conv_against_torch

ops = torch.ops.fastconv

# (input, weight, stride, padding, dilation, groups, bias)
SHAPES = {
    "stride1_pad1": ((2, 6, 9, 11), (6, 1, 3, 3), 1, 1, 1, 6, True),
    "stride1_unpadded_odd": ((3, 5, 7, 4), (5, 1, 3, 3), 1, 0, 1, 5, False),
    "stride2": ((2, 4, 13, 10), (4, 1, 3, 3), 2, 1, 1, 4, True),
    "stride_2_by_1": ((1, 3, 9, 9), (3, 1, 3, 3), (2, 1), 1, 1, 3, True),
    # a vertical stride of 3, a horizontal one of 2, dilated both ways
    "stride_3_by_2_dilated": ((2, 4, 15, 17), (4, 1, 3, 3), (3, 2), 2, (2, 3), 4, True),
    # padding wider than the dilated kernel's half: whole rows and columns of zeros
    "padding_past_the_kernel": ((1, 3, 6, 7), (3, 1, 3, 3), 1, (4, 3), 2, 3, True),
    # the input gradient's window of dY: read in place (padding 2 = 2 dilations), and starting
    # left of dY (padding 4 across, past 2)
    "input_gradient_reads_dy_in_place": ((1, 3, 6, 7), (3, 1, 3, 3), 1, 2, 1, 3, True),
    "input_gradient_window_left_of_dy": ((1, 2, 6, 5), (2, 1, 3, 3), 1, (1, 4), 1, 2, True),
    "channel_multiplier_2": ((2, 3, 8, 8), (6, 1, 3, 3), 1, 1, 1, 3, True),
    "channel_multiplier_5_stride2": ((1, 2, 11, 9), (10, 1, 3, 3), 2, 2, 1, 2, False),
    "same_dilated": ((2, 4, 6, 5), (4, 1, 3, 3), 1, "same", (2, 1), 4, True),
    "batch0": ((0, 4, 6, 6), (4, 1, 3, 3), 1, 1, 1, 4, True),  # answered before any kernel
    "one_output_pixel": ((1, 2, 3, 3), (2, 1, 3, 3), 1, 0, 1, 2, True),
    # rows of several vectors and a remainder on any vector width
    "wide_rows": ((1, 2, 5, 70), (2, 1, 3, 3), 1, 1, 1, 2, True),
    "kernel_5x5_stride2": ((2, 3, 12, 11), (3, 1, 5, 5), 2, 2, 1, 3, True),
    "kernel_5x5_padding_past_the_kernel": ((1, 2, 5, 6), (2, 1, 5, 5), 1, (5, 4), 1, 2, False),
    "kernel_7x7_dilated_multiplier_2": ((1, 2, 16, 15), (4, 1, 7, 7), 1, 3, (1, 2), 2, True),
    "kernel_7x7_stride_2_by_1": ((2, 3, 13, 9), (3, 1, 7, 7), (2, 1), 3, 1, 3, True),
    # the general direct kernels: stride 3 across, a 3x2 kernel, a 4x4 one, two input channels
    # a group
    "kernel_4x4": ((1, 3, 8, 9), (3, 1, 4, 4), 1, 1, 1, 3, True),
    "stride_across_3": ((1, 3, 8, 11), (3, 1, 3, 3), (1, 3), 1, 1, 3, True),
    "kernel_3x2": ((1, 3, 8, 9), (3, 1, 3, 2), 1, 1, 1, 3, True),
    "two_channels_a_group": ((1, 4, 8, 9), (2, 2, 3, 3), 1, 1, 1, 2, True),
}

def _make(name, dtype):
    xs, ws, stride, padding, dilation, groups, bias = SHAPES[name]
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(xs, generator=g, dtype=dtype)
    w = torch.randn(ws, generator=g, dtype=dtype)
    b = torch.randn(ws[0], generator=g, dtype=dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_and_gradients_match_torch(name, dtype, fused):
    x, w, b, geometry = _make(name, dtype)
    check_conv_against_torch(x, w, b, geometry, dtype, "direct", fused)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_layouts(layout):
    x, w, b, geometry = _make("stride2", torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.cat([x, x], dim=3)[..., ::2]
        assert not x.is_contiguous()
    check_conv_against_torch(x, w, b, geometry, torch.float32, "direct")


@pytest.mark.parametrize("name", ["stride_3_by_2_dilated", "channel_multiplier_2", "padding_past_the_kernel",
                                  "kernel_5x5_stride2"])
def test_gradcheck(name):
    x, w, b, geometry = _make(name, torch.float64)
    x, w, b = (t.requires_grad_() for t in (x[:1, :, :7, :8], w, b))
    fn = lambda x_, w_, b_: FF.conv2d(x_, w_, b_, algorithm="direct", **geometry)  # noqa: E731
    with fastconv.backend("cpu"):
        assert torch.autograd.gradcheck(fn, (x, w, b))


def test_deterministic():
    x, w, _, geometry = _make("channel_multiplier_2", torch.float32)
    x, w = x.requires_grad_(), w.requires_grad_()
    runs = []
    for _ in range(3):
        y = FF.conv2d(x, w, algorithm="direct", **geometry)
        runs.append((y, *torch.autograd.grad(y, (x, w), torch.ones_like(y))))
    for run in runs[1:]:
        for a, e in zip(run, runs[0]):
            assert torch.equal(a, e)


@pytest.mark.parametrize("kernel", [3, 5])
def test_infinite_input_reaches_only_the_taps_that_see_it(kernel):
    """An infinite input in the last column is seen by the right-most taps only; the other taps'
    weight gradients stay finite, as torch's do (the 5x5 weight gradient runs its taps over the
    whole plane at once, reading past the row ends)."""
    g = torch.Generator().manual_seed(kernel)
    x = torch.randn(2, 3, 9, 10, generator=g, dtype=torch.float64)
    x[1, 2, 4, -1] = float("inf")
    w = torch.randn(3, 1, kernel, kernel, generator=g, dtype=torch.float64)
    dy = torch.randn(2, 3, 9 - kernel + 1, 10 - kernel + 1, generator=g, dtype=torch.float64)
    ours = ops.conv2d_backward_weight(dy, x, list(w.shape), [1, 1], [0, 0, 0, 0], [1, 1], 3, "direct", "cpu")
    (expected,) = torch.autograd.grad(F.conv2d(x, w.requires_grad_(), groups=3), w, dy)
    assert not expected[2, 0, :, :-1].isinf().any() and expected[2, 0, :, -1].isinf().any()
    torch.testing.assert_close(ours, expected, equal_nan=True)
