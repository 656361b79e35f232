"""fastconv conv2d: forward and all gradients against torch on every backend and algorithm,
fuzzing, gradcheck, opcheck, layouts, torch semantics of arguments and errors, nn.Conv2d."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.functional as FF
import fastconv.nn as fnn

import simt_kernels
from conftest import BACKENDS, CPU_ISA_FLAGS, cpu_flags, device_of, kernels_on, on_each_thread_count

ALGORITHMS = ["direct", "im2col"]
KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (3, 1), (1, 7)]
ops = torch.ops.fastconv


def _random_case(rng: random.Random, max_channels: int = 17, max_size: int = 31) -> dict:
    """A valid conv2d configuration drawn from the grid of the spec."""
    while True:
        kernel = rng.choice(KERNELS)
        groups_kind = rng.choice(["one", "two", "depthwise"])
        cin = rng.randint(1, max_channels)
        if groups_kind == "two":
            cin = max(2, cin - cin % 2)
        groups = {"one": 1, "two": 2, "depthwise": cin}[groups_kind]
        cout = groups * rng.randint(1, max(1, max_channels // groups))
        stride = (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 3), rng.randint(1, 3))
        padding = rng.choice(["int", "pair", "large", "same", "valid"])
        if padding == "same":
            stride = (1, 1)
            pad = "same"
        elif padding == "valid":
            pad = "valid"
        elif padding == "large":  # more than half the kernel on each side
            pad = (kernel[0] // 2 + rng.randint(1, 3), kernel[1] // 2 + rng.randint(1, 3))
        elif padding == "pair":
            pad = (rng.randint(0, 2), rng.randint(0, 2))
        else:
            pad = rng.randint(0, 2)
        h, w = rng.randint(1, max_size), rng.randint(1, max_size)
        pad_hw = (0, 0) if isinstance(pad, str) else ((pad, pad) if isinstance(pad, int) else pad)
        reach = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
        if pad != "same" and (h + 2 * pad_hw[0] < reach[0] or w + 2 * pad_hw[1] < reach[1]):
            continue
        return dict(batch=0 if rng.random() < 0.1 else rng.randint(1, 3), cin=cin, cout=cout, hw=(h, w), kernel=kernel, stride=stride,
                    padding=pad, dilation=dilation, groups=groups, bias=rng.random() < 0.6)


def _cost(case: dict) -> int:
    """Multiply-adds of the forward pass, roughly: what the SIMT runtime pays for."""
    return max(case["batch"], 1) * case["cout"] * case["hw"][0] * case["hw"][1] * (
        case["cin"] // case["groups"]) * case["kernel"][0] * case["kernel"][1]


_rng = random.Random(20240611)
GRID = [_random_case(_rng) for _ in range(48)]
# The SIMT runtime runs each CUDA thread as a fiber: it gets a grid of its
# own with fewer channels and smaller images, capped in cost.
SIMT_GRID = [c for c in (_random_case(_rng, max_channels=8, max_size=14) for _ in range(40))
             if _cost(c) <= 40_000][:16]


def _grid_params():
    params = []
    for backend in BACKENDS:
        cases = SIMT_GRID if backend == "simt" else GRID
        params += [pytest.param(backend, case, id=f"{backend}-{i}",
                                marks=[pytest.mark.launches_no_kernel] if case["batch"] == 0 else [])
                   for i, case in enumerate(cases)]
    return params


def _make(case: dict, device: str, dtype=torch.float64, requires_grad=True):
    g = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    cin_g = case["cin"] // case["groups"]
    x = torch.randn(case["batch"], case["cin"], *case["hw"], generator=g, dtype=dtype)
    w = torch.randn(case["cout"], cin_g, *case["kernel"], generator=g, dtype=dtype)
    b = torch.randn(case["cout"], generator=g, dtype=dtype) if case["bias"] else None
    tensors = [t.to(device).requires_grad_(requires_grad) if t is not None else None for t in (x, w, b)]
    return tensors


def _kwargs(case: dict) -> dict:
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])


# Name fragments of the SIMT kernels each pass launches with each algorithm.
# winograd runs on the CPU backend only, where nothing is checked.
_PASS_KERNELS = {"fwd": {"direct": "conv2d_direct_forward", "im2col": "gemm_kernel", "winograd": None},
                 "bwd_input": {"direct": "conv2d_direct_backward_input", "im2col": "gemm_kernel", "winograd": None},
                 "bwd_weight": {"direct": "conv2d_direct_backward_weight", "im2col": "gemm_kernel", "winograd": None}}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _algorithms_run(case, algorithm, backend, dtype):
    """The algorithm of each pass: the one asked for, or what "auto" picks, as the extension itself
    decides it (per backend and pass; on the CUDA kernels also by whether the GEMMs use tensor cores)."""
    if algorithm != "auto":
        return dict.fromkeys(_PASS_KERNELS, algorithm)
    h, w = case["hw"]
    kh, kw = case["kernel"]
    padding, dilation = case["padding"], _pair(case["dilation"])
    if isinstance(padding, str):  # the rule reads channels and sizes; "same" pads about half the reach
        padding = (0, 0) if padding == "valid" else (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    tensor_cores = dtype in (torch.float16, torch.bfloat16) or (
        dtype == torch.float32 and backend == "cuda" and torch.backends.cudnn.allow_tf32)
    return {p: fastconv._C.conv2d_auto_algorithm("cpu" if backend == "cpu" else "cuda", p, [case["batch"], case["cin"], h, w],
                                        [case["cout"], case["cin"] // case["groups"], kh, kw], list(_pair(case["stride"])),
                                        list(_pair(padding)), list(dilation), case["groups"],
                                        tensor_cores)
            for p in _PASS_KERNELS}


def _check_against_torch(case, device, algorithm, dtype=torch.float64, **tolerances):
    x, w, b = _make(case, device, dtype)
    backend = fastconv.current_backend() if case["batch"] > 0 else "cpu"  # an empty batch launches nothing
    run = _algorithms_run(case, algorithm, backend, dtype)
    with kernels_on(backend, _PASS_KERNELS["fwd"][run["fwd"]]):
        y = FF.conv2d(x, w, b, algorithm=algorithm, **_kwargs(case))
    expected = F.conv2d(x, w, b, **_kwargs(case))
    torch.testing.assert_close(y, expected, **tolerances)
    grad = torch.randn_like(expected)
    inputs = [t for t in (x, w, b) if t is not None]
    bias_kernel = ["conv2d_backward_bias_kernel"] if b is not None else []
    backward = [_PASS_KERNELS[p][run[p]] for p in ("bwd_input", "bwd_weight")]
    with kernels_on(backend, *backward, *bias_kernel):
        ours = torch.autograd.grad(y, inputs, grad)
    theirs = torch.autograd.grad(expected, inputs, grad)
    for name, a, e in zip(["input", "weight", "bias"], ours, theirs):
        torch.testing.assert_close(a, e, msg=lambda m: f"grad {name}: {m}", **tolerances)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend,case", _grid_params(), indirect=["backend"])
def test_matches_torch_on_grid(backend, case, algorithm):
    _check_against_torch(case, device_of(backend), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_matches_torch(backend, algorithm):
    case = dict(batch=2, cin=6, cout=8, hw=(11, 9), kernel=(3, 3), stride=(1, 2), padding=1, dilation=(1, 1),
                groups=2, bias=True)
    _check_against_torch(case, device_of(backend), algorithm, dtype=torch.float32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_against_torch(backend_name, data):
    small = backend_name == "simt"
    groups = data.draw(st.integers(1, 3), label="groups")
    cin = groups * data.draw(st.integers(1, 2 if small else 5), label="cin/groups")
    cout = groups * data.draw(st.integers(1, 2 if small else 5), label="cout/groups")
    kh, kw = data.draw(st.integers(1, 4), label="kh"), data.draw(st.integers(1, 4), label="kw")
    dil = (data.draw(st.integers(1, 3), label="dil_h"), data.draw(st.integers(1, 3), label="dil_w"))
    stride = (data.draw(st.integers(1, 3), label="stride_h"), data.draw(st.integers(1, 3), label="stride_w"))
    pad = (data.draw(st.integers(0, 3), label="pad_h"), data.draw(st.integers(0, 3), label="pad_w"))
    # The smallest input the kernel fits in, up to a few rows more (fewer for the slow SIMT runtime).
    extra = 5 if small else 12
    min_h = max(1, dil[0] * (kh - 1) + 1 - 2 * pad[0])
    min_w = max(1, dil[1] * (kw - 1) + 1 - 2 * pad[1])
    h = data.draw(st.integers(min_h, min_h + extra), label="h")
    w = data.draw(st.integers(min_w, min_w + extra), label="w")
    case = dict(batch=data.draw(st.integers(0, 2), label="batch"), cin=cin, cout=cout, hw=(h, w),
                kernel=(kh, kw), stride=stride, padding=pad, dilation=dil, groups=groups,
                bias=data.draw(st.booleans(), label="bias"))
    algorithm = data.draw(st.sampled_from(ALGORITHMS + ["auto"]), label="algorithm")
    with fastconv.backend(backend_name):
        _check_against_torch(case, device_of(backend_name), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradcheck(backend, algorithm):
    device = device_of(backend)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x_, w_, b_: FF.conv2d(x_, w_, b_, stride=(2, 1), padding=(1, 2), dilation=(1, 2),  # noqa: E731
                                      groups=2, algorithm=algorithm)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("algorithm", ["auto", *ALGORITHMS])
def test_opcheck_all_ops(backend, algorithm):
    device = device_of(backend)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=device)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(6, dtype=torch.float64, device=device)
    geometry = ([1, 2], [1, 0, 2, 1], [1, 1], 2, algorithm, backend)
    y = ops.conv2d(x, w, b, *geometry)
    g = torch.randn_like(y)
    torch.library.opcheck(ops.conv2d.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *geometry))
    torch.library.opcheck(ops.conv2d.default, (x.detach(), w.detach(), None, *geometry))
    torch.library.opcheck(ops.conv2d_backward_input.default, (g, w.detach(), list(x.shape), *geometry))
    torch.library.opcheck(ops.conv2d_backward_weight.default, (g, x.detach(), list(w.shape), *geometry))
    torch.library.opcheck(ops.conv2d_backward_bias.default, (g, backend))


def test_only_requested_gradients_are_computed(backend):
    device = device_of(backend)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=device)
    FF.conv2d(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None
    torch.testing.assert_close(w.grad, torch.autograd.grad(F.conv2d(x, w, b).sum(), w)[0])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_non_contiguous_and_channels_last(backend, algorithm):
    device = device_of(backend)
    base = torch.randn(2, 6, 9, 8, dtype=torch.float64, device=device)
    weight = torch.randn(4, 6, 3, 3, dtype=torch.float64, device=device)
    layouts = {
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": torch.randn(2, 12, 9, 16, dtype=torch.float64, device=device)[:, ::2, :, ::2],
    }
    for name, x in layouts.items():
        x = x.detach().requires_grad_()
        w = weight.to(memory_format=torch.channels_last).requires_grad_()
        y = FF.conv2d(x, w, padding=1, algorithm=algorithm)
        expected = F.conv2d(x, w, padding=1)
        torch.testing.assert_close(y, expected, msg=name)
        g = torch.randn_like(expected).to(memory_format=torch.channels_last)
        for a, e in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
            torch.testing.assert_close(a, e, msg=name)


def test_unbatched_input(backend):
    device = device_of(backend)
    x = torch.randn(3, 8, 7, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = FF.conv2d(x, w, padding="same")
    expected = F.conv2d(x, w, padding="same")
    assert y.shape == expected.shape == (5, 8, 7)
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("kernel,dilation", [((2, 2), 1), ((4, 3), 1), ((2, 4), (2, 3))])
def test_same_padding_of_even_kernels_is_asymmetric_like_torch(backend, kernel, dilation):
    device = device_of(backend)
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, *kernel, dtype=torch.float64, device=device)
    y = FF.conv2d(x, w, padding="same", dilation=dilation)
    assert y.shape[-2:] == x.shape[-2:]
    torch.testing.assert_close(y, F.conv2d(x, w, padding="same", dilation=dilation))


@pytest.mark.launches_no_kernel
def test_zero_batch(backend):
    device = device_of(backend)
    x = torch.randn(0, 3, 8, 8, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = FF.conv2d(x, w, b)
    assert y.shape == (0, 4, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_auto_algorithm_and_unknown_names(backend):
    device = device_of(backend)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, device=device)
    for w, groups in ((torch.randn(8, 4, 3, 3, dtype=torch.float64, device=device), 1),
                      (torch.randn(4, 1, 3, 3, dtype=torch.float64, device=device), 4)):
        torch.testing.assert_close(FF.conv2d(x, w, groups=groups, algorithm="auto"), F.conv2d(x, w, groups=groups))
    with pytest.raises(ValueError, match="unknown algorithm 'fft'"):
        FF.conv2d(x, w, groups=4, algorithm="fft")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 4, "auto", "tpu")


# Shapes of the seed CNN's class, big enough to cross the block boundaries of
# the CPU GEMM's kernels and of the im2col pixel blocks: K past one 256- or
# 320-step block (patch 288, 540), M past one 128- or 144-row block (150
# output channels), N past one 512-column block (the 1024-column blocks of
# the AVX-512 kernel: EDGE_LAYERS), pixel blocks that start mid-row, stride
# 2, groups.
LARGE_LAYERS = {
    "seed_like": dict(x=(3, 32, 40, 37), w=(70, 32, 3, 3), padding=1),
    "wide_and_deep": dict(x=(2, 60, 23, 29), w=(150, 60, 3, 3), padding=2, stride=2),
    "grouped_5x5": dict(x=(2, 36, 26, 21), w=(24, 18, 5, 5), padding=1, groups=2, bias=True),
    # one image, several pixel blocks: the threads split the image
    "single_image": dict(x=(1, 64, 33, 35), w=(40, 64, 3, 3), padding=1, bias=True),
}


def _check_cpu_layer(spec: dict, dtype, algorithms, tol: dict, weight_tol: dict):
    """Runs the layer `spec` (shapes x, w; bias; conv2d keywords) on the CPU backend with each
    algorithm, plain and with fused ReLU, and compares output and gradients with torch's.
    Returns the input, weight, bias and keywords."""
    spec = dict(spec)
    x = torch.randn(spec.pop("x"), dtype=dtype)
    w = torch.randn(spec.pop("w"), dtype=dtype) / 10
    b = torch.randn(w.shape[0], dtype=dtype) if spec.pop("bias", False) else None
    for algorithm in algorithms:
        for fused in (False, True):  # the GEMM's ReLU epilogue
            x_, w_ = x.clone().requires_grad_(), w.clone().requires_grad_()
            with fastconv.backend("cpu"):
                conv = FF.conv2d_relu if fused else FF.conv2d
                y = conv(x_, w_, b, algorithm=algorithm, **spec)
            expected = F.conv2d(x_, w_, b, **spec)
            if fused:
                expected = expected.relu()
            torch.testing.assert_close(y, expected, **tol)
            g = torch.randn_like(y)
            gx, gw = torch.autograd.grad(y, (x_, w_), g)
            ex, ew = torch.autograd.grad(expected, (x_, w_), g)
            torch.testing.assert_close(gx, ex, **tol)
            torch.testing.assert_close(gw, ew, **weight_tol)
    return x, w, b, spec


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layer", sorted(LARGE_LAYERS))
def test_large_layers_cpu(layer, dtype):
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    _check_cpu_layer(LARGE_LAYERS[layer], dtype, ALGORITHMS, tol, dict(rtol=tol["rtol"], atol=10 * tol["atol"]))


def _run_with_env(python_args: list, **env: str) -> str:
    """Runs python with `python_args` from the project root, with `env` added to the
    environment (switches read once per process); fails on a non-zero exit; returns stdout
    and stderr."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, *python_args], env=dict(os.environ, **env), capture_output=True,
                            text=True, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


