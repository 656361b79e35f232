"""fastconv max pooling against torch.nn.functional.max_pool2d: values, indices and
gradients on every backend, torch's edge cases (ties, NaN, -inf, ceil_mode,
padding, dilation) and torch's argument errors."""

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

from conftest import device_of, kernels_on

ops = torch.ops.fastconv


def _empty_windows(x, geometry):
    """Outputs whose window holds no input tap (padding and dilation can make one):
    pooling zeros gives -inf exactly there."""
    return F.max_pool2d(torch.zeros_like(x), *geometry) == float("-inf")


def _reference_grad(x, indices, grad, geometry):
    """torch's gradient, except that windows with no input tap pass nothing (torch's CPU
    kernel would write their gradient at a position outside the window, even outside the
    plane): a scatter-add at the indices."""
    grad = grad.masked_fill(_empty_windows(x, geometry), 0)
    plane = x.shape[-2] * x.shape[-1]
    flat = torch.zeros(*x.shape[:-2], plane, dtype=x.dtype, device=x.device)
    flat.scatter_add_(-1, indices.clamp(max=plane - 1).flatten(-2), grad.flatten(-2))
    return flat.view_as(x)


def check_against_torch(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output, indices and input gradient of fastconv against torch, exactly."""
    geometry = (kernel_size, stride, padding, dilation, ceil_mode)
    x = x.detach().requires_grad_()
    backend = fastconv.current_backend() if x.numel() else "cpu"  # an empty batch launches nothing
    with kernels_on(backend, "max_pool2d"):
        y, idx = FF.max_pool2d(x, *geometry, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x.detach(), *geometry, return_indices=True)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0, equal_nan=True)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, idx_ref)
    grad = torch.randn_like(y)
    with kernels_on(backend, "max_pool2d_backward_kernel"):
        (grad_input,) = torch.autograd.grad(y, x, grad)
    if _empty_windows(x.detach(), geometry).any():
        expected = _reference_grad(x.detach(), idx_ref, grad, geometry)
        torch.testing.assert_close(grad_input, expected)
    else:
        x_ref = x.detach().clone().requires_grad_()
        F.max_pool2d(x_ref, *geometry).backward(grad)
        # Same summation order as torch's CPU scatter, so equal to the last bit.
        torch.testing.assert_close(grad_input, x_ref.grad, rtol=0, atol=0)
    # Without indices the cpu backend saves one-byte taps (max_pool2d_with_taps): the same
    # output and gradient.
    y_taps = FF.max_pool2d(x, *geometry)
    torch.testing.assert_close(y_taps, y_ref, rtol=0, atol=0, equal_nan=True)
    (grad_from_taps,) = torch.autograd.grad(y_taps, x, grad)
    torch.testing.assert_close(grad_from_taps, grad_input, rtol=0, atol=0)


def _random_geometry(rng):
    """A valid (by torch's rules) pooling geometry and input size from the seeded grid."""
    while True:
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        if rng.random() < 0.4:
            kernel = (kernel[0], kernel[0])
        stride = rng.choice([None, 1, 2, 3, (rng.randint(1, 3), rng.randint(1, 3))])
        padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
        dilation = rng.choice([1, 1, 2, (rng.randint(1, 3), rng.randint(1, 3))])
        ceil_mode = rng.random() < 0.5
        size = (rng.randint(1, 30), rng.randint(1, 30))
        try:
            F.max_pool2d(torch.zeros(1, 1, *size), kernel, stride, padding, dilation, ceil_mode)
        except RuntimeError:
            continue  # output too small for this input: drawn again
        return size, (kernel, stride, padding, dilation, ceil_mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeded_grid_matches_torch(backend, dtype):
    rng = random.Random(1234)
    cases = 120 if backend == "cpu" else 25  # the SIMT runtime runs fibers: keep it small
    for _ in range(cases):
        size, geometry = _random_geometry(rng)
        x = torch.randn(2, 3, *size, dtype=dtype, device=device_of(backend))
        if rng.random() < 0.3:
            x = x.round()  # many ties
        check_against_torch(x, *geometry)


@pytest.mark.parametrize("height,width", [(148, 148), (34, 34), (15, 15), (8, 6), (7, 9), (2, 2), (3, 5), (35, 33)])
def test_2x2_stride2_fast_paths(backend, height, width):
    # W % 4 == 0, W % 2 == 0 and odd W take different vector paths in the CUDA kernels.
    x = torch.randn(2, 3, height, width, device=device_of(backend))
    check_against_torch(x, 2)
    check_against_torch(x, 2, ceil_mode=True)


def test_2x2_unaligned_input_takes_scalar_path(backend):
    base = torch.randn(2 * 3 * 8 * 8 + 1, device=device_of(backend))
    x = base[1:].view(2, 3, 8, 8)  # 4 bytes off a 16-byte boundary
    check_against_torch(x, 2)


def test_ties_pick_first_maximum(backend):
    device = device_of(backend)
    check_against_torch(torch.ones(1, 2, 7, 7, device=device), 3, 1, 1)
    check_against_torch(torch.randint(0, 3, (2, 2, 9, 11), device=device).float(), (3, 2), 1, 1, 2)
    check_against_torch(torch.zeros(1, 1, 6, 6, device=device), 2)


def test_nan_wins_its_window(backend):
    device = device_of(backend)
    x = torch.randn(2, 2, 10, 10, device=device)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 4:6, 4:6] = float("nan")  # several NaNs in one window: torch keeps the last scanned
    x[1, 0, 3, :] = float("nan")
    for geometry in [(2,), (3, 1, 1), (3, 2, 1, 2, True)]:
        y, idx = FF.max_pool2d(x, *geometry, return_indices=True)
        assert y.isnan().any()
        check_against_torch(x, *geometry)


def test_negative_infinity_input(backend):
    device = device_of(backend)
    check_against_torch(torch.full((1, 2, 5, 5), float("-inf"), device=device), 2, 1, 1)
    x = torch.randn(1, 1, 6, 6, device=device)
    x[..., :3, :] = float("-inf")
    check_against_torch(x, 3, 2, 1, ceil_mode=True)


def test_window_without_input_taps(backend):
    # Dilation 2 with padding 1 on one row: the only window's taps are rows -1 and 1.
    x = torch.randn(1, 2, 1, 6, device=device_of(backend))
    y, idx = FF.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert (y == float("-inf")).all()
    check_against_torch(x, (2, 1), 1, (1, 0), (2, 1))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pad_fraction=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    ceil_mode=st.booleans(),
    backend_name=st.sampled_from(["cpu", "cpu", "cpu", "simt"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_torch(n, c, h, w, kernel, stride, dilation, pad_fraction, ceil_mode, backend_name, seed):
    padding = tuple(int(f * (k // 2)) for f, k in zip(pad_fraction, kernel))
    geometry = (kernel, stride, padding, dilation, ceil_mode)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    try:
        F.max_pool2d(x, *geometry)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            FF.max_pool2d(x, *geometry)
        return
    with fastconv.backend(backend_name):
        check_against_torch(x, *geometry)


def test_any_strides(backend):
    base = torch.randn(2, 6, 10, 12, device=device_of(backend))
    for x in (
        base.transpose(2, 3),
        base[:, ::2, 1::2, ::3],
        base.to(memory_format=torch.channels_last),
        base.permute(1, 0, 2, 3),
    ):
        check_against_torch(x, 3, 2, 1)
        check_against_torch(x, 2)


def test_gradient_of_any_strides(backend):
    x = torch.randn(2, 4, 8, 8, device=device_of(backend)).to(memory_format=torch.channels_last)
    x.requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(4, 2, 4, 4, device=x.device).transpose(0, 1)  # non-contiguous grad_output
    FF.max_pool2d(x, 2).backward(grad)
    F.max_pool2d(x_ref, 2).backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_unbatched_input(backend):
    x = torch.randn(3, 9, 7, device=device_of(backend), requires_grad=True)
    y, idx = FF.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x.detach(), 3, 2, 1, return_indices=True)
    assert y.shape == y_ref.shape == (3, 5, 4)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    assert torch.equal(idx, idx_ref)
    check_against_torch(x, 3, 2, 1)


@pytest.mark.launches_no_kernel
def test_zero_batch(backend):
    x = torch.randn(0, 3, 8, 8, device=device_of(backend), requires_grad=True)
    y, idx = FF.max_pool2d(x, 2, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_gradcheck(backend_name):
    # Distinct values keep every window's maximum away from a tie.
    x = torch.randperm(2 * 2 * 7 * 6, dtype=torch.float64).view(2, 2, 7, 6).div(10).requires_grad_()
    with fastconv.backend(backend_name):
        for geometry in [(2,), (3, 1, 1), ((3, 2), (2, 1), (1, 0), (1, 2), True)]:
            fn = lambda t, g=geometry: FF.max_pool2d(t, *g)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x,))
            assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("shape, geometry", [
    ((2, 3, 7, 6), ((3, 2), (2, 1), (1, 0), (1, 2), True)),  # padding, dilation, ceil_mode; every window has taps
    ((2, 3, 5, 1), ((1, 2), 1, (0, 1), (1, 2), False)),  # no window has a tap, yet most indices lie in the plane
])
@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_double_backward_matches_torch(backend_name, shape, geometry):
    """The gradient of the input gradient with respect to grad_output: the incoming gradient
    gathered at the indices, and nothing for windows without an input tap, whose gradient the
    backward dropped (their stored index points at some other input)."""
    x = torch.randperm(torch.Size(shape).numel(), dtype=torch.float64).view(shape).requires_grad_()
    with fastconv.backend(backend_name):
        y, idx = FF.max_pool2d(x, *geometry, return_indices=True)
        grad = torch.randn_like(y, requires_grad=True)
        (grad_input,) = torch.autograd.grad(y, x, grad, create_graph=True)
        incoming = torch.randn_like(grad_input)
        (ours,) = torch.autograd.grad(grad_input, grad, incoming)
    grad_ref = grad.detach().requires_grad_()
    _, idx_ref = F.max_pool2d(x.detach(), *geometry, return_indices=True)
    (expected,) = torch.autograd.grad(_reference_grad(x.detach(), idx_ref, grad_ref, geometry), grad_ref, incoming)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_opcheck(backend_name):
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    geometry = ([3, 2], [2, 1], [1, 1], [1, 2], True)
    torch.library.opcheck(ops.max_pool2d.default, (x, *geometry, backend_name))
    y, idx = ops.max_pool2d(x.detach(), *geometry, backend_name)
    grad = torch.randn_like(y, requires_grad=True)
    torch.library.opcheck(ops.max_pool2d_backward.default, (grad, idx, list(x.shape), *geometry, backend_name))


def test_compile_fullgraph():
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    compiled = torch.compile(lambda t: FF.max_pool2d(t, 3, 2, 1, ceil_mode=True), fullgraph=True, backend="eager")
    y = compiled(x)
    y.sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    F.max_pool2d(x_ref, 3, 2, 1, ceil_mode=True).sum().backward()
    torch.testing.assert_close(y, F.max_pool2d(x_ref.detach(), 3, 2, 1, ceil_mode=True))
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_indices_are_not_differentiable():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    y, idx = FF.max_pool2d(x, 2, return_indices=True)
    assert y.requires_grad and not idx.requires_grad


def test_module_is_a_torch_max_pool():
    m = fnn.MaxPool2d(3, stride=2, padding=1, dilation=1, return_indices=True, ceil_mode=True)
    twin = torch.nn.MaxPool2d(3, stride=2, padding=1, dilation=1, return_indices=True, ceil_mode=True)
    assert isinstance(m, torch.nn.MaxPool2d)
    assert repr(m) == repr(twin)
    assert m.state_dict().keys() == twin.state_dict().keys()
    x = torch.randn(2, 3, 11, 10)
    (y, idx), (y_ref, idx_ref) = m(x), twin(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    assert torch.equal(idx, idx_ref)
    plain = fnn.MaxPool2d(2)
    assert plain.stride == 2
    torch.testing.assert_close(plain(x), torch.nn.MaxPool2d(2)(x), rtol=0, atol=0)
    torch.testing.assert_close(plain(x[0]), torch.nn.MaxPool2d(2)(x[0]), rtol=0, atol=0)


def test_stride_defaults_to_kernel():
    x = torch.randn(1, 2, 9, 9)
    for stride in (None, (), []):
        torch.testing.assert_close(FF.max_pool2d(x, (3, 2), stride), F.max_pool2d(x, (3, 2)), rtol=0, atol=0)
    torch.testing.assert_close(FF.max_pool2d(x, [2]), F.max_pool2d(x, [2]), rtol=0, atol=0)


BAD_ARGUMENTS = {
    "kernel zero": dict(kernel_size=0),
    "kernel zero on one side": dict(kernel_size=(0, 2), stride=1),
    "kernel negative": dict(kernel_size=-1),
    "stride zero": dict(kernel_size=2, stride=0),
    "stride negative": dict(kernel_size=2, stride=(1, -1)),
    "dilation zero": dict(kernel_size=2, dilation=0),
    "dilation negative": dict(kernel_size=2, dilation=-1),
    "padding negative": dict(kernel_size=2, padding=-1),
    "padding over half the kernel": dict(kernel_size=2, padding=2),
    "padding over half the kernel even when dilated": dict(kernel_size=3, padding=2, dilation=3),
    "output too small": dict(kernel_size=6),
    "output too small when dilated": dict(kernel_size=3, dilation=3),
    "three kernel values": dict(kernel_size=(2, 2, 2)),
    "three strides": dict(kernel_size=2, stride=(1, 1, 1)),
    "three paddings": dict(kernel_size=2, padding=(0, 0, 0)),
    "three dilations": dict(kernel_size=2, dilation=(1, 1, 1)),
    "empty kernel": dict(kernel_size=()),
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_like_torch(name):
    kwargs = BAD_ARGUMENTS[name]
    x = torch.randn(1, 1, 5, 5)
    with pytest.raises(Exception) as expected:
        F.max_pool2d(x, **kwargs)
    with pytest.raises(expected.type, match="max_pool2d"):
        FF.max_pool2d(x, **kwargs)


@pytest.mark.parametrize("shape", [(5, 5), (1, 1, 1, 5, 5), (5,), (1, 0, 4, 4), (2, 3, 0, 4), (0, 4, 4)])
def test_bad_input_shapes_raise_like_torch(shape):
    x = torch.randn(shape)
    with pytest.raises(Exception) as expected:
        F.max_pool2d(x, 2)
    with pytest.raises(expected.type, match="max_pool2d"):
        FF.max_pool2d(x, 2)


def test_bad_types():
    with pytest.raises(TypeError):
        FF.max_pool2d(torch.randn(1, 1, 4, 4), 2.0)
    with pytest.raises(TypeError, match="dtype"):
        FF.max_pool2d(torch.arange(16).view(1, 1, 4, 4), 2)
    with pytest.raises(TypeError, match="dtype"):
        FF.max_pool2d(torch.randn(1, 1, 4, 4, dtype=torch.float16), 2)
    with pytest.raises(ValueError, match="unknown backend"):
        ops.max_pool2d(torch.randn(1, 1, 4, 4), [2], [], [0], [1], False, "tpu")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        ops.max_pool2d(torch.randn(1, 1, 4, 4), [2], [], [0], [1], False, "cuda")
    with pytest.raises(RuntimeError, match="4-D"):
        ops.max_pool2d(torch.randn(1, 4, 4), [2], [], [0], [1], False)


def test_backward_op_checks_its_arguments():
    y, idx = ops.max_pool2d(torch.randn(1, 2, 4, 4), [2], [], [0], [1], False)
    geometry = ([2], [], [0], [1], False)
    with pytest.raises(RuntimeError, match="shape"):
        ops.max_pool2d_backward(y, idx, [1, 2, 6, 6], *geometry)
    with pytest.raises(RuntimeError, match="shape"):
        ops.max_pool2d_backward(y, idx[:, :1], [1, 2, 4, 4], *geometry)
    with pytest.raises(RuntimeError, match="int64"):
        ops.max_pool2d_backward(y, idx.int(), [1, 2, 4, 4], *geometry)
    with pytest.raises(RuntimeError, match="4-D"):
        ops.max_pool2d_backward(y, idx, [2, 4, 4], *geometry)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("geometry", [(2,), (3, 2, 1), ((2, 3), 1, (1, 0), 2, True)])
def test_cuda_dtypes(dtype, geometry):
    x = torch.randn(2, 3, 36, 34, device="cuda", dtype=dtype)
    x[0, 0, :4, :4] = 1.0  # ties
    x[1, 1, 5, 5] = float("nan")
    check_against_torch(x, *geometry)


def test_channels_last_layout_follows_torch(backend):
    x = torch.randn(2, 3, 8, 6, device=device_of(backend)).to(memory_format=torch.channels_last)
    ours, ours_idx = FF.max_pool2d(x, 2, return_indices=True)
    theirs, theirs_idx = F.max_pool2d(x, 2, return_indices=True)
    assert ours.stride() == theirs.stride() and ours_idx.stride() == theirs_idx.stride()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert torch.equal(ours_idx, theirs_idx)
