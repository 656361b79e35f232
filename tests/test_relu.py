"""fastconv ReLU against torch.nn.functional.relu, forward and backward, on every backend."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

from conftest import device_of, kernels_on, with_empty_marked

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4, 5), (1, 1, 1, 1), (0, 3, 4, 4), (1000,), (4, 33, 17)]


def _sample(shape, dtype, device):
    x = torch.randn(shape, dtype=dtype, device=device)
    if x.numel() >= 4:  # the corner cases torch defines: exact zeros, -0.0, NaN, inf
        flat = x.view(-1)
        flat[:4] = torch.tensor([0.0, -0.0, float("nan"), float("-inf")], dtype=dtype)
    return x


@pytest.mark.parametrize("shape", with_empty_marked(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_match_torch(backend, shape, dtype):
    x = _sample(shape, dtype, device_of(backend)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    each_pass_runs = kernels_on if x.numel() else (lambda *_: contextlib.nullcontext())
    with each_pass_runs(backend, "ReluForwardOp"):
        y = FF.relu(x)
    y_ref = F.relu(x_ref)
    torch.testing.assert_close(y, y_ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(torch.signbit(y), torch.signbit(y_ref))  # -0.0 passes through
    grad = torch.randn_like(y)
    with each_pass_runs(backend, "ReluBackwardOp"):
        y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, equal_nan=True, rtol=0, atol=0)


def test_non_contiguous_and_channels_last(backend):
    device = device_of(backend)
    base = torch.randn(4, 6, 8, 10, device=device)
    for x in (base.transpose(1, 3), base[:, ::2, 1::3], base.to(memory_format=torch.channels_last)):
        x = x.detach().requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = FF.relu(x), F.relu(x_ref)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        g = torch.randn_like(y_ref).transpose(0, 1).contiguous().transpose(0, 1)  # odd grad strides
        y.backward(g)
        y_ref.backward(g)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_unaligned_pointer_takes_scalar_path(backend):
    # A view starting one element in is not 16-byte aligned: the vector path must not be used.
    base = torch.randn(1001, device=device_of(backend))
    x = base[1:]
    torch.testing.assert_close(FF.relu(x), F.relu(x), rtol=0, atol=0)


def test_inplace(backend):
    device = device_of(backend)
    x = torch.randn(5, 7, device=device)
    expected = F.relu(x)
    out = FF.relu(x, inplace=True)
    assert out is x
    torch.testing.assert_close(x, expected, rtol=0, atol=0)

    strided = torch.randn(6, 8, device=device)[:, ::2]  # not dense: computed aside, written back
    expected = F.relu(strided)
    FF.relu(strided, inplace=True)
    torch.testing.assert_close(strided, expected, rtol=0, atol=0)


def test_inplace_autograd_matches_torch(backend):
    device = device_of(backend)
    a = torch.randn(3, 9, device=device, requires_grad=True)
    a_ref = a.detach().clone().requires_grad_()
    FF.relu(a * 2, inplace=True).sum().backward()
    F.relu(a_ref * 2, inplace=True).sum().backward()
    torch.testing.assert_close(a.grad, a_ref.grad)

    leaf = torch.randn(3, requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        FF.relu(leaf, inplace=True)


def test_module_is_a_torch_relu():
    m = fnn.ReLU(inplace=True)
    assert isinstance(m, torch.nn.ReLU)
    assert repr(m) == repr(torch.nn.ReLU(inplace=True))
    x = torch.randn(10)
    torch.testing.assert_close(fnn.ReLU()(x), torch.nn.ReLU()(x))


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_gradcheck(backend_name):
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x).requires_grad_()  # away from the kink
    with fastconv.backend(backend_name):
        assert torch.autograd.gradcheck(FF.relu, (x,))
        assert torch.autograd.gradgradcheck(FF.relu, (x,))


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_opcheck(backend_name):
    x = torch.randn(4, 5, requires_grad=True)
    g = torch.randn(4, 5)
    torch.library.opcheck(torch.ops.fastconv.relu.default, (x, backend_name))
    torch.library.opcheck(torch.ops.fastconv.relu_.default, (x.detach().clone(), backend_name))
    torch.library.opcheck(torch.ops.fastconv.relu_backward.default, (g, F.relu(x).detach(), backend_name))


def test_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        FF.relu(torch.arange(5))
    with pytest.raises(ValueError, match="unknown backend"):
        torch.ops.fastconv.relu(torch.randn(3), "tpu")
    with pytest.raises(RuntimeError, match="same device|shape"):
        torch.ops.fastconv.relu_backward(torch.randn(3), torch.randn(4))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.fastconv.relu_backward(torch.randn(3, dtype=torch.float64), torch.randn(3))
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        torch.ops.fastconv.relu(torch.randn(3), "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(dtype):
    x = torch.randn(1027, device="cuda", dtype=dtype, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    FF.relu(x).sum().backward()
    F.relu(x_ref).sum().backward()
    torch.testing.assert_close(FF.relu(x), F.relu(x_ref))
    torch.testing.assert_close(x.grad, x_ref.grad)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
       offset=st.integers(0, 3), backend_name=st.sampled_from(["cpu", "simt"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_fuzz_shapes_and_offsets(shape, offset, backend_name, dtype):
    n = 1
    for s in shape:
        n *= s
    storage = torch.randn(n + offset, dtype=dtype)
    x = storage[offset:].view(shape)  # misaligned starts exercise the scalar tail path
    with fastconv.backend(backend_name):
        torch.testing.assert_close(FF.relu(x), F.relu(x), rtol=0, atol=0)


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_inplace_write_is_seen_by_autograd(backend_name):
    # A tensor saved for backward and then overwritten in place must make backward fail, as in torch.
    w = torch.ones(4, requires_grad=True)
    y = torch.tensor([-1.0, 2.0, -3.0, 4.0])
    z = (w * y).sum()
    version = y._version
    with fastconv.backend(backend_name):
        FF.relu(y, inplace=True)
    assert y._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()