# Layers whose GEMMs have M, N and K that are multiples of no micro-kernel
# tile (6 x 16, 8 x 32 floats; 6 x 8, 8 x 16 doubles) nor of the column
# alignment: forward M = 37 output channels, N = pixels, K = patch 19 * 9;
# input gradient M = the patch rows of a channel range; weight gradient N =
# the patch, K = pixels. With bias the forward GEMM adds it to each tile it stores.
# Batch 1 splits each image over the threads.
EDGE_LAYERS = {
    "odd_batch1": dict(x=(1, 19, 23, 21), w=(37, 19, 3, 3), padding=1, bias=True),
    "stride2_dilated": dict(x=(2, 13, 25, 19), w=(29, 13, 3, 3), stride=2, dilation=2, padding=(2, 1)),
    "groups_batch1": dict(x=(1, 18, 15, 17), w=(22, 9, 3, 3), groups=2, padding=1, bias=True),
    "pointwise_batch1": dict(x=(1, 43, 9, 11), w=(35, 43, 1, 1), bias=True),
    # a small patch: pixel blocks of over 1024 columns cross the GEMM's column blocks
    "many_pixels_batch1": dict(x=(1, 3, 70, 61), w=(10, 3, 3, 3), bias=True),
    # 70 pixels are 3 column tiles, which 2 threads could only split 1 + 2: the forward cuts the
    # 70 output channels instead, into two ranges of whole row tiles, the second ending on a
    # partial tile (as the weight gradient does when an image is one pixel block and every
    # thread gets a row tile)
    "deep_few_pixels_batch1": dict(x=(1, 72, 7, 10), w=(70, 72, 3, 3), padding=1, bias=True),
    "deep_few_pixels_groups_batch1": dict(x=(1, 144, 7, 10), w=(140, 72, 3, 3), padding=1, groups=2, bias=True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layer", sorted(EDGE_LAYERS))
def test_gemm_edge_tiles_cpu(layer, dtype):
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    x, w, b, spec = _check_cpu_layer(EDGE_LAYERS[layer], dtype, ["im2col"], tol, tol)
    # The forward cuts an image's pixels and output channels over the threads, and the input
    # gradient its input channels; each element is computed alike whatever the cut, so the
    # results do not depend on the thread count. So does the weight gradient of an image that is
    # one pixel block (at most 256 pixels always are) with a row tile of output channels (8 at
    # most) for every thread: its threads split dW's rows, each summing the block as one thread
    # would.
    x.requires_grad_()
    w.requires_grad_()
    g = torch.randn_like(F.conv2d(x, w, b, **spec))

    def forward_and_gradients():
        with fastconv.backend("cpu"):
            y = FF.conv2d(x, w, b, algorithm="im2col", **spec)
            return (y, *torch.autograd.grad(y, (x, w), g))

    one_thread, *more = on_each_thread_count((1, 2, 3), forward_and_gradients)
    for threads, (y, gx, gw) in zip((2, 3), more):
        assert torch.equal(y, one_thread[0]) and torch.equal(gx, one_thread[1]), threads
        one_block = x.shape[0] == 1 and y.shape[2] * y.shape[3] <= 256
        if one_block and w.shape[0] // spec.get("groups", 1) >= 8 * threads:
            assert torch.equal(gw, one_thread[2]), threads


@pytest.mark.parametrize("isa", sorted(CPU_ISA_FLAGS))
def test_cpu_gemm_paths_match_torch(isa):
    # The CPU GEMM picks its micro-kernel, tile shape and packing at run time;
    # rerun the large and edge-tile layers with each path this CPU has,
    # FASTCONV_CPU_ISA capping the choice, so every path is checked here
    # (the portable one is what CPUs without AVX2 run).
    needs = CPU_ISA_FLAGS[isa]
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU lacks {sorted(needs - cpu_flags())}")
    tests = [f"{__file__}::{name}" for name in ("test_large_layers_cpu", "test_gemm_edge_tiles_cpu")]
    run = ("import sys, fastconv, pytest; print('cpu_isa', fastconv.build_info()['cpu_isa']); "
           f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{tests!r}]))")
    out = _run_with_env(["-c", run], FASTCONV_CPU_ISA=isa)
    assert f"cpu_isa {isa}\n" in out, "the switch took effect"
    assert " passed" in out and "skipped" not in out and "failed" not in out


