"""conv2d's algorithm="auto" on the CUDA kernels (csrc/ops/conv2d_auto.cpp): each pass picks
what the rule says, as the SIMT launch counts show, and the results still match torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import _C

from conftest import BACKENDS, device_of
from simt_kernels import expect_kernels

DIRECT = {"fwd": "conv2d_direct_forward_kernel", "bwd_input": "conv2d_direct_backward_input_kernel",
          "bwd_weight": "conv2d_direct_backward_weight_kernel"}
IM2COL = {"fwd": "gemm_kernel", "bwd_input": "col2im_kernel", "bwd_weight": "gemm_kernel"}

# (input, weight, groups, padding, the algorithm of each pass: fwd, bwd_input, bwd_weight)
CASES = {
    # depthwise: every pass direct
    "depthwise": ((2, 4, 7, 7), (4, 1, 3, 3), 4, 0, ("direct", "direct", "direct")),
    # 3 input channels: a narrow forward GEMM (direct), a patch of 27 (im2col dX and dW)
    "rgb": ((2, 3, 9, 9), (8, 3, 3, 3), 1, 1, ("direct", "im2col", "im2col")),
    # 3 input channels into 64 (VGG16's first layer): im2col for all three, as measured on a GPU
    "rgb_wide": ((1, 3, 9, 9), (64, 3, 3, 3), 1, 1, ("im2col", "im2col", "im2col")),
    # 40 output channels, patch 72: im2col for all three
    "wide": ((1, 8, 6, 6), (40, 8, 3, 3), 1, 1, ("im2col", "im2col", "im2col")),
    # 1024 x 1024 weights, a 1x1 kernel: im2col for all three
    "large_dw": ((1, 1024, 1, 1), (1024, 1024, 1, 1), 1, 0, ("im2col", "im2col", "im2col")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_extension_reports_the_rule(case):
    xs, ws, groups, pad, expected = CASES[case]
    picked = tuple(_C.conv2d_auto_algorithm("cuda", p, list(xs), list(ws), [1, 1], [pad, pad], [1, 1], groups)
                   for p in ("fwd", "bwd_input", "bwd_weight"))
    assert picked == expected
    # The CPU keeps its own rule: direct where a group has one input channel, and none of these
    # is wide enough for winograd (tests/test_conv2d_winograd.py), so im2col otherwise.
    cpu = _C.conv2d_auto_algorithm("cpu", "fwd", list(xs), list(ws), [1, 1], [pad, pad], [1, 1], groups)
    assert cpu == ("direct" if ws[1] == 1 else "im2col")
    with pytest.raises(ValueError, match="pass must be"):
        _C.conv2d_auto_algorithm("cuda", "backward", list(xs), list(ws), [1, 1], [pad, pad], [1, 1], groups)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("simt", "cuda")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_runs_the_rules_kernels_and_matches_torch(case, backend):
    xs, ws, groups, pad, expected = CASES[case]
    device = device_of(backend)
    x = torch.randn(xs, dtype=torch.float64, device=device, requires_grad=True)
    w = (torch.randn(ws, dtype=torch.float64, device=device) / ws[1] ** 0.5).requires_grad_()
    ops = torch.ops.fastconv
    y_ref = F.conv2d(x, w, groups=groups, padding=pad)
    dy = torch.randn_like(y_ref)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, w), dy)
    geo = ([1, 1], [pad] * 4, [1, 1], groups)
    runs = {
        "fwd": lambda: ops.conv2d(x.detach(), w.detach(), None, *geo, "auto", backend),
        "bwd_input": lambda: ops.conv2d_backward_input(dy, w.detach(), list(xs), *geo, "auto", backend),
        "bwd_weight": lambda: ops.conv2d_backward_weight(dy, x.detach(), list(ws), *geo, "auto", backend),
    }
    for (pass_, run), algorithm, reference in zip(runs.items(), expected, (y_ref, dx_ref, dw_ref)):
        kernel = (DIRECT if algorithm == "direct" else IM2COL)[pass_]
        checks = expect_kernels(kernel) if backend == "simt" else torch.no_grad()
        with checks:
            got = run()
        torch.testing.assert_close(got, reference.detach(), rtol=1e-9, atol=1e-9)


def test_layers_train_with_auto_on_simt():
    """fnn.Conv2d with the default algorithm through autograd: each pass decides for itself."""
    conv = fastconv.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with fastconv.backend("simt"), expect_kernels(DIRECT["fwd"], IM2COL["bwd_input"], IM2COL["bwd_weight"]):
        y = conv(x)
        y.square().sum().backward()
    ref = torch.nn.Conv2d(3, 8, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    ref(x_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)


def test_tensor_cores_move_the_crossovers():
    """With the im2col GEMMs on tensor cores (TF32, half, bfloat16), gathering their columns,
    narrow forwards (32 output channels, or 8 a group) take im2col, and depthwise weight gradients
    im2col too; depthwise forwards and input gradients stay direct."""
    def rule(p, xs, ws, tc, groups=1):
        return _C.conv2d_auto_algorithm("cuda", p, list(xs), list(ws), [1, 1], [1, 1], [1, 1], groups, tc)

    assert rule("fwd", (1, 32, 75, 75), (32, 32, 3, 3), False) == "direct"
    assert rule("fwd", (1, 32, 75, 75), (32, 32, 3, 3), True) == "im2col"
    assert rule("fwd", (32, 64, 36, 36), (64, 8, 3, 3), False, groups=8) == "direct"
    assert rule("fwd", (32, 64, 36, 36), (64, 8, 3, 3), True, groups=8) == "im2col"
    for tc in (False, True):
        assert rule("fwd", (32, 32, 74, 74), (32, 1, 3, 3), tc, groups=32) == "direct"
        assert rule("bwd_input", (32, 32, 74, 74), (32, 1, 3, 3), tc, groups=32) == "direct"
        assert rule("bwd_weight", (32, 32, 74, 74), (32, 1, 3, 3), tc, groups=32) == ("im2col" if tc else "direct")


def test_simt_tf32_runs_the_tensor_core_rule():
    """float32 on SIMT with TF32 allowed: the GEMM goes to tensor cores and auto follows suit."""
    x, w = torch.randn(1, 32, 6, 6), torch.randn(32, 32, 3, 3) / 17
    with expect_kernels(DIRECT["fwd"]):
        full = torch.ops.fastconv.conv2d(x, w, None, [1, 1], [1] * 4, [1, 1], 1, "auto", "simt")
    with expect_kernels("gemm_tensor_core_kernel<float"):
        tf32 = torch.ops.fastconv.conv2d(x, w, None, [1, 1], [1] * 4, [1, 1], 1, "auto", "simt:tf32")
    reference = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(full, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tf32, reference, rtol=1e-2, atol=1e-2)
