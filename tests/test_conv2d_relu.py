"""fastconv conv2d_relu: the fused op equals fastconv conv2d -> relu exactly and torch within
rounding, forward and gradients, on every backend and algorithm; torch's ReLU semantics; the
op contract (gradcheck, opcheck, fake kernel, torch.compile); nn.Conv2dReLU and
convert(fuse=True)."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn
from fastconv import models

from conftest import device_of

ALGORITHMS = ["direct", "im2col"]
ops = torch.ops.fastconv

# (batch, cin, cout, hw, kernel, stride, padding, dilation, groups): strides, int/pair/"same"
# padding, dilation, groups and depthwise, kept small for the SIMT runtime.
CASES = [
    (2, 3, 4, (9, 8), (3, 3), 1, 0, 1, 1),
    (2, 3, 5, (9, 10), (3, 3), 2, 1, 1, 1),
    (1, 4, 6, (8, 9), (3, 2), (2, 1), (1, 2), (1, 2), 2),
    (2, 2, 4, (7, 7), (2, 2), 1, "same", 1, 1),
    (1, 3, 3, (8, 7), (3, 3), 1, "same", 2, 1),
    (2, 4, 4, (7, 6), (3, 3), 1, 1, 1, 4),
    (1, 6, 9, (6, 6), (1, 1), 1, 0, 1, 3),
    (1, 5, 12, (10, 9), (5, 3), (1, 2), 2, (2, 1), 1),
]
CASE_IDS = [f"case{i}" for i in range(len(CASES))]


def _make(case, device, dtype=torch.float64, bias=True):
    batch, cin, cout, hw, kernel, _, _, _, groups = case
    g = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    x = torch.randn(batch, cin, *hw, generator=g, dtype=dtype)
    w = torch.randn(cout, cin // groups, *kernel, generator=g, dtype=dtype)
    b = torch.randn(cout, generator=g, dtype=dtype) if bias else None
    return [t.to(device).requires_grad_() if t is not None else None for t in (x, w, b)]


def _kwargs(case) -> dict:
    _, _, _, _, _, stride, padding, dilation, groups = case
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _grads(y, inputs, grad):
    return torch.autograd.grad(y, [t for t in inputs if t is not None], grad)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_equals_unfused_and_torch(backend, case, algorithm, bias):
    inputs = _make(case, device_of(backend), bias=bias)
    fused = FF.conv2d_relu(*inputs, algorithm=algorithm, **_kwargs(case))
    unfused = FF.relu(FF.conv2d(*inputs, algorithm=algorithm, **_kwargs(case)))
    reference = F.relu(F.conv2d(*inputs, **_kwargs(case)))
    # Same kernels, same sums: the epilogue only clamps, so fused and unfused agree bit for bit.
    torch.testing.assert_close(fused, unfused, rtol=0, atol=0)
    torch.testing.assert_close(fused, reference)
    assert (fused == 0).any() and (fused > 0).any(), "the case should exercise both sides of the ReLU"
    grad = torch.randn_like(reference)
    for ours, same, theirs in zip(_grads(fused, inputs, grad), _grads(unfused, inputs, grad),
                                  _grads(reference, inputs, grad)):
        torch.testing.assert_close(ours, same, rtol=0, atol=0)
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_unbatched_and_channels_last(backend, algorithm):
    device = device_of(backend)
    x = torch.randn(6, 11, 9, device=device)
    w = torch.randn(8, 3, 3, 3, device=device).to(memory_format=torch.channels_last)
    b = torch.randn(8, device=device)
    y = FF.conv2d_relu(x, w, b, padding=1, groups=2, algorithm=algorithm)
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, padding=1, groups=2)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, FF.relu(FF.conv2d(x, w, b, padding=1, groups=2, algorithm=algorithm)),
                               rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_deep_reduction_clamps_only_the_final_sums(backend, algorithm):
    # 40 * 3 * 3 = 360 taps: more than one reduction block of the CPU GEMM (256), whose
    # epilogue must clamp after the last block only, and more than one staging round of
    # the CUDA kernels. A large positive bias keeps the partial sums' signs unlike the final's.
    device = device_of(backend)
    x = torch.randn(2, 40, 7, 6, dtype=torch.float64, device=device)
    w = torch.randn(16, 40, 3, 3, dtype=torch.float64, device=device)
    b = torch.linspace(-30, 30, 16, dtype=torch.float64, device=device)
    y = FF.conv2d_relu(x, w, b, padding=1, algorithm=algorithm)
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, padding=1)))
    torch.testing.assert_close(y, FF.relu(FF.conv2d(x, w, b, padding=1, algorithm=algorithm)), rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nan_passes_and_negatives_clamp_like_torch(backend, algorithm):
    device = device_of(backend)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, device=device)
    x[0, 0, 2, 3] = float("nan")
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    b = torch.tensor([-1e6, 1e6, 0.0], dtype=torch.float64, device=device)  # all negative / all positive
    y = FF.conv2d_relu(x, w, b, padding=1, algorithm=algorithm)
    expected = F.relu(F.conv2d(x, w, b, padding=1))
    assert y.isnan().sum() == expected.isnan().sum() > 0
    torch.testing.assert_close(y, expected, equal_nan=True)
    assert (y[0, 0][~y[0, 0].isnan()] == 0).all()
    assert (y[0, 1][~y[0, 1].isnan()] > 0).all()
    # The gradient at exactly 0 is 0, as torch's: zero weights and bias give a zero output.
    w0 = torch.zeros_like(w, requires_grad=True)
    b0 = torch.zeros_like(b, requires_grad=True)
    FF.conv2d_relu(x.nan_to_num(), w0, b0, padding=1, algorithm=algorithm).sum().backward()
    assert (w0.grad == 0).all() and (b0.grad == 0).all()


def test_no_input_channels_gives_relu_of_bias(backend):
    device = device_of(backend)
    x = torch.randn(2, 0, 5, 5, dtype=torch.float64, device=device)
    w = torch.randn(3, 0, 3, 3, dtype=torch.float64, device=device)
    b = torch.tensor([-2.0, 0.5, float("nan")], dtype=torch.float64, device=device)
    y = FF.conv2d_relu(x, w, b)
    # (torch itself returns an empty output here; fastconv's conv2d gives the bias.)
    expected = F.relu(b).view(1, 3, 1, 1).expand(2, 3, 3, 3)
    torch.testing.assert_close(y, expected, equal_nan=True)
    torch.testing.assert_close(y, FF.relu(FF.conv2d(x, w, b)), equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradcheck(backend, algorithm):
    case = CASES[2]  # strided, padded, dilated, grouped
    inputs = _make(case, device_of(backend))
    fn = lambda *t: FF.conv2d_relu(*t, algorithm=algorithm, **_kwargs(case))  # noqa: E731
    assert (fn(*inputs) == 0).any()  # the ReLU's mask is in play
    assert torch.autograd.gradcheck(fn, inputs)


def test_only_requested_gradients_are_computed(backend):
    device = device_of(backend)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)
    FF.conv2d_relu(x, w, b).sum().backward()
    torch.testing.assert_close(b.grad, torch.autograd.grad(F.relu(F.conv2d(x, w, b)).sum(), b)[0])


@pytest.mark.parametrize("algorithm", ["auto", *ALGORITHMS])
def test_opcheck(backend, algorithm):
    device = device_of(backend)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    geometry = ([1, 2], [1, 0, 2, 1], [1, 1], 2, algorithm, backend)
    torch.library.opcheck(ops.conv2d_relu.default, (x, w, b, *geometry))
    torch.library.opcheck(ops.conv2d_relu.default, (x.detach(), w.detach(), None, *geometry))


@pytest.mark.launches_no_kernel
def test_argument_errors_are_conv2d_s(backend):
    device = device_of(backend)
    x = torch.randn(1, 4, 5, 5, device=device)
    with pytest.raises(RuntimeError, match="conv2d_relu: given groups=1, weight of size"):
        FF.conv2d_relu(x, torch.randn(2, 3, 3, 3, device=device))
    with pytest.raises(ValueError, match="conv2d_relu: unknown algorithm 'fft'"):
        FF.conv2d_relu(x, torch.randn(2, 4, 3, 3, device=device), algorithm="fft")


# ---------------------------------------------------------------- nn.Conv2dReLU and convert(fuse=True)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_module_matches_conv_then_relu(backend, padding_mode):
    device = device_of(backend)
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64, device=device)
    fused = fnn.Conv2dReLU(3, 5, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64, device=device)
    fused.load_state_dict(conv.state_dict())
    assert isinstance(fused, fnn.Conv2d) and isinstance(fused, nn.Conv2d)
    assert list(fused.state_dict()) == list(conv.state_dict())
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64, device=device)
    torch.testing.assert_close(fused(x), F.relu(conv(x)))


def _cnn() -> nn.Sequential:
    """A Sequential CNN in plain torch.nn with a nested Sequential, a conv followed by a
    non-ReLU layer, and a ReLU that follows no conv."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(inplace=True),
                      nn.Sequential(nn.Conv2d(8, 6, 3, groups=2), nn.ReLU())),
        nn.Conv2d(6, 4, 1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 3),
    ).double()