def test_unknown_cpu_isa_is_reported_and_ignored():
    out = _run_with_env(["-c", "import fastconv; print('cpu_isa', fastconv.build_info()['cpu_isa'])"],
                        FASTCONV_CPU_ISA="avx-512")
    assert "ignoring FASTCONV_CPU_ISA=avx-512 (expected baseline, avx2 or avx512)" in out
    assert "cpu_isa baseline" not in out or not {"avx2", "fma"} <= cpu_flags()


# Run with an 8 KiB column-buffer cap: a 3x6x6 image's columns take 3,888
# bytes in float, so batch 5 goes through the unfolding im2col kernels in
# chunks of 2, 2, 1 images (float), 1 each (double) and, on CUDA cores
# (sm_75), 4, 1 (float16, bfloat16: their weight gradient adds the chunks in
# a float32 accumulator), the path that large batches take on a GPU. The
# forward and weight gradient of float and double (and of the half types on
# tensor cores) gather their columns and take the batch whole, however small
# the cap, unless FASTCONV_IM2COL_GATHER=0; the input gradient of 3 channels
# still writes a column gradient in chunks. The half types compare with
# torch in float32 on the same values, relative to the largest magnitude.
_CHUNKED_IM2COL_CHECK = """
import json, torch, torch.nn.functional as F, fastconv, fastconv.functional as FF
tolerance = {torch.float32: 1e-4, torch.float64: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}
# The second shape's weight gradient is a 128 x 256 GEMM: two 128 x 128 tiles, which take one
# round on the one multiprocessor where eight 64 x 64 ones take four; the third's is split
# (split-K) inside each chunk.
shapes = [((5, 3, 6, 6), (4, 3, 3, 3), (4,)), ((3, 256, 6, 6), (128, 256, 1, 1), (128,)),
          ((3, 3, 24, 24), (4, 3, 3, 3), (4,))]
for (dtype, atol), (x_shape, w_shape, b_shape) in ((d, s) for d in tolerance.items() for s in shapes):
    x, w, b = (torch.randn(shape).to(dtype).requires_grad_() for shape in (x_shape, w_shape, b_shape))
    wide = [t.detach().to(torch.float64).requires_grad_() for t in (x, w, b)]
    for fused in (False, True):
        with fastconv.backend("simt"):
            y = (FF.conv2d_relu if fused else FF.conv2d)(x, w, b, padding=1, algorithm="im2col")
        expected = F.conv2d(*wide, padding=1)
        expected = expected.relu() if fused else expected
        # Fused: gradients only where both sides take the same ReLU branch (a value within rounding
        # of 0 may fall on either side of the kink in float16).
        g = torch.randn(y.shape).to(dtype) * ((expected > 0) & (y.detach() > 0) if fused else 1)
        ours = (y, *torch.autograd.grad(y, (x, w, b), g))
        theirs = (expected, *torch.autograd.grad(expected, wide, g.double()))
        for a, e in zip(ours, theirs):
            assert a.dtype == dtype
            scale = e.abs().max().item() + 1e-6
            torch.testing.assert_close(a.double() / scale, e / scale, rtol=0, atol=atol)
print("chunked im2col ok")
print("launches", json.dumps(fastconv._C.simt_launch_counts()))
"""


