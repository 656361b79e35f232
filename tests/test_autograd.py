"""The ops' autograd kernels (csrc/autograd): registered in C++ for the Autograd key, gradients
equal to torch's on every backend and dtype, backward on the forward's backend, in-place ops
marking their input modified, double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn
from conftest import BACKENDS, device_of
from simt_kernels import launch_counts

ops = torch.ops.fastconv

# Every op with a gradient; its autograd is written in C++.
CPP_AUTOGRAD_OPS = ("relu", "relu_", "relu_backward", "relu_with_mask", "relu_with_mask_",
                    "relu_backward_from_mask", "dropout", "dropout_", "dropout_backward",
                    "dropout_with_mask", "dropout_with_mask_", "dropout_backward_from_mask", "conv2d",
                    "conv2d_relu", "max_pool2d", "max_pool2d_backward")

# The dtypes each backend's kernels are built for.
DTYPES = {"cpu": (torch.float32, torch.float64),
          "simt": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
          "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16)}
BACKEND_DTYPES = [pytest.param(b, d, id=f"{b}-{str(d).removeprefix('torch.')}") for b in BACKENDS for d in DTYPES[b]]


def _tolerance(dtype):
    return {torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
            torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}[dtype]


def _leaf(*shape, dtype, device):
    return torch.randn(*shape, dtype=dtype, device=device).requires_grad_()


@pytest.mark.parametrize("name", CPP_AUTOGRAD_OPS)
def test_autograd_kernel_is_registered_in_cpp(name):
    dump = torch._C._dispatch_dump(f"fastconv::{name}")
    line = next(line for line in dump.splitlines() if line.startswith("Autograd[alias]"))
    assert "csrc/autograd/" in line, line


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_opcheck_autograd_registration(backend_name):
    device = device_of(backend_name)
    x = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    seed = torch.tensor([3, 4], device=device)
    check = dict(test_utils="test_autograd_registration")
    conv = (x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, "auto", backend_name)
    torch.library.opcheck(ops.conv2d.default, conv, **check)
    torch.library.opcheck(ops.conv2d_relu.default, conv, **check)
    torch.library.opcheck(ops.max_pool2d.default, (x, [2, 2], [2, 2], [0, 0], [1, 1], False, backend_name), **check)
    torch.library.opcheck(ops.relu.default, (x, backend_name), **check)
    torch.library.opcheck(ops.relu_backward.default, (x, F.relu(x).detach(), backend_name), **check)
    torch.library.opcheck(ops.dropout.default, (x, 0.3, seed, backend_name), **check)
    torch.library.opcheck(ops.dropout_backward.default, (x, 0.3, seed, backend_name), **check)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPES)
@pytest.mark.parametrize("geometry", [
    dict(batch=1, cin=3, cout=8, size=(8, 8), kernel=3),
    dict(batch=2, cin=4, cout=6, size=(9, 7), kernel=3, stride=2, padding=1),
    dict(batch=1, cin=6, cout=4, size=(11, 10), kernel=(3, 2), dilation=2, groups=2, padding=(2, 1)),
], ids=["tiny", "stride2-pad", "dilation-groups"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_relu"])
def test_conv_gradients_match_torch(backend_name, dtype, geometry, fused):
    g = dict(geometry)
    device = device_of(backend_name)
    kernel = g.pop("kernel")
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = _leaf(g.pop("batch"), g.pop("cin"), *g.pop("size"), dtype=dtype, device=device)
    groups = g.get("groups", 1)
    w = _leaf(g.pop("cout"), x.shape[1] // groups, kh, kw, dtype=dtype, device=device)
    b = _leaf(w.shape[0], dtype=dtype, device=device)
    with fastconv.backend(backend_name):
        out = (FF.conv2d_relu if fused else FF.conv2d)(x, w, b, **g)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, w, b), grad)
    # torch in float64, from the same values, as the reference.
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(x64, w64, b64, **g)
    ref = F.relu(ref) if fused else ref
    expected = torch.autograd.grad(ref, (x64, w64, b64), grad.double())
    scale = max(1.0, x.shape[1] * kh * kw / 8)
    tol = {k: v * scale for k, v in _tolerance(dtype).items()}
    torch.testing.assert_close(out.double(), ref.detach(), **tol)
    for a, e in zip(ours, expected):
        torch.testing.assert_close(a.double(), e, **tol)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPES)
def test_relu_pool_dropout_gradients_match_torch(backend_name, dtype):
    device = device_of(backend_name)
    x = _leaf(1, 3, 7, 9, dtype=dtype, device=device)
    with fastconv.backend(backend_name):
        relu = FF.relu(x)
        pool = FF.max_pool2d(x, 3, stride=2, padding=1)
        drop = FF.dropout(x, 0.4)
    for ours, ref in ((relu, F.relu(x)), (pool, F.max_pool2d(x, 3, stride=2, padding=1))):
        grad = torch.randn_like(ours)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(ref, x, grad)[0],
                                   **_tolerance(dtype))
    # Dropout's mask is its own: the gradient is the forward's kept-and-scaled map.
    kept = (drop != 0).to(dtype) / (1 - 0.4)
    torch.testing.assert_close(torch.autograd.grad(drop.sum(), x)[0], kept, **_tolerance(dtype))


def _backward_launches(run):
    """SIMT launches made by ``run`` (a backward pass, outside any backend block)."""
    before = sum(launch_counts().values())
    run()
    return sum(launch_counts().values()) - before


@pytest.mark.parametrize("forward", ["relu", "relu_", "dropout", "dropout_", "conv2d", "conv2d_relu",
                                     "max_pool2d"])
@pytest.mark.parametrize("backend_name", ["simt", "cpu"])
def test_backward_runs_on_the_forward_backend(forward, backend_name):
    # float16 runs on "simt" only, so a backward that fell back to "auto" (the cpu kernels) would raise.
    dtype = torch.float16 if backend_name == "simt" else torch.float32
    x = _leaf(1, 2, 6, 6, dtype=dtype, device="cpu")
    w = _leaf(3, 2, 3, 3, dtype=dtype, device="cpu")
    calls = {
        "relu": lambda: FF.relu(x), "relu_": lambda: FF.relu(x * 1, inplace=True),
        "dropout": lambda: FF.dropout(x, 0.5), "dropout_": lambda: FF.dropout(x * 1, 0.5, inplace=True),
        "conv2d": lambda: FF.conv2d(x, w), "conv2d_relu": lambda: FF.conv2d_relu(x, w),
        "max_pool2d": lambda: FF.max_pool2d(x, 2),
    }
    with fastconv.backend(backend_name):
        out = calls[forward]()
    launches = _backward_launches(lambda: out.backward(torch.ones_like(out)))
    assert x.grad is not None and x.grad.dtype == dtype
    assert (launches > 0) == (backend_name == "simt")


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("op", ["relu", "dropout"])
def test_inplace_under_autograd_matches_torch(backend_name, op):
    device = device_of(backend_name)
    base = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    seed = torch.tensor([11, 0], device=device)
    ours_fn = {"relu": lambda t: ops.relu_(t, backend_name),
               "dropout": lambda t: ops.dropout_(t, 0.5, seed, backend_name)}[op]
    ref_fn = {"relu": lambda t: F.relu(t, inplace=True),
              "dropout": lambda t: t.mul_(ops.dropout(torch.ones_like(t), 0.5, seed, backend_name))}[op]
    grads = []
    for fn in (ours_fn, ref_fn):
        y = base * 2
        view = y[:, 1:3]  # through a view: autograd rebases the base's history too
        version = y._version
        fn(view)
        assert y._version > version
        (y * torch.arange(12.0, dtype=y.dtype, device=device).view(3, 4)).sum().backward()
        grads.append(base.grad)
        base.grad = None
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("op", ["relu_", "dropout_"])
def test_inplace_without_grad_bumps_the_version(op):
    x = torch.randn(5)
    seed = torch.tensor([1, 2])
    call = {"relu_": lambda: ops.relu_(x), "dropout_": lambda: ops.dropout_(x, 0.5, seed)}[op]
    version = x._version
    with torch.no_grad():
        call()
    assert x._version == version + 1
    leaf = torch.randn(5, requires_grad=True)
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        {"relu_": lambda: ops.relu_(leaf), "dropout_": lambda: ops.dropout_(leaf, 0.5, seed)}[op]()
    assert torch.equal(leaf.detach(), before), "refused before the data changed, as torch does"
    view = leaf[1:]
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        {"relu_": lambda: ops.relu_(view), "dropout_": lambda: ops.dropout_(view, 0.5, seed)}[op]()
    assert torch.equal(leaf.detach(), before)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_double_backward(backend_name):
    device = device_of(backend_name)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, device=device)
    x = torch.where(x.abs() < 0.05, x + 0.1, x).requires_grad_()  # away from relu's kink
    seed = torch.tensor([7, 9], device=device)
    with fastconv.backend(backend_name):
        assert torch.autograd.gradgradcheck(FF.relu, (x,))
        assert torch.autograd.gradgradcheck(lambda t: FF.max_pool2d(t, 2, padding=1), (x,))
        assert torch.autograd.gradgradcheck(lambda t: ops.dropout(t, 0.3, seed, backend_name), (x,))


# Geometries for second derivatives through a convolution: stride 2 with asymmetric padding,
# dilation with groups, and a 3x3 stride-1 layer that every algorithm runs.
CONV_DOUBLE_BACKWARD = [
    dict(x=(2, 4, 7, 6), w=(6, 4, 3, 2), stride=2, padding=(1, 0), dilation=1, groups=1),
    dict(x=(1, 4, 8, 8), w=(4, 2, 3, 3), stride=1, padding=2, dilation=2, groups=2),
    dict(x=(2, 3, 6, 6), w=(5, 3, 3, 3), stride=1, padding=1, dilation=1, groups=1),
]


@pytest.mark.parametrize("case", range(len(CONV_DOUBLE_BACKWARD)))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_conv2d_double_backward(backend_name, case):
    """gradgradcheck through conv2d and conv2d_relu (the backward ops have autograd of their
    own), and second derivatives equal to torch's, e.g. for a gradient penalty."""
    c = CONV_DOUBLE_BACKWARD[case]
    device = device_of(backend_name)
    g = torch.Generator().manual_seed(case)
    x = torch.randn(c["x"], generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(c["w"], generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(c["w"][0], generator=g, dtype=torch.float64).to(device).requires_grad_()
    geometry = {k: c[k] for k in ("stride", "padding", "dilation", "groups")}
    eligible = c["stride"] == 1 and c["dilation"] == 1 and c["w"][2:] == (3, 3) and backend_name == "cpu"
    algorithms = ["direct", "im2col"] + (["winograd"] if eligible else [])
    # On the SIMT runtime every launch costs milliseconds, and the full check launches a few per
    # input element: there gradgradcheck compares random projections of the Jacobians instead
    # (fast mode), which a wrong second derivative fails just the same.
    fast_mode = backend_name == "simt"
    with fastconv.backend(backend_name):
        for algorithm in algorithms:
            conv = lambda *t: FF.conv2d(*t, **geometry, algorithm=algorithm)  # noqa: E731
            assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=fast_mode)
        fused = lambda *t: FF.conv2d_relu(*t, **geometry)  # noqa: E731
        assert torch.autograd.gradgradcheck(fused, (x, w, b), fast_mode=fast_mode)

        def penalty(conv2d):  # the squared norm of the input gradient, differentiated again
            y = conv2d(x, w, b, **geometry)
            (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            return torch.autograd.grad(gx.square().sum(), (x, w, b))

        for ours, expected in zip(penalty(FF.conv2d), penalty(F.conv2d)):
            torch.testing.assert_close(ours, expected)


def _compiled_autograd_gradients(model, x, backend_name):
    """Parameter and input gradients of model(x) (its first output if it returns several)
    squared and summed: (eager, with compiled autograd); compiled autograd must capture once."""

    def step(x):
        torch.manual_seed(1)
        y = model(x)
        (y[0] if isinstance(y, tuple) else y).square().sum().backward()

    def gradients(run):
        model.zero_grad()
        leaf = x.clone().requires_grad_()
        run(leaf)
        return [p.grad for p in model.parameters()] + [leaf.grad]

    torch._dynamo.reset()
    counters["compiled_autograd"].clear()
    with fastconv.backend(backend_name):
        eager = gradients(step)
        with torch._dynamo.config.patch(compiled_autograd=True):
            compiled = gradients(torch.compile(step, backend="eager"))
    assert counters["compiled_autograd"]["captures"] == 1
    return eager, compiled


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compiled_autograd_matches_torch(backend_name):
    """Compiled autograd traces the backward Functions of conv2d, conv2d_relu, relu and max
    pooling (indices and taps; their backward ops called below autograd) into a graph whose
    gradients are torch.nn's."""
    device = device_of(backend_name)
    torch.manual_seed(0)
    model = torch.nn.Sequential(fnn.Conv2d(3, 4, 3, padding=1), fnn.ReLU(), fnn.MaxPool2d(3, 1, 1),
                                fnn.Conv2dReLU(4, 2, 3, stride=2), fnn.MaxPool2d(2, return_indices=True)).to(device)
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 1, 1),
                               torch.nn.Conv2d(4, 2, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2, return_indices=True)).to(device)
    twin[0].load_state_dict(model[0].state_dict())
    twin[3].load_state_dict(model[3].state_dict())
    x = torch.randn(2, 3, 9, 9, device=device)
    _, compiled = _compiled_autograd_gradients(model, x, backend_name)
    leaf = x.clone().requires_grad_()
    twin(leaf)[0].square().sum().backward()
    for ours, expected in zip(compiled, [p.grad for p in twin.parameters()] + [leaf.grad]):
        torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compiled_autograd_keeps_the_dropout_mask(backend_name):
    """With dropout, whose mask comes from fastconv's own Philox stream (not torch's), the
    compiled backward must give the eager one's gradients."""
    device = device_of(backend_name)
    torch.manual_seed(0)
    model = torch.nn.Sequential(fnn.Conv2d(3, 4, 3, padding=1), fnn.ReLU(), fnn.Dropout(0.3),
                                fnn.Conv2dReLU(4, 2, 3, stride=2)).to(device)
    eager, compiled = _compiled_autograd_gradients(model, torch.randn(2, 3, 9, 9, device=device), backend_name)
    for ours, expected in zip(compiled, eager):
        torch.testing.assert_close(ours, expected)
