"""max_pool2d_with_taps / max_pool2d_backward_from_taps: what training on the cpu backend saves
instead of int64 indices (one byte per output, the maximum's position within its window).
Values and gradients against torch; the taps against torch's indices; what autograd saves; the
ops' checks; taps that name no input."""

import random

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from test_max_pool2d import _empty_windows, _random_geometry, _reference_grad

ops = torch.ops.fastconv
NO_TAP = 255


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _op_geometry(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """The ops' argument lists for a torch.nn.functional geometry."""
    kernel = _pair(kernel_size)
    return (list(kernel), list(_pair(stride)) if stride is not None else list(kernel), list(_pair(padding)),
            list(_pair(dilation)), ceil_mode)


def _taps_from_torch(x, geometry):
    """Each output's tap (kh * kernel_w + kw) from torch's index, NO_TAP for a window without
    an input tap."""
    kernel, stride, padding, dilation, _ = _op_geometry(*geometry)
    _, idx = F.max_pool2d(x, *geometry, return_indices=True)
    oh = torch.arange(idx.shape[-2]).view(-1, 1)
    ow = torch.arange(idx.shape[-1])
    kh = (idx // x.shape[-1] - (oh * stride[0] - padding[0])) // dilation[0]
    kw = (idx % x.shape[-1] - (ow * stride[1] - padding[1])) // dilation[1]
    taps = kh * kernel[1] + kw
    return taps.masked_fill(_empty_windows(x, geometry), NO_TAP).to(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_taps_name_torchs_maxima(dtype):
    rng = random.Random(99)
    for _ in range(150):
        size, geometry = _random_geometry(rng)
        x = torch.randn(2, 3, *size, dtype=dtype)
        if rng.random() < 0.3:
            x = x.round()  # ties: the first maximum in scan order
        if rng.random() < 0.2:
            x.view(-1)[rng.randrange(x.numel())] = float("nan")
        y, taps = ops.max_pool2d_with_taps(x, *_op_geometry(*geometry))
        torch.testing.assert_close(y, F.max_pool2d(x, *geometry), rtol=0, atol=0, equal_nan=True)
        assert taps.dtype == torch.uint8
        assert torch.equal(taps, _taps_from_torch(x, geometry)), geometry


@pytest.mark.parametrize("height,width", [(148, 148), (34, 34), (15, 15), (7, 9), (2, 2), (35, 33), (4, 70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_2x2_kernels(height, width, dtype):
    """The seed CNNs' pooling: short rows, long rows, odd edges, ceil mode."""
    x = torch.randn(2, 3, height, width, dtype=dtype)
    x[0, 0, :2, :2] = 1.0  # a tie
    x[1, 2, 1, 1] = float("nan")
    for ceil_mode in (False, True):
        geometry = (2, 2, 0, 1, ceil_mode)
        y, taps = ops.max_pool2d_with_taps(x, *_op_geometry(*geometry))
        torch.testing.assert_close(y, F.max_pool2d(x, *geometry), rtol=0, atol=0, equal_nan=True)
        assert torch.equal(taps, _taps_from_torch(x, geometry))
        grad = torch.randn_like(y)
        ours = ops.max_pool2d_backward_from_taps(grad, taps, list(x.shape), *_op_geometry(*geometry))
        x_ref = x.clone().requires_grad_()
        F.max_pool2d(x_ref, *geometry).backward(grad)
        torch.testing.assert_close(ours, x_ref.grad, rtol=0, atol=0)


def test_backward_matches_torch_on_the_seeded_grid():
    rng = random.Random(7)
    for _ in range(100):
        size, geometry = _random_geometry(rng)
        x = torch.randn(2, 2, *size, dtype=torch.float64)
        y, taps = ops.max_pool2d_with_taps(x, *_op_geometry(*geometry))
        grad = torch.randn_like(y)
        ours = ops.max_pool2d_backward_from_taps(grad, taps, list(x.shape), *_op_geometry(*geometry))
        _, idx = F.max_pool2d(x, *geometry, return_indices=True)
        torch.testing.assert_close(ours, _reference_grad(x, idx, grad, geometry), rtol=0, atol=0)


def test_training_saves_one_byte_per_output():
    def saved_dtypes(fn, x):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
            fn(x)
        return saved

    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    assert saved_dtypes(lambda t: FF.max_pool2d(t, 2), x) == [torch.uint8]
    assert saved_dtypes(lambda t: FF.max_pool2d(t, 3, 1, 1, 2), x) == [torch.uint8]
    # Indices asked for, the simt backend, other dtypes and windows over 255 taps keep int64 indices.
    assert saved_dtypes(lambda t: FF.max_pool2d(t, 2, return_indices=True), x) == [torch.int64]
    with fastconv.backend("simt"):
        assert saved_dtypes(lambda t: FF.max_pool2d(t, 2), x) == [torch.int64]
    big = torch.randn(1, 1, 17, 17, requires_grad=True)
    assert saved_dtypes(lambda t: FF.max_pool2d(t, 16), big) == [torch.int64]
    assert saved_dtypes(lambda t: FF.max_pool2d(t, (15, 17)), big) == [torch.uint8]  # 255 taps


def test_layouts_and_unbatched_input():
    x = torch.randn(2, 3, 8, 6).to(memory_format=torch.channels_last).requires_grad_()
    y = FF.max_pool2d(x, 2)
    x_ref = x.detach().clone().requires_grad_()
    expected = F.max_pool2d(x_ref, 2)
    assert y.stride() == expected.stride()
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)
    assert x.grad.stride() == x_ref.grad.stride()
    strided = torch.randn(2, 3, 9, 16)[..., ::2]  # non-contiguous
    torch.testing.assert_close(FF.max_pool2d(strided, 3, 2, 1), F.max_pool2d(strided, 3, 2, 1), rtol=0, atol=0)
    unbatched = torch.randn(3, 9, 9)
    torch.testing.assert_close(FF.max_pool2d(unbatched, 2), F.max_pool2d(unbatched, 2), rtol=0, atol=0)
    empty = torch.randn(0, 3, 8, 8, requires_grad=True)
    FF.max_pool2d(empty, 2).sum().backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("geometry", [(2,), (3, 2, 1), ((3, 2), (2, 1), (1, 0), (1, 2), True)])
def test_gradcheck_and_double_backward(geometry):
    x = torch.randperm(2 * 2 * 7 * 6, dtype=torch.float64).view(2, 2, 7, 6).div(10).requires_grad_()
    fn = lambda t: FF.max_pool2d(t, *geometry)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_double_backward_skips_windows_without_taps():
    # (1, 2) windows at dilation 2 over a width of 1 with padding 1: no window holds an input.
    geometry = ((1, 2), 1, (0, 1), (1, 2), False)
    x = torch.randn(2, 3, 5, 1, dtype=torch.float64, requires_grad=True)
    y = FF.max_pool2d(x, *geometry)
    grad = torch.randn_like(y, requires_grad=True)
    (grad_input,) = torch.autograd.grad(y, x, grad, create_graph=True)
    assert torch.equal(grad_input, torch.zeros_like(x))
    (second,) = torch.autograd.grad(grad_input, grad, torch.randn_like(grad_input))
    assert torch.equal(second, torch.zeros_like(grad))


def test_opcheck():
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    for geometry in [([3, 2], [2, 1], [1, 1], [1, 2], True), ([2], [], [0], [1], False)]:
        torch.library.opcheck(ops.max_pool2d_with_taps.default, (x, *geometry, "cpu"))
        y, taps = ops.max_pool2d_with_taps(x.detach(), *geometry)
        grad = torch.randn_like(y, requires_grad=True)
        torch.library.opcheck(ops.max_pool2d_backward_from_taps.default, (grad, taps, list(x.shape), *geometry, "cpu"))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_compile_fullgraph(layout):
    """aot_eager runs AOTAutograd: the fake kernels and the backward graph, traced."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 10, 10).contiguous(memory_format=layout).requires_grad_()
    compiled = torch.compile(lambda t: FF.max_pool2d(t, 2), fullgraph=True, backend="aot_eager")
    y = compiled(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    x_ref = x.detach().clone().requires_grad_()
    F.max_pool2d(x_ref, 2).backward(grad)
    torch.testing.assert_close(y, F.max_pool2d(x_ref.detach(), 2), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_taps_that_name_no_input_pass_nothing():
    """Taps the forward would never write (past the window, into padding, NO_TAP) are ignored,
    never written through."""
    grad = torch.ones(1, 1, 3, 3)
    stray = torch.tensor([[4, 9, NO_TAP], [200, 0, 3], [NO_TAP, 1, 254]], dtype=torch.uint8).view(1, 1, 3, 3)
    g = ops.max_pool2d_backward_from_taps(grad, stray, [1, 1, 6, 6], [2], [], [0], [1], False)
    expected = torch.zeros(1, 1, 6, 6)
    expected[0, 0, 2, 2] = expected[0, 0, 3, 5] = expected[0, 0, 4, 3] = 1  # taps 0, 3 and 1 of their windows
    assert torch.equal(g, expected)
    # 3x3 windows with padding 1: tap 0 of the top-left window lies in the padding.
    grad = torch.ones(1, 1, 2, 2)
    taps = torch.tensor([[0, 4], [9, 8]], dtype=torch.uint8).view(1, 1, 2, 2)
    g = ops.max_pool2d_backward_from_taps(grad, taps, [1, 1, 4, 4], [3], [2], [1], [1], False)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0, 2] = expected[0, 0, 3, 3] = 1  # tap 4 of window (0, 1), tap 8 of window (1, 1)
    assert torch.equal(g, expected)


def test_ops_check_their_arguments():
    x = torch.randn(1, 2, 4, 4)
    geometry = ([2], [], [0], [1], False)
    y, taps = ops.max_pool2d_with_taps(x, *geometry)
    with pytest.raises(RuntimeError, match="only the 'cpu' backend stores max_pool2d taps"):
        ops.max_pool2d_with_taps(x, *geometry, "simt")
    with pytest.raises(RuntimeError, match="only the 'cpu' backend stores max_pool2d taps"):
        ops.max_pool2d_backward_from_taps(y, taps, [1, 2, 4, 4], *geometry, "simt")
    with pytest.raises(RuntimeError, match="up to 255 taps"):
        ops.max_pool2d_with_taps(torch.randn(1, 1, 16, 16), [16], [], [0], [1], False)
    with pytest.raises(RuntimeError, match="uint8"):
        ops.max_pool2d_backward_from_taps(y, taps.long(), [1, 2, 4, 4], *geometry)
    with pytest.raises(RuntimeError, match="uint8"):  # through the autograd kernel too
        ops.max_pool2d_backward_from_taps(y.requires_grad_(), taps.long(), [1, 2, 4, 4], *geometry)
    with pytest.raises(RuntimeError, match="shape"):
        ops.max_pool2d_backward_from_taps(y.detach(), taps[:, :1], [1, 2, 4, 4], *geometry)
    with pytest.raises(RuntimeError, match="shape"):
        ops.max_pool2d_backward_from_taps(y.detach(), taps, [1, 2, 6, 6], *geometry)
    with pytest.raises(RuntimeError, match="max_pool2d: expected a 4-D"):  # named as the op users call
        ops.max_pool2d_with_taps(torch.randn(2, 4, 4), *geometry)
    with pytest.raises(RuntimeError, match="up to 255 taps"):  # a window whose tap count overflows int64
        ops.max_pool2d_with_taps(torch.randn(1, 1, 3, 3), [2**32, 2**32], [1, 1], [2**31, 2**31], [1, 1], False)
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.max_pool2d_with_taps(x.half(), *geometry)


def test_backward_checks_its_arguments_when_recorded_too():
    """Autograd takes another route when it records (through the indices the taps name): the
    same checks must run there."""
    x = torch.randn(1, 2, 4, 4)
    geometry = ([2], [], [0], [1], False)
    y, taps = ops.max_pool2d_with_taps(x, *geometry)
    grad = torch.randn_like(y, requires_grad=True)
    for recorded in (grad.detach(), grad):
        with pytest.raises(RuntimeError, match="shape"):  # would broadcast in the index computation
            ops.max_pool2d_backward_from_taps(recorded, taps[..., :1, :1], [1, 2, 4, 4], *geometry)
        with pytest.raises(RuntimeError, match="only the 'cpu' backend stores max_pool2d taps"):
            ops.max_pool2d_backward_from_taps(recorded, taps, [1, 2, 4, 4], *geometry, "simt")
        with pytest.raises(RuntimeError, match="up to 255 taps"):
            ops.max_pool2d_backward_from_taps(recorded, taps.new_zeros(1, 2, 1, 1), [1, 2, 16, 16], [16], [], [0],
                                              [1], False)