@pytest.mark.parametrize("sm, gather", [("90", "1"), ("75", "1"), ("90", "0")],
                         ids=["tensor-cores", "cuda-cores", "unfolded"])
def test_cuda_im2col_batch_chunks_on_simt(sm, gather):
    # One multiprocessor: two blocks at a time.
    out = _run_with_env(["-c", _CHUNKED_IM2COL_CHECK], FASTCONV_COLUMN_BUFFER_BYTES="8192", FASTCONV_SIMT_SM_COUNT="1",
                        FASTCONV_SIMT_ARCH=sm, FASTCONV_IM2COL_GATHER=gather)
    assert "chunked im2col ok" in out
    launches = simt_kernels.record_subprocess_launches(out)
    im2col = {name: n for name, n in launches.items() if name.startswith("im2col_kernel<")}
    if gather == "0":
        # The switch took effect: one im2col launch per chunk. Without the cap every pass would
        # take its 5 (or 3) images in one chunk; with it, float runs chunks of 2, 2, 1 and double
        # 1 each.
        assert im2col["im2col_kernel<double, 1>"] >= 2 * (5 + 3) * 2, im2col
        assert not simt_kernels.launched(launches, "Im2colGather")
        return
    # float and double gather their columns; their 3-channel input gradients fold a column
    # gradient in chunks of one image (double), one col2im launch each, fused or not.
    assert not any(name.startswith(("im2col_kernel<float", "im2col_kernel<double")) for name in im2col), im2col
    assert simt_kernels.launched(launches, "gemm_kernel<double, double, GemmTile<64, 64, 8, 4, 4>, Im2colGatherWgrad>")
    assert launches["col2im_kernel<double, true>"] >= 2 * (5 + 3), launches
    if sm == "90":
        # float16 on tensor cores: no chunks, so no fp32 dW accumulator; the third shape's
        # weight gradient is split (fp32 partials) and its partials summed straight into dW.
        assert simt_kernels.launched(launches, "Im2colGatherWgrad")
        assert not simt_kernels.launched(launches, "im2col_kernel<half_t")
        assert not simt_kernels.launched(launches, "conv2d_reduce_partials_kernel<half_t, float>")
        assert simt_kernels.launched(launches, "gemm_tensor_core_kernel<half_t, float")
        assert simt_kernels.launched(launches, "conv2d_reduce_partials_kernel<half_t, half_t>")
        return
    # The fp32 dW accumulator of float16 on CUDA cores, which unfold its columns.
    assert simt_kernels.launched(launches, "im2col_kernel<half_t")
    assert simt_kernels.launched(launches, "gemm_kernel<half_t, float, GemmTile<128, 128"), "fp32 dW accumulator"
    assert simt_kernels.launched(launches, "conv2d_reduce_partials_kernel<bfloat16_t, bfloat16_t>")
    # The third shape's chunks of one 24x24 image split their weight-gradient reduction in two:
    # half/bfloat16 partials are added into the fp32 accumulator.
    assert simt_kernels.launched(launches, "conv2d_reduce_partials_kernel<half_t, float>"), "split-K into fp32"
    assert simt_kernels.launched(launches, "conv2d_reduce_partials_kernel<bfloat16_t, float>")


