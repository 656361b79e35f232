"""fastconv dropout: Philox known answers, exact masks, statistics, torch semantics, autograd."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

from conftest import (BACKEND_DTYPES, device_of, gap_intact, in_place_layouts, kernels_on, layouts,
                      ops_called, recorded_view, unpack_keep_bits, with_empty_marked)
from philox_reference import dropout_keep_mask, philox4x32_10

# Random123's kat_vectors for philox4x32 with 10 rounds: counter, key, expected output.
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


def _seed(seed, offset):
    to_signed = lambda v: v - 2**64 if v >= 2**63 else v  # noqa: E731
    return torch.tensor([to_signed(seed), to_signed(offset)], dtype=torch.int64)


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_philox_known_answers(counter, key, expected):
    out = philox4x32_10(np.array(counter, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert [int(v) for v in out] == expected


def test_kernel_mask_follows_known_answer(backend):
    # Group 0 has counter words 0 and 1 equal to zero, as in the first KAT
    # vector: with its key as seed and its words 2-3 as offset, the first four
    # elements are kept exactly when the KAT's words say so. (The other vectors
    # are checked on the C++ header by CTest.)
    counter, key, expected = KAT[0]
    seed = key[0] | (key[1] << 32)
    offset = counter[2] | (counter[3] << 32)
    p = 0.5
    x = torch.ones(4, device=device_of(backend))
    y = torch.ops.fastconv.dropout(x, p, _seed(seed, offset).to(x.device), backend)
    kept = [(w >> 8) >= math.ceil(p * 2**24) for w in expected]
    assert (y.cpu() != 0).tolist() == kept


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1000, 4099])
@pytest.mark.parametrize("seed,offset", [(0, 0), (123456789, 7), (2**64 - 1, 2**63 + 5)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.77])
def test_mask_is_exactly_philox(backend, n, seed, offset, p):
    x = torch.randn(n, dtype=torch.float64, device=device_of(backend))
    y = torch.ops.fastconv.dropout(x, p, _seed(seed, offset).to(x.device), backend).cpu()
    keep = torch.from_numpy(dropout_keep_mask(n, seed, offset, p))
    expected = torch.where(keep, x.cpu() * (1 / (1 - p)), x.cpu() * 0)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_masks_identical_across_backends():
    x = torch.randn(3, 17, 29, dtype=torch.float32)
    seed = _seed(42, 3)
    outs = {b: torch.ops.fastconv.dropout(x, 0.3, seed, b) for b in ("cpu", "simt")}
    if "cuda" in fastconv.available_backends():
        outs["cuda"] = torch.ops.fastconv.dropout(x.cuda(), 0.3, seed.cuda(), "cuda").cpu()
    reference = outs.pop("cpu")
    for name, y in outs.items():
        assert torch.equal(y, reference), name


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_within_five_sigma(backend, p):
    n = 1_000_000
    y = FF.dropout(torch.ones(n, device=device_of(backend)), p=p)
    kept = (y != 0).sum().item()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 5 * sigma
    torch.testing.assert_close(y[y != 0], torch.full((kept,), 1 / (1 - p), device=y.device))


def test_torch_semantics_of_edge_probabilities(backend):
    x = torch.tensor([float("nan"), -0.0, 0.0, -1.0, 2.0, 3.5], device=device_of(backend))
    assert FF.dropout(x, p=0.0) is x
    assert FF.dropout(x, p=0.5, training=False) is x
    torch.testing.assert_close(FF.dropout(x, p=1.0), F.dropout(x, p=1.0), equal_nan=True, rtol=0, atol=0)
    assert torch.equal(torch.signbit(FF.dropout(x, p=1.0)), torch.signbit(F.dropout(x, p=1.0)))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            FF.dropout(x, p=p)
        with pytest.raises(ValueError, match="between 0 and 1"):
            fnn.Dropout(p=p)


def test_manual_seed_reproduces(backend):
    x = torch.randn(2, 3, 50, device=device_of(backend))
    torch.manual_seed(7)
    a = FF.dropout(x, 0.4)
    torch.manual_seed(7)
    b = FF.dropout(x, 0.4)
    c = FF.dropout(x, 0.4)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


@pytest.mark.parametrize("shape", with_empty_marked([(0,), (1,), (5, 7), (2, 3, 4, 5)]))
def test_backward_uses_the_forward_mask(backend, shape):
    x = torch.randn(shape, device=device_of(backend), dtype=torch.float64, requires_grad=True)
    y = FF.dropout(x, p=0.3)
    g = torch.randn_like(y)
    if x.numel():
        with kernels_on(backend, "dropout_kernel<double"):  # backward regenerates the mask on the same kernels
            y.backward(g)
    else:
        y.backward(g)
    scale = torch.where(y.detach() != 0, 1 / 0.7, 0.0)
    torch.testing.assert_close(x.grad, g * scale)


def test_non_contiguous_and_channels_last(backend):
    base = torch.randn(2, 4, 6, 8, device=device_of(backend))
    seed = _seed(9, 1).to(base.device)
    reference = torch.ops.fastconv.dropout(base, 0.5, seed, backend)
    for x in (base.to(memory_format=torch.channels_last), base.transpose(2, 3).contiguous().transpose(2, 3)):
        # The mask follows logical element order, so every layout sees the same mask.
        assert torch.equal(torch.ops.fastconv.dropout(x, 0.5, seed, backend), reference)
        g = torch.randn_like(x)
        grad = torch.ops.fastconv.dropout_backward(g, 0.5, seed, backend)
        torch.testing.assert_close(grad, torch.where(reference != 0, g * 2, g * 0))


def test_inplace(backend):
    x = torch.randn(100, device=device_of(backend))
    keep_copy = x.clone()
    out = FF.dropout(x, 0.5, inplace=True)
    assert out is x
    torch.testing.assert_close(x[x != 0], keep_copy[x != 0] * 2)

    a = torch.randn(50, device=device_of(backend), requires_grad=True)
    y = FF.dropout(a * 1, 0.5, inplace=True)
    y.sum().backward()
    torch.testing.assert_close(a.grad, torch.where(y.detach() != 0, 2.0, 0.0))


def test_module_train_and_eval():
    m = fnn.Dropout(0.5)
    assert isinstance(m, torch.nn.Dropout)
    x = torch.ones(1000)
    assert (m(x) == 0).any()
    m.eval()
    assert m(x) is x


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_gradcheck(backend_name):
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    seed = _seed(5, 0)
    fn = lambda t: torch.ops.fastconv.dropout(t, 0.4, seed, backend_name)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("backend_name", ["cpu", "simt"])
def test_opcheck(backend_name):
    x = torch.randn(3, 8, requires_grad=True)
    seed = _seed(11, 2)
    torch.library.opcheck(torch.ops.fastconv.dropout.default, (x, 0.25, seed, backend_name))
    torch.library.opcheck(torch.ops.fastconv.dropout_.default, (x.detach().clone(), 0.25, seed, backend_name))
    torch.library.opcheck(torch.ops.fastconv.dropout_backward.default, (x.detach(), 0.25, seed, backend_name))


def test_bad_arguments():
    x = torch.randn(8)
    with pytest.raises(TypeError, match="dtype"):
        FF.dropout(torch.arange(8), 0.5)
    with pytest.raises(RuntimeError, match="seed"):
        torch.ops.fastconv.dropout(x, 0.5, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="seed"):
        torch.ops.fastconv.dropout(x, 0.5, torch.zeros(2))
    with pytest.raises(ValueError, match="between 0 and 1"):
        torch.ops.fastconv.dropout(x, 2.0, torch.zeros(2, dtype=torch.int64))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types_share_the_mask(dtype):
    x = torch.randn(1003, device="cuda")
    seed = _seed(3, 4).cuda()
    full = torch.ops.fastconv.dropout(x, 0.5, seed, "cuda")
    half = torch.ops.fastconv.dropout(x.to(dtype), 0.5, seed, "cuda")
    assert torch.equal(full != 0, half != 0)
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), offset=st.integers(0, 3), p=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**64 - 1), counter_offset=st.integers(0, 2**64 - 1))
def test_fuzz_masks_agree_with_reference_on_cpu_and_simt(n, offset, p, seed, counter_offset):
    x = torch.randn(n + offset)[offset:]
    s = _seed(seed, counter_offset)
    keep = torch.from_numpy(dropout_keep_mask(n, seed, counter_offset, p))
    scale = 0.0 if p == 1.0 else 1 / (1 - p)
    expected = torch.where(keep, x * torch.tensor(scale, dtype=torch.float32), x * 0)
    for b in ("cpu", "simt"):
        torch.testing.assert_close(torch.ops.fastconv.dropout(x, p, s, b), expected, rtol=0, atol=0)


@settings(max_examples=20, deadline=None)
@given(p=st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1 + 1e-9, allow_nan=False)))
def test_fuzz_bad_probabilities_raise_value_error(p):
    with pytest.raises(ValueError):
        FF.dropout(torch.randn(3), p)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("p", [-0.5, 1.5])
def test_bad_probability_raises_even_where_no_kernel_runs(p, training):
    # torch checks p before it looks at `training`; so do we, with its words.
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.dropout(torch.randn(3), p, training)
    with pytest.raises(ValueError, match=f"dropout: dropout probability has to be between 0 and 1, but got {p}"):
        FF.dropout(torch.randn(3), p, training)


def test_inplace_write_is_seen_by_autograd():
    w = torch.ones(6, requires_grad=True)
    y = torch.randn(6)
    z = (w * y).sum()
    FF.dropout(y, 0.5, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


@pytest.mark.parametrize("backend,dtype", BACKEND_DTYPES, indirect=["backend"], ids=str)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (1, 3, 1, 4), (2, 3, 5, 7)], ids=str)
def test_inplace_on_every_layout_applies_the_philox_mask(backend, dtype, shape):
    """Contiguous tensors are written in place, the others computed in a contiguous copy and
    written back, touching nothing else in their buffer; the mask is in logical order on all."""
    device = device_of(backend)
    seed, offset = 2**40 + 3, 17
    keep = torch.from_numpy(dropout_keep_mask(math.prod(shape), seed, offset, 0.5)).view(shape).to(device)
    for name, x in in_place_layouts(torch.randn(shape, dtype=dtype, device=device)).items():
        expected = torch.where(keep, x * 2, 0)  # p = 0.5: the scale 2 is exact in every dtype
        torch.ops.fastconv.dropout_(x, 0.5, _seed(seed, offset).to(device), backend)
        assert torch.equal(x, expected), name
        assert gap_intact(x), name


# The larger shape, 4 MiB of float64, takes its contiguous copies from the output cache.
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5, 7), (8, 16, 64, 64)], ids=str)
def test_inplace_autograd_on_every_layout(backend, shape):
    """FF.dropout(inplace=True) on a recorded tensor of every layout (on cpu: storing its mask,
    in a contiguous copy for the other layouts): the same mask on all, gradients through it."""
    device = device_of(backend)
    values = torch.randn(shape, dtype=torch.float64, device=device)
    # The (seed, offset) pair FF.dropout draws after manual_seed(11), and the mask Philox gives for it.
    torch.manual_seed(11)
    seed, offset = torch.randint(-2**63, 2**63 - 1, (2,), dtype=torch.int64, device=device).tolist()
    keep = torch.from_numpy(dropout_keep_mask(values.numel(), seed, offset, 0.5)).view(shape).to(device)
    for name, target in in_place_layouts(values).items():
        leaf, product, view = recorded_view(target)
        torch.manual_seed(11)
        called = ops_called(lambda: FF.dropout(view, 0.5, inplace=True))
        assert ("fastconv::dropout_with_mask_" in called) == (backend == "cpu"), name
        assert torch.equal(view.detach(), torch.where(keep, values * 2, 0)), name  # in logical order
        grad = torch.arange(product.numel(), dtype=product.dtype, device=product.device).view_as(product)
        product.backward(grad)
        expected = torch.empty_like(product).copy_(grad)  # the buffer's layout, which target's strides index
        region = expected.as_strided(target.size(), target.stride(), target.storage_offset())
        region.mul_(torch.where(keep, 2.0, 0.0))
        assert torch.equal(leaf.grad, expected), name


@pytest.mark.launches_no_kernel
def test_inplace_refuses_overlapping_memory_as_torch_does(backend):
    x = torch.randn(3, 1, device=device_of(backend)).expand(3, 4)
    before = x.clone()
    with pytest.raises(RuntimeError) as expected:
        F.dropout(x, 0.5, inplace=True)
    message = "^" + re.escape(str(expected.value).splitlines()[0])
    with pytest.raises(RuntimeError, match=message):
        FF.dropout(x, 0.5, inplace=True)
    if backend == "cpu":
        with pytest.raises(RuntimeError, match=message):
            torch.ops.fastconv.dropout_with_mask_(x, 0.5, _seed(1, 2), "cpu")
    assert torch.equal(x, before)


def test_channels_last_input_gives_channels_last_output(backend):
    x = torch.randn(2, 3, 5, 4, device=device_of(backend)).to(memory_format=torch.channels_last)
    y = FF.dropout(x, 0.5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.stride() == F.dropout(x, 0.5).stride()


# ---------------------------------------------------------------- the stored mask (cpu backend)

OPS = torch.ops.fastconv


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 1000, 4099])
@pytest.mark.parametrize("seed,offset", [(0, 0), (2**64 - 1, 2**63 + 5)])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.77, 1.0])
def test_stored_mask_is_the_philox_mask(n, seed, offset, p):
    x = torch.randn(n, dtype=torch.float64)
    pair = _seed(seed, offset)
    y, mask = OPS.dropout_with_mask(x, p, pair, "cpu")
    assert mask.dtype == torch.uint8 and mask.shape == ((n + 7) // 8,)
    keep, padding = unpack_keep_bits(mask, n)
    assert torch.equal(keep, torch.from_numpy(dropout_keep_mask(n, seed, offset, p)))
    assert not padding.any()
    assert torch.equal(y, OPS.dropout(x, p, pair, "cpu"))


def test_stored_mask_matches_every_backends_mask():
    x = torch.ones(5, 7, 11)
    pair = _seed(42, 3)
    _, mask = OPS.dropout_with_mask(x, 0.3, pair, "cpu")
    keep, _ = unpack_keep_bits(mask, x.numel())
    assert torch.equal(keep, OPS.dropout(x, 0.3, pair, "simt").flatten() != 0)
    if "cuda" in fastconv.available_backends():
        assert torch.equal(keep, OPS.dropout(x.cuda(), 0.3, pair.cuda(), "cuda").cpu().flatten() != 0)


def _layouts(shape, dtype):
    return layouts(torch.randn(shape, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(0,), (3, 0, 5), (1,), (13,), (3, 67), (16, 6272), (1, 3, 7, 9), (2, 5, 9, 11),
                                   (16, 64, 18, 18)], ids=str)
def test_backward_from_mask_equals_the_regenerated_backward(dtype, shape):
    pair = _seed(123456789, 7)
    for name, x in _layouts(shape, dtype).items():
        y, mask = OPS.dropout_with_mask(x, 0.4, pair, "cpu")
        assert torch.equal(y, OPS.dropout(x, 0.4, pair, "cpu")), name
        assert y.stride() == OPS.dropout(x, 0.4, pair, "cpu").stride(), name
        for g in _layouts(shape, dtype).values():  # gradients of any layout, the mask in logical order
            grad = OPS.dropout_backward_from_mask(g, 0.4, mask, "cpu")
            assert torch.equal(grad, OPS.dropout_backward(g, 0.4, pair, "cpu")), name


@pytest.mark.parametrize("inplace", [False, True])
def test_autograd_stores_the_mask_on_cpu_and_regenerates_on_simt(inplace):
    x = torch.randn(4, 33, dtype=torch.float64, requires_grad=True)

    def run(backend_name):
        with fastconv.backend(backend_name):
            torch.manual_seed(5)
            y = FF.dropout(x * 1, 0.4, inplace=inplace)
        y.backward(torch.arange(y.numel(), dtype=y.dtype).view_as(y))

    on_cpu = ops_called(lambda: run("cpu"))
    grad_cpu, x.grad = x.grad, None
    on_simt = ops_called(lambda: run("simt"))
    forward = "fastconv::dropout_with_mask_" if inplace else "fastconv::dropout_with_mask"
    assert forward in on_cpu and "fastconv::dropout_backward_from_mask" in on_cpu
    assert "fastconv::dropout_backward" not in on_cpu
    assert "fastconv::dropout_backward" in on_simt and "fastconv::dropout_backward_from_mask" not in on_simt
    torch.testing.assert_close(grad_cpu, x.grad, rtol=0, atol=0)  # the same mask on both


def test_recorded_calls_refuse_an_unknown_backend_as_the_op_does():
    x = torch.randn(8, requires_grad=True)
    with pytest.raises(ValueError, match="^dropout: unknown backend 'tpu'"):
        OPS.dropout(x, 0.5, _seed(1, 2), "tpu")
    with pytest.raises(ValueError, match="^dropout_: unknown backend 'tpu'"):
        OPS.dropout_(x * 1, 0.5, _seed(1, 2), "tpu")


def test_recorded_meta_calls_reach_the_fake_kernels():
    x = torch.empty(2, 9, device="meta", requires_grad=True)
    y = OPS.dropout(x, 0.5, torch.empty(2, dtype=torch.int64, device="meta"), "auto")
    y.sum().backward()
    assert y.shape == x.grad.shape == x.shape and x.grad.device.type == "meta"


def test_no_mask_is_stored_without_autograd():
    x = torch.randn(100)
    assert "fastconv::dropout_with_mask" not in ops_called(lambda: FF.dropout(x, 0.5))
    x.requires_grad_()
    with torch.no_grad():
        assert "fastconv::dropout_with_mask" not in ops_called(lambda: FF.dropout(x, 0.5))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5, 7)], ids=str)
def test_stored_mask_gradcheck_and_double_backward(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    pair = _seed(5, 1)
    assert torch.autograd.gradcheck(lambda t: OPS.dropout_with_mask(t, 0.4, pair, "cpu")[0], (x,))
    assert torch.autograd.gradgradcheck(lambda t: OPS.dropout_with_mask(t, 0.4, pair, "cpu")[0], (x,))
    _, mask = OPS.dropout_with_mask(x.detach(), 0.4, pair, "cpu")
    g = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: OPS.dropout_backward_from_mask(t, 0.4, mask, "cpu"), (g,))
    assert torch.autograd.gradgradcheck(lambda t: OPS.dropout_backward_from_mask(t, 0.4, mask, "cpu"), (g,))
    # Double backward by hand: the gradient of the backward map is the map itself.
    y = OPS.dropout(x, 0.4, pair, "cpu")
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    assert "fastconv::dropout_backward_from_mask" in ops_called(lambda: gx.backward(torch.ones_like(gx)))
    keep = (y.detach() != 0) | (x.detach() == 0)
    torch.testing.assert_close(g.grad, torch.where(keep, 1 / 0.6, 0.0).to(g.dtype))


def test_stored_mask_opcheck():
    x = torch.randn(3, 19, requires_grad=True)
    pair = _seed(11, 2)
    _, mask = OPS.dropout_with_mask(x.detach(), 0.25, pair, "cpu")
    torch.library.opcheck(OPS.dropout_with_mask.default, (x, 0.25, pair, "cpu"))
    torch.library.opcheck(OPS.dropout_with_mask_.default, (x.detach().clone(), 0.25, pair, "cpu"))
    torch.library.opcheck(OPS.dropout_backward_from_mask.default, (x, 0.25, mask, "cpu"))
    torch.library.opcheck(OPS.dropout_backward_from_mask.default, (x.detach(), 0.25, mask, "auto"))


def test_stored_mask_inplace_matches_out_of_place():
    pair = _seed(8, 8)
    for x in _layouts((2, 3, 5, 7), torch.float32).values():
        expected, expected_mask = OPS.dropout_with_mask(x, 0.5, pair, "cpu")
        y = x.clone()
        mask = OPS.dropout_with_mask_(y, 0.5, pair, "cpu")
        assert torch.equal(y, expected) and torch.equal(mask, expected_mask)
    # Under autograd, through a view: the base's gradient is the view's masked one.
    base = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    y = base * 1
    mask = OPS.dropout_with_mask_(y[:, 2:7], 0.5, pair, "cpu")
    y.sum().backward()
    keep, _ = unpack_keep_bits(mask, 15)
    expected = torch.ones(3, 8, dtype=torch.float64)
    expected[:, 2:7] = torch.where(keep.view(3, 5), 2.0, 0.0)
    torch.testing.assert_close(base.grad, expected)


def test_stored_mask_compiles_with_inplace_dropout():
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), fnn.Dropout(0.3, inplace=True), fnn.ReLU())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 16, requires_grad=True)
    grads = []
    for run in (model, compiled):
        torch.manual_seed(3)
        out = run(x)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        grads.append((out.detach(), x.grad))
        x.grad = None
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("inplace", [False, True])
def test_recorded_errors_name_the_op_called(inplace):
    # Tensors the mask ops do not take reach dropout itself, whose error names it.
    x = torch.randn(100, dtype=torch.float16, requires_grad=True)
    with pytest.raises(TypeError, match="^dropout_?: input has dtype"):
        FF.dropout(x * 1, 0.5, inplace=inplace)


def test_bad_masks_are_refused():
    g = torch.randn(20)
    _, mask = OPS.dropout_with_mask(g, 0.5, _seed(1, 2), "cpu")
    with pytest.raises(RuntimeError, match="mask must be a uint8 tensor"):
        OPS.dropout_backward_from_mask(g, 0.5, mask.to(torch.int32), "cpu")
    with pytest.raises(RuntimeError, match="1-D tensor of 3 bytes for 20 elements, got shape \\[4\\]"):
        OPS.dropout_backward_from_mask(g, 0.5, torch.zeros(4, dtype=torch.uint8), "cpu")
    with pytest.raises(RuntimeError, match="1-D tensor of 3 bytes"):
        OPS.dropout_backward_from_mask(g, 0.5, mask.view(1, 3), "cpu")
    with pytest.raises(RuntimeError, match="mask must be on grad_output's device"):
        OPS.dropout_backward_from_mask(g, 0.5, mask.to("meta"), "cpu")
    with pytest.raises(TypeError, match="dtype"):
        OPS.dropout_backward_from_mask(g.to(torch.float16), 0.5, mask, "cpu")
    with pytest.raises(ValueError, match="between 0 and 1"):
        OPS.dropout_backward_from_mask(g, 1.5, mask, "cpu")
    for op in (lambda: OPS.dropout_with_mask(g, 0.5, _seed(1, 2), "simt"),
               lambda: OPS.dropout_with_mask_(g.clone(), 0.5, _seed(1, 2), "simt"),
               lambda: OPS.dropout_backward_from_mask(g, 0.5, mask, "simt")):
        with pytest.raises(RuntimeError, match="only the 'cpu' backend stores dropout masks"):
            op()
