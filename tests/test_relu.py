"""fastconv ReLU against torch.nn.functional.relu, forward and backward, on every backend; and
the cpu backend's stored mask (relu_with_mask, relu_backward_from_mask) against torch's
threshold_backward."""

import contextlib
import re

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

from conftest import (BACKEND_DTYPES, device_of, relu_reference, gap_intact, in_place_layouts, kernels_on, layouts,
                      ops_called, recorded_view, unpack_keep_bits, with_empty_marked)

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4, 5), (1, 1, 1, 1), (0, 3, 4, 4), (1000,), (4, 33, 17)]


def _sample(shape, dtype, device):
    x = torch.randn(shape, dtype=dtype, device=device)
    flat = x.view(-1)
    # The corner cases torch defines (exact zeros, -0.0, NaN, inf) at the start and scattered
    # over the vector lanes and 64-element blocks of the CPU kernels.
    specials = torch.tensor([0.0, -0.0, float("nan"), float("-inf"), float("inf")], dtype=dtype, device=device)
    for start in (0, 17, 35, 50, 64 + 13, 64 + 61):
        count = min(len(specials), flat.numel() - start)
        if count > 0:
            flat[start:start + count] = specials[:count]
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
    # -0.0: torch's CPU ReLU passes it, its GPU ReLU and our CUDA kernels give +0.0.
    assert torch.equal(torch.signbit(y), torch.signbit(relu_reference(x.detach(), backend)))
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


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES, indirect=["backend"], ids=str)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (1, 3, 1, 4), (2, 3, 5, 7)], ids=str)
def test_inplace_on_every_layout_matches_torch(backend, dtype, shape):
    """Dense layouts are written in place, the others computed in a dense copy and written back,
    touching nothing else in their buffer."""
    for name, x in in_place_layouts(_sample(shape, dtype, device_of(backend))).items():
        expected = F.relu(x)
        assert FF.relu(x, inplace=True) is x
        torch.testing.assert_close(x, expected, equal_nan=True, rtol=0, atol=0, msg=name)
        assert gap_intact(x), name


# The larger shape, 540 KiB of float64, makes the cpu backend store its mask for the contiguous layout.
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5, 7), (4, 16, 32, 33)], ids=str)
def test_inplace_autograd_on_every_layout_matches_torch(backend, shape):
    values = _sample(shape, torch.float64, device_of(backend))
    for name, target in in_place_layouts(values).items():
        results = []
        for relu in (FF.relu, F.relu):
            leaf, product, view = recorded_view(target)
            relu(view, inplace=True)
            product.backward(torch.arange(product.numel(), dtype=product.dtype, device=product.device)
                             .view_as(product))
            results.append((view.detach(), leaf.grad))
        (ours, our_grad), (expected, expected_grad) = results
        torch.testing.assert_close(ours, expected, equal_nan=True, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(our_grad, expected_grad, equal_nan=True, rtol=0, atol=0, msg=name)


@pytest.mark.launches_no_kernel
def test_inplace_refuses_overlapping_memory_as_torch_does(backend):
    x = torch.randn(3, 1, device=device_of(backend)).expand(3, 4)
    before = x.clone()
    with pytest.raises(RuntimeError) as expected:
        F.relu(x, inplace=True)
    with pytest.raises(RuntimeError, match="^" + re.escape(str(expected.value).splitlines()[0])):
        FF.relu(x, inplace=True)
    assert torch.equal(x, before)


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


# ---------------------------------------------------------------- the stored mask (cpu backend)

OPS = torch.ops.fastconv


def _torch_backward(grad, x):
    return torch.ops.aten.threshold_backward(grad, F.relu(x), 0)


def _layouts(shape, dtype):
    return layouts(_sample(shape, dtype, "cpu"))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 1000, 4099])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stored_mask_is_where_torch_passes_the_gradient(n, dtype):
    x = _sample((n,), dtype, "cpu")
    y, mask = OPS.relu_with_mask(x, "cpu")
    torch.testing.assert_close(y, F.relu(x), equal_nan=True, rtol=0, atol=0)
    assert torch.equal(torch.signbit(y), torch.signbit(F.relu(x)))
    assert mask.dtype == torch.uint8 and mask.shape == ((n + 7) // 8,)
    keep, padding = unpack_keep_bits(mask, n)
    assert torch.equal(keep, ~(F.relu(x) <= 0))  # NaN kept, +-0 dropped, as threshold_backward
    assert not padding.any()
    grad = torch.randn(n, dtype=dtype)
    grad[::3] = float("inf")  # a dropped inf must give 0, not NaN
    torch.testing.assert_close(OPS.relu_backward_from_mask(grad, mask, "cpu"), _torch_backward(grad, x),
                               rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(0,), (3, 0, 5), (1,), (3, 67), (1, 3, 7, 9), (2, 5, 9, 11), (16, 64, 18, 18)],
                         ids=str)
