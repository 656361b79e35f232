"""fastconv dropout: Philox known answers, exact masks, statistics, torch semantics, autograd."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

from conftest import device_of, kernels_on, with_empty_marked
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


def test_channels_last_input_gives_channels_last_output(backend):
    x = torch.randn(2, 3, 5, 4, device=device_of(backend)).to(memory_format=torch.channels_last)
    y = FF.dropout(x, 0.5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.stride() == F.dropout(x, 0.5).stride()