def test_convert_fuse_keeps_outputs_grads_and_state_dict_keys(backend):
    device = device_of(backend)
    torch.manual_seed(1)
    model = _cnn().to(device)
    plain = fastconv.convert(model)
    fused = fastconv.convert(model, fuse=True)
    assert type(fused[0]) is fnn.Conv2dReLU and type(fused[1]) is nn.Identity
    assert type(fused[3][0]) is fnn.Conv2dReLU and type(fused[3][1]) is nn.Identity
    assert type(fused[3][2][0]) is fnn.Conv2dReLU and type(fused[3][2][1]) is nn.Identity
    assert type(fused[4]) is fnn.Conv2d  # followed by a pool, not a ReLU
    assert type(fused[6]) is fnn.ReLU
    assert type(model[0]) is nn.Conv2d and type(plain[0]) is fnn.Conv2d  # the originals are untouched
    assert list(fused.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 18, 18, dtype=torch.float64, device=device)
    outputs = []
    for net in (model, plain, fused):
        y = net(x)
        grads = torch.autograd.grad(y.square().sum(), list(net.parameters()))
        outputs.append((y, grads))
    (y_ref, g_ref), (y_plain, g_plain), (y_fused, g_fused) = outputs
    torch.testing.assert_close(y_fused, y_plain, rtol=0, atol=0)
    torch.testing.assert_close(y_fused, y_ref)
    for ours, same, theirs in zip(g_fused, g_plain, g_ref):
        torch.testing.assert_close(ours, same, rtol=0, atol=0)
        torch.testing.assert_close(ours, theirs)