# ---------------------------------------------------------------- bad arguments, as torch raises them

X = torch.randn(1, 4, 5, 5)
W = torch.randn(6, 4, 3, 3)
BAD_CALLS = {
    "channel_mismatch": lambda conv: conv(X, torch.randn(6, 3, 3, 3)),
    "groups_mismatch": lambda conv: conv(X, torch.randn(6, 2, 3, 3), groups=3),
    "out_channels_not_divisible": lambda conv: conv(X, torch.randn(5, 2, 3, 3), groups=2),
    "zero_groups": lambda conv: conv(X, W, groups=0),
    "negative_groups": lambda conv: conv(X, W, groups=-2),
    "kernel_larger_than_input": lambda conv: conv(X, torch.randn(6, 4, 7, 7)),
    "dilated_kernel_too_large": lambda conv: conv(X, W, dilation=3),
    "zero_stride": lambda conv: conv(X, W, stride=0),
    "negative_stride": lambda conv: conv(X, W, stride=(1, -1)),
    "zero_dilation": lambda conv: conv(X, W, dilation=0),
    "negative_padding": lambda conv: conv(X, W, padding=-1),
    "bias_shape": lambda conv: conv(X, W, torch.randn(5)),
    "bias_2d": lambda conv: conv(X, W, torch.randn(6, 1)),
    "weight_dtype": lambda conv: conv(X, W.double()),
    "long_input_float_weight": lambda conv: conv(X.long(), W),
    "float_input_long_weight": lambda conv: conv(X, W.long()),
    "complex_bias": lambda conv: conv(X, W, torch.zeros(6, dtype=torch.complex64)),
    "half_input_float_weight": lambda conv: conv(X.half(), W),
    "bias_dtype": lambda conv: conv(X, W, torch.randn(6).double()),
    "input_2d": lambda conv: conv(X[0, 0], W),
    "input_5d": lambda conv: conv(X[None], W),
    "weight_3d": lambda conv: conv(X, torch.randn(6, 4, 3)),
    "stride_length": lambda conv: conv(X, W, stride=(1, 1, 1)),
    "padding_length": lambda conv: conv(X, W, padding=(1, 1, 1)),
    "dilation_length": lambda conv: conv(X, W, dilation=(1, 1, 1)),
    "unknown_padding_string": lambda conv: conv(X, W, padding="full"),
    "same_with_stride": lambda conv: conv(X, W, padding="same", stride=2),
}