def test_stored_mask_on_every_layout(dtype, shape):
    for name, x in _layouts(shape, dtype).items():
        y, mask = OPS.relu_with_mask(x, "cpu")
        torch.testing.assert_close(y, F.relu(x), equal_nan=True, rtol=0, atol=0)
        assert y.stride() == F.relu(x).stride(), name
        for g in _layouts(shape, dtype).values():  # gradients of any layout, the mask in logical order
            torch.testing.assert_close(OPS.relu_backward_from_mask(g, mask, "cpu"), _torch_backward(g, x),
                                       equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("inplace", [False, True])
def test_autograd_stores_the_mask_for_contiguous_cpu_tensors(inplace):
    x = torch.randn(4, 16, 32, 32, dtype=torch.float64, requires_grad=True)  # 512 KiB: stored from 256 KiB

    def run(backend_name, layout=torch.contiguous_format):
        x.grad = None
        with fastconv.backend(backend_name):
            y = FF.relu((x * 1).contiguous(memory_format=layout), inplace=inplace)
        y.backward(torch.arange(y.numel(), dtype=y.dtype).view_as(y))
        return x.grad

    expected = torch.where(x > 0, torch.arange(x.numel(), dtype=x.dtype).view_as(x), 0.0)
    forward = "fastconv::relu_with_mask_" if inplace else "fastconv::relu_with_mask"
    called = ops_called(lambda: run("cpu"))
    assert forward in called and "fastconv::relu_backward_from_mask" in called
    assert "fastconv::relu_backward" not in called
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
    # Other layouts and backends keep the output instead.
    for backend_name, layout in (("cpu", torch.channels_last), ("simt", torch.contiguous_format)):
        called = ops_called(lambda: run(backend_name, layout))
        assert "fastconv::relu_backward" in called and "fastconv::relu_backward_from_mask" not in called
        assert not any(name.startswith("fastconv::relu_with_mask") for name in called)
        torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def test_recorded_relu_keeps_only_its_mask_for_backward():
    x = torch.randn(2, 8, 64, 64, requires_grad=True)
    for inplace in (False, True):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = FF.relu(x * 1, inplace=inplace)
        assert [(t.dtype, t.numel()) for t in saved] == [(torch.uint8, x.numel() // 8)]
        y.backward(torch.ones_like(y))
        torch.testing.assert_close(x.grad, (x > 0).to(x.dtype))
        x.grad = None


def test_no_mask_is_stored_without_autograd_or_below_256_kib():
    x = torch.randn(1 << 16)
    assert "fastconv::relu_with_mask" not in ops_called(lambda: FF.relu(x))
    x.requires_grad_()
    with torch.no_grad():
        assert "fastconv::relu_with_mask" not in ops_called(lambda: FF.relu(x))
    assert "fastconv::relu_with_mask" in ops_called(lambda: FF.relu(x))
    small = torch.randn((1 << 16) - 1, requires_grad=True)
    called = ops_called(lambda: FF.relu(small).sum().backward())
    assert "fastconv::relu_backward" in called and "fastconv::relu_with_mask" not in called


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5, 7)], ids=str)
def test_stored_mask_gradcheck_and_double_backward(shape):
    x = torch.randn(shape, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x).requires_grad_()  # away from the kink
    assert torch.autograd.gradcheck(lambda t: OPS.relu_with_mask(t, "cpu")[0], (x,))
    assert torch.autograd.gradgradcheck(lambda t: OPS.relu_with_mask(t, "cpu")[0], (x,))
    _, mask = OPS.relu_with_mask(x.detach(), "cpu")
    g = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: OPS.relu_backward_from_mask(t, mask, "cpu"), (g,))
    assert torch.autograd.gradgradcheck(lambda t: OPS.relu_backward_from_mask(t, mask, "cpu"), (g,))
    # Double backward by hand: the gradient of the backward map is the map itself.
    y, _ = OPS.relu_with_mask(x, "cpu")
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    assert "fastconv::relu_backward_from_mask" in ops_called(lambda: gx.backward(torch.ones_like(gx)))
    torch.testing.assert_close(g.grad, (x.detach() > 0).to(g.dtype))


def test_stored_mask_opcheck():
    x = torch.randn(3, 19, requires_grad=True)
    _, mask = OPS.relu_with_mask(x.detach(), "cpu")
    torch.library.opcheck(OPS.relu_with_mask.default, (x, "cpu"))
    torch.library.opcheck(OPS.relu_with_mask_.default, (x.detach().clone(), "cpu"))
    torch.library.opcheck(OPS.relu_backward_from_mask.default, (x, mask, "cpu"))
    torch.library.opcheck(OPS.relu_backward_from_mask.default, (x.detach(), mask, "auto"))