def test_convert_fuse_leaves_hooked_and_shared_layers_apart():
    conv = nn.Conv2d(2, 2, 3)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.Conv2d(2, 2, 1), nn.ReLU())
    model[3].register_forward_hook(lambda *args: None)
    fused = fastconv.convert(model, fuse=True)
    assert type(fused[0]) is fnn.Conv2d and type(fused[1]) is fnn.ReLU  # used twice
    assert type(fused[3]) is fnn.Conv2d and type(fused[4]) is fnn.ReLU  # hooked
    assert type(fastconv.convert(model)[1]) is fnn.ReLU  # fuse defaults to False


def test_convert_fuse_inplace_and_seed_models():
    model = models.convnet3()
    keys = list(model.state_dict())
    same = fastconv.convert(model, inplace=True, fuse=True)
    assert same is model
    assert any(type(m) is fnn.Conv2dReLU for m in model.modules())
    assert not any(type(m) is fnn.Conv2d for m in model.modules())
    assert list(model.state_dict()) == keys


def _op_names(fn) -> list:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [event.name for event in prof.events()]


def test_profiler_shows_one_fused_op_and_no_relu(backend):
    device = device_of(backend)
    model = fastconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()),
                             fuse=True).to(device)
    x = torch.randn(1, 3, 9, 9, device=device)
    with torch.no_grad():
        names = _op_names(lambda: model(x))
    assert names.count("fastconv::conv2d_relu") == 2
    assert "fastconv::relu" not in names and "fastconv::conv2d" not in names
    unfused = fastconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).to(device)
    with torch.no_grad():
        assert "fastconv::relu" in _op_names(lambda: unfused(x))  # the check can tell them apart


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    model = fastconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3),
                                           nn.ReLU()), fuse=True)
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_eager, y_compiled = model(x), compiled(x)
    torch.testing.assert_close(y_compiled, y_eager)
    g_eager = torch.autograd.grad(y_eager.sum(), [x, *model.parameters()])
    g_compiled = torch.autograd.grad(y_compiled.sum(), [x, *model.parameters()])
    for a, e in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, e)