def _raised(call, conv):
    with pytest.raises(Exception) as info:
        call(conv)
    return info.value


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_arguments_raise_like_torch(name):
    expected = _raised(BAD_CALLS[name], F.conv2d)
    with fastconv.backend("cpu"):
        ours = _raised(BAD_CALLS[name], FF.conv2d)
    assert isinstance(ours, type(expected)), f"torch raised {type(expected).__name__}, we raised {ours!r}"
    assert str(ours)


def test_unknown_padding_string_is_also_a_value_error():
    # torch.nn.Conv2d raises ValueError for it, F.conv2d RuntimeError; we are both.
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        FF.conv2d(X, W, padding="full")


def test_messages_say_what_is_wrong():
    with pytest.raises(RuntimeError, match="expects input to have 6 channels"):
        FF.conv2d(X, torch.randn(6, 2, 3, 3), groups=3)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        FF.conv2d(X, torch.randn(6, 4, 7, 7))
    with pytest.raises(RuntimeError, match="expected bias to be 1-dimensional with 6 elements"):
        FF.conv2d(X, W, torch.randn(5))
    with pytest.raises(RuntimeError, match="same dtype as input"):
        FF.conv2d(X, W.double())


def test_integer_tensors_are_a_type_error():
    with pytest.raises(TypeError, match="float32 and float64"):
        FF.conv2d(X.int(), W.int())