def test_stored_mask_inplace_matches_out_of_place():
    for x in _layouts((2, 3, 5, 7), torch.float32).values():
        expected, expected_mask = OPS.relu_with_mask(x, "cpu")
        y = x.clone()
        mask = OPS.relu_with_mask_(y, "cpu")
        torch.testing.assert_close(y, expected, equal_nan=True, rtol=0, atol=0)
        assert torch.equal(mask, expected_mask)
    # Under autograd, through a view: the base's gradient is the view's masked one.
    base = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    y = base * 1
    mask = OPS.relu_with_mask_(y[:, 2:7], "cpu")
    y.sum().backward()
    keep, _ = unpack_keep_bits(mask, 15)
    expected = torch.ones(3, 8, dtype=torch.float64)
    expected[:, 2:7] = keep.view(3, 5).to(torch.float64)
    torch.testing.assert_close(base.grad, expected)
    torch.testing.assert_close(keep.view(3, 5), base.detach()[:, 2:7] > 0)


# From 2 MiB of float32 on: the dense copy of a non-contiguous input comes from the output cache.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 67), (2, 5, 9, 11), (4, 32, 64, 65)], ids=str)
def test_stored_mask_inplace_on_every_layout_matches_torch(dtype, shape):
    for name, x in in_place_layouts(_sample(shape, dtype, "cpu")).items():
        expected = F.relu(x)
        mask = OPS.relu_with_mask_(x, "cpu")
        torch.testing.assert_close(x, expected, equal_nan=True, rtol=0, atol=0, msg=name)
        assert gap_intact(x), name
        keep, _ = unpack_keep_bits(mask, x.numel())
        assert torch.equal(keep, ~(expected.flatten() <= 0)), name  # row-major order on every layout
    overlapping = torch.randn(3, 1, dtype=dtype).expand(3, 4)
    with pytest.raises(RuntimeError, match="^unsupported operation: more than one element of the written-to"):
        OPS.relu_with_mask_(overlapping, "cpu")


@pytest.mark.parametrize("dynamic", [False, True])
def test_stored_mask_compiles_with_inplace_relu(dynamic):
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), fnn.ReLU(inplace=True), torch.nn.Linear(16, 4))
    reference = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(inplace=True), torch.nn.Linear(16, 4))
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    x = torch.randn(4096, 16)  # 256 KiB of activations: the mask is stored
    results = []
    for run, first in ((reference, reference[0]), (compiled, model[0])):
        xx = x.clone().requires_grad_()

        def step():
            out = run(xx)
            out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
            results.append((out.detach(), xx.grad, first.weight.grad))

        called = ops_called(step)
        if run is compiled:
            assert "fastconv::relu_with_mask_" in called and "fastconv::relu_backward_from_mask" in called
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("inplace", [False, True])
def test_recorded_errors_name_the_op_called(inplace):
    # Tensors the mask ops do not take reach relu itself, whose error names it.
    x = torch.randn(1 << 17, dtype=torch.float16, requires_grad=True)
    with pytest.raises(TypeError, match="^relu_?: input has dtype"):
        FF.relu(x * 1, inplace=inplace)


def test_bad_masks_are_refused():
    g = torch.randn(20)
    _, mask = OPS.relu_with_mask(g, "cpu")
    with pytest.raises(RuntimeError, match="mask must be a uint8 tensor"):
        OPS.relu_backward_from_mask(g, mask.to(torch.int32), "cpu")
    with pytest.raises(RuntimeError, match="1-D tensor of 3 bytes for 20 elements, got shape \\[4\\]"):
        OPS.relu_backward_from_mask(g, torch.zeros(4, dtype=torch.uint8), "cpu")
    with pytest.raises(RuntimeError, match="1-D tensor of 3 bytes"):
        OPS.relu_backward_from_mask(g, mask.view(1, 3), "cpu")
    with pytest.raises(RuntimeError, match="mask must be on grad_output's device"):
        OPS.relu_backward_from_mask(g, mask.to("meta"), "cpu")
    with pytest.raises(TypeError, match="dtype"):
        OPS.relu_backward_from_mask(g.to(torch.float16), mask, "cpu")
    with pytest.raises(TypeError, match="dtype"):
        OPS.relu_with_mask(torch.arange(5), "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        OPS.relu_with_mask(g, "tpu")
    for op in (lambda: OPS.relu_with_mask(g, "simt"), lambda: OPS.relu_with_mask_(g.clone(), "simt"),
               lambda: OPS.relu_backward_from_mask(g, mask, "simt")):
        with pytest.raises(RuntimeError, match="only the 'cpu' backend stores relu masks"):
            op()
