"""float16 and bfloat16 on the CUDA kernels: on the SIMT runtime here, and on a GPU where there is one.

Every op runs forward and backward in the narrow dtype and is compared with torch computing in
float32 on the same (exactly representable) values. The kernels accumulate in float32 and
round once when they store, as the CUDA build does, so elementwise ops and pooling must match
torch's float32 result rounded to the dtype exactly, and convolutions within a few units of the
dtype's last place.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from conftest import device_of, relu_reference

HALF_DTYPES = [torch.float16, torch.bfloat16]
HALF_BACKENDS = [b for b in fastconv.available_backends() if b in ("simt", "cuda")]
# Relative to the largest magnitude of the float32 reference: float16 keeps 11 significant bits,
# bfloat16 8, and a convolution rounds its inputs once and its output once.
CONV_TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture(params=HALF_BACKENDS)
def half_backend(request):
    with fastconv.backend(request.param):
        yield request.param


def _narrow(shape, dtype, backend, requires_grad=True):
    """Random values in `dtype` (so the float32 reference sees exactly the same numbers)."""
    t = torch.randn(shape, device=device_of(backend)).to(dtype)
    return t.requires_grad_(requires_grad)


def _wide(*tensors):
    return [t.detach().float().requires_grad_() for t in tensors]


def _assert_scaled_close(ours, expected, dtype):
    scale = expected.abs().max().item() + 1e-6
    torch.testing.assert_close(ours.float() / scale, expected / scale, rtol=0, atol=CONV_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_relu_forward_and_backward_are_exact(half_backend, dtype):
    x = _narrow((3, 5, 7), dtype, half_backend)
    x.data[0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")], dtype=dtype)
    y = FF.relu(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, F.relu(x.detach()), rtol=0, atol=0, equal_nan=True)
    numbers = ~torch.isnan(y)  # a NaN's sign bit means nothing (torch's varies)
    expected = relu_reference(x.detach(), half_backend)  # -0.0 -> +0.0, as torch's GPU ReLU
    assert torch.equal(torch.signbit(y)[numbers], torch.signbit(expected)[numbers])
    g = _narrow(y.shape, dtype, half_backend, requires_grad=False)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, torch.where(y <= 0, torch.zeros_like(g), g), rtol=0, atol=0)  # NaN passes g


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_dropout_mask_matches_float32_and_scales_exactly(half_backend, dtype):
    x = _narrow((4, 257), dtype, half_backend)  # an odd tail: the kernels' scalar path
    torch.manual_seed(7)
    y = FF.dropout(x, 0.5)
    torch.manual_seed(7)
    reference = FF.dropout(x.detach().float(), 0.5)  # same seed, same mask; x * 2 is exact
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), reference, rtol=0, atol=0)
    g = _narrow(y.shape, dtype, half_backend, requires_grad=False)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx.float(), g.float() * (reference != 0) * 2, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool2d_matches_torch(half_backend, dtype, kernel, stride, padding):
    x = _narrow((2, 3, 12, 10), dtype, half_backend)
    y, idx = FF.max_pool2d(x, kernel, stride, padding, return_indices=True)
    (wide,) = _wide(x)
    expected, expected_idx = F.max_pool2d(wide, kernel, stride, padding, return_indices=True)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), expected, rtol=0, atol=0)
    torch.testing.assert_close(idx, expected_idx)
    g = _narrow(y.shape, dtype, half_backend, requires_grad=False)
    (gx,) = torch.autograd.grad(y, x, g)
    (ex,) = torch.autograd.grad(expected, wide, g.float())
    # Overlapping windows add several gradients in float32 and round once.
    torch.testing.assert_close(gx, ex.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("shape", [
    dict(n=2, cin=8, cout=16, size=12, k=3, stride=1, padding=1, groups=1),
    dict(n=1, cin=6, cout=4, size=9, k=5, stride=2, padding=3, groups=2),
    dict(n=3, cin=4, cout=4, size=7, k=3, stride=1, padding=0, groups=4),
], ids=["3x3", "5x5-stride2-groups2", "depthwise"])
def test_conv2d_forward_and_gradients(half_backend, dtype, algorithm, fused, shape):
    s = shape
    x = _narrow((s["n"], s["cin"], s["size"], s["size"]), dtype, half_backend)
    w = _narrow((s["cout"], s["cin"] // s["groups"], s["k"], s["k"]), dtype, half_backend)
    b = _narrow((s["cout"],), dtype, half_backend)
    conv = FF.conv2d_relu if fused else FF.conv2d
    y = conv(x, w, b, stride=s["stride"], padding=s["padding"], groups=s["groups"], algorithm=algorithm)
    wide = _wide(x, w, b)
    expected = F.conv2d(*wide, stride=s["stride"], padding=s["padding"], groups=s["groups"])
    expected = expected.relu() if fused else expected
    assert y.dtype == dtype
    _assert_scaled_close(y, expected, dtype)
    g = _narrow(y.shape, dtype, half_backend, requires_grad=False)
    if fused:  # the same ReLU mask on both sides, so the gradients compare like for like
        g = g * (y > 0) * (expected > 0)
    for ours, theirs in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(expected, wide, g.float())):
        assert ours.dtype == dtype
        _assert_scaled_close(ours, theirs, dtype)


def test_cpu_backend_still_refuses_half_with_a_clear_message():
    with fastconv.backend("cpu"), pytest.raises(TypeError, match="float16 and bfloat16 run on the 'cuda' and 'simt'"):
        FF.relu(torch.randn(3, dtype=torch.float16))


def test_autocast_rule_follows_the_region_dtype():
    # fastconv registers this rule for its convolutions on CUDA; the same rule on a scratch CPU op
    # shows that each autocast region's own dtype is used (float16 or bfloat16), not a fixed one.
    from fastconv._ops import register_autocast_to_requested_dtype

    lib = torch.library.Library("fastconv_autocast_probe", "DEF")
    lib.define("probe(Tensor x, Tensor? y, int k) -> Tensor")
    lib.impl("probe", lambda x, y, k: x + (0 if y is None else y), "CPU")
    register_autocast_to_requested_dtype("fastconv_autocast_probe::probe", "cpu", lib)
    probe = torch.ops.fastconv_autocast_probe.probe
    x = torch.randn(3)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            assert probe(x, x, 1).dtype == dtype
            assert probe(x, None, 1).dtype == dtype
            assert probe(x.double(), None, 1).dtype == torch.float64  # as torch: float64 is not cast
    assert probe(x, x, 1).dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_autocast_runs_conv_in_the_requested_dtype_on_cuda(dtype):
    x = torch.randn(2, 3, 9, 9, device="cuda")
    w = torch.randn(4, 3, 3, 3, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y = FF.conv2d(x, w)
        expected = F.conv2d(x, w)
    assert y.dtype == dtype == expected.dtype
    _assert_scaled_close(y, expected.float(), dtype)