@pytest.mark.cuda
def test_device_mismatch_is_rejected():
    with pytest.raises(RuntimeError, match="same device"):
        FF.conv2d(X.cuda(), W)


def test_backward_ops_check_grad_output_shape():
    g = torch.randn(1, 6, 4, 3)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        ops.conv2d_backward_input(g, W, [1, 4, 5, 5], [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        ops.conv2d_backward_weight(g, X, [6, 4, 3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="4-D grad_output"):
        ops.conv2d_backward_bias(g[0])


# ---------------------------------------------------------------- nn.Conv2d


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_module_matches_torch_module(backend, padding_mode, padding):
    device = device_of(backend)
    ours = fnn.Conv2d(4, 6, (3, 2), padding=padding, padding_mode=padding_mode, groups=2, device=device,
                      dtype=torch.float64)
    theirs = torch.nn.Conv2d(4, 6, (3, 2), padding=padding, padding_mode=padding_mode, groups=2, device=device,
                             dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    y, expected = ours(x), theirs(x)
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(y)
    ours_grads = torch.autograd.grad(y, (x, ours.weight, ours.bias), g)
    theirs_grads = torch.autograd.grad(expected, (x, theirs.weight, theirs.bias), g)
    for a, e in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, e)


def test_module_is_a_drop_in():
    torch_conv = torch.nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)
    ours = fnn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False, algorithm="direct")
    assert isinstance(ours, torch.nn.Conv2d)
    assert set(ours.state_dict()) == set(torch_conv.state_dict()) == {"weight"}
    ours.load_state_dict(torch_conv.state_dict())
    torch_conv.load_state_dict(ours.state_dict())
    assert "algorithm='direct'" in repr(ours)
    x = torch.randn(2, 3, 17, 13)
    torch.testing.assert_close(ours(x), torch_conv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x[0]), torch_conv(x[0]), rtol=1e-5, atol=1e-5)
    with_bias = fnn.Conv2d(3, 8, 3)
    assert set(with_bias.state_dict()) == {"weight", "bias"}


def test_module_rejects_what_torch_rejects():
    for kwargs in (dict(padding="full"), dict(padding="same", stride=2), dict(groups=3),
                   dict(padding_mode="mirror")):
        with pytest.raises(ValueError):
            torch.nn.Conv2d(4, 6, 3, **kwargs)
        with pytest.raises(ValueError):
            fnn.Conv2d(4, 6, 3, **kwargs)
    with pytest.raises(ValueError, match="fastconv.nn.Conv2d: unknown algorithm 'fft'"):
        fnn.Conv2d(4, 6, 3, algorithm="fft")


def test_channels_last_layout_follows_torch(backend):
    device = device_of(backend)
    x = torch.randn(2, 4, 9, 8, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(6, 4, 3, 3, device=device)
    ours, theirs = FF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)
    assert ours.stride() == theirs.stride()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert FF.conv2d(x.contiguous(), w).is_contiguous()
