"""Shared fixtures: the backends every test runs on and seeded randomness."""

from __future__ import annotations

import math
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
from simt_kernels import expect_kernels, launch_counts

DATA_DIR = Path(os.environ.get("FASTCONV_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATS_AND_DOGS = DATA_DIR / "cats_and_dogs_filtered"

# "cpu" and "simt" always run; "cuda" joins where a GPU is present.
BACKENDS = [b for b in fastconv.available_backends()]
# (backend, dtype) for every dtype a backend's kernels are built for: the cpu kernels take
# float32 and float64, the CUDA kernels (on a GPU or the SIMT runtime) float16 and bfloat16
# too. With the backend fixture: parametrize("backend,dtype", BACKEND_DTYPES, indirect=["backend"]).
BACKEND_DTYPES = [(b, dtype) for b in BACKENDS for dtype in
                  (torch.float32, torch.float64) + (() if b == "cpu" else (torch.float16, torch.bfloat16))]


def with_empty_marked(shapes):
    """Shapes as parameters, the empty ones marked launches_no_kernel (there is nothing to launch)."""
    return [pytest.param(s, marks=[pytest.mark.launches_no_kernel] if math.prod(s) == 0 else [], id=str(s))
            for s in shapes]


def kernels_on(backend: str, *fragments: str):
    """On "simt": asserts that the block launched a kernel matching each name fragment (see
    simt_kernels.expect_kernels); elsewhere it checks nothing."""
    return expect_kernels(*fragments) if backend == "simt" else contextlib.nullcontext()


def cpu_flags() -> set:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# FASTCONV_CPU_ISA value -> the CPU flags that path needs (csrc/cpu/cpu_isa.h).
CPU_ISA_FLAGS = {
    "baseline": set(),
    "avx2": {"avx2", "fma", "bmi2"},
    "avx512": {"avx2", "fma", "bmi2", "avx512f", "avx512dq", "avx512bw", "avx512vl"},
}


def unpack_keep_bits(mask, n):
    """A stored mask (dropout_with_mask, relu_with_mask) as n booleans (bit i % 8 of byte i / 8),
    and its padding bits."""
    bits = np.unpackbits(mask.numpy(), bitorder="little").astype(bool)
    return torch.from_numpy(bits[:n].copy()), bits[n:]


def ops_called(run):
    """The fastconv ops that ``run`` dispatched, in order (forward and backward alike)."""
    with torch.autograd.profiler.profile() as prof:
        run()
    return [e.name for e in prof.function_events if e.name.startswith("fastconv::")]


# What a strided layout holds between its elements: a value ReLU and dropout change, exact in every dtype.
GAP = -1000.0


def _strided(values):
    """``values`` every other element of a buffer whose other elements hold GAP."""
    wide = values.new_full((*values.shape[:-1], 2 * values.shape[-1]), GAP)
    wide[..., ::2] = values
    return wide[..., ::2]


def layouts(base):
    """``base``'s values contiguous, channels_last and transposed (4-D), and strided (2-D and up)."""
    views = {"contiguous": base}
    if base.dim() == 4:
        views["channels_last"] = base.contiguous(memory_format=torch.channels_last)
        views["transposed"] = base.transpose(1, 3).contiguous().transpose(1, 3)
    if base.dim() >= 2 and base.numel():
        views["strided"] = _strided(base)
    return views


def in_place_layouts(values):
    """Fresh tensors holding ``values`` for an in-place op to overwrite: every layout of ``layouts``
    and, from 2-D, strided with its last two dimensions swapped (neither dense nor in dimension
    order). An in-place op must leave GAP wherever the strided ones' buffers hold it."""
    views = layouts(values.clone())
    if values.dim() >= 2 and values.numel():
        views["strided_transposed"] = _strided(values.transpose(-1, -2)).transpose(-1, -2)
    return views


def buffer_of(t):
    """The tensor whose storage ``t`` views (``t`` itself when it is no view)."""
    return t if t._base is None else t._base


def gap_intact(t):
    """Whether every element of ``t``'s buffer outside ``t`` still holds GAP (for in_place_layouts)."""
    buffer = buffer_of(t)
    return int((buffer == GAP).sum()) == buffer.numel() - t.numel()


def recorded_view(target):
    """A leaf that requires grad holding ``target``'s whole buffer, that leaf times one (recorded by
    autograd), and ``target``'s view of the product: ``target``'s layout for an in-place op under
    autograd, whose gradient then reaches the leaf."""
    leaf = buffer_of(target).detach().clone().requires_grad_()
    product = leaf * 1
    return leaf, product, product.as_strided(target.size(), target.stride(), target.storage_offset())


# Convolution results against a float64 reference, relative to the result's largest magnitude (a
# weight gradient sums thousands of products: its small entries carry the large ones' rounding).
RELATIVE_TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5}


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    scale = expected.abs().max().item() + 1e-30 if expected.numel() else 1.0
    assert actual.dtype == dtype and actual.shape == expected.shape, what
    torch.testing.assert_close(actual.double() / scale, expected / scale, rtol=0, atol=RELATIVE_TOLERANCES[dtype],
                               msg=lambda m: f"{what}: {m}")


def check_conv_against_torch(x, w, b, geometry: dict, dtype: torch.dtype, algorithm: str, fused: bool = False):
    """fastconv's conv2d (conv2d_relu if `fused`) with `algorithm` on the CPU backend, forward and
    every gradient, against torch's in float64 on the same values (assert_close_relative)."""
    # detach, not clone: a clone of a sliced tensor would be contiguous.
    ours = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    wide = [t.double().requires_grad_() for t in (x, w, b) if t is not None]
    with fastconv.backend("cpu"):
        y = (FF.conv2d_relu if fused else FF.conv2d)(*ours, *[None] * (3 - len(ours)), algorithm=algorithm,
                                                      **geometry)
    expected = F.conv2d(*wide, *[None] * (3 - len(wide)), **geometry)
    if fused:
        expected = expected.relu()
    assert_close_relative(y, expected, dtype, "forward")
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with fastconv.backend("cpu"):
        got = torch.autograd.grad(y, ours, grad.to(dtype))
    want = torch.autograd.grad(expected, wide, grad)
    for name, a, e in zip(("input", "weight", "bias"), got, want):
        assert_close_relative(a, e, dtype, f"grad {name}")


def on_each_thread_count(counts, compute):
    """compute() on each of `counts` CPU threads, in order; torch's thread count is restored after."""
    saved = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(compute())
        return results
    finally:
        torch.set_num_threads(saved)


def device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


@pytest.fixture(autouse=True)
def _float32_at_full_precision():
    """Every test's float32 convolutions and matrix products on CUDA tensors at full precision,
    ours and torch's references alike: torch.backends.cudnn.allow_tf32 is on by default, and
    TF32 differs from float32 by ~1e-3. The TF32 paths have their own tests (test_tensor_cores),
    which turn it on with TF32's tolerance."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def relu_reference(x: torch.Tensor, backend: str) -> torch.Tensor:
    """torch's ReLU of ``x`` as the backend's kernels define it. torch's CPU and CUDA ReLUs differ
    on -0.0 alone: the CPU's passes it, the GPU's gives +0.0. The CUDA kernels follow the GPU's,
    on the SIMT runtime too (where ``x`` and torch's reference are on the CPU)."""
    if backend == "simt":
        return torch.where(x <= 0, torch.zeros_like(x), x)  # NaN passes (NaN <= 0 is false)
    return F.relu(x)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test on each backend, inside ``fastconv.backend(name)``. On "simt" the test must
    launch at least one SIMT kernel (so nothing passes on the C++ kernels by mistake), unless it
    is marked ``launches_no_kernel`` (argument errors, empty tensors)."""
    before = sum(launch_counts().values())
    with fastconv.backend(request.param):
        yield request.param
    if request.param == "simt" and not request.node.get_closest_marker("launches_no_kernel"):
        assert sum(launch_counts().values()) > before, "the test ran no SIMT kernel"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and fastconv.cuda_compiled():
        return
    skip = pytest.mark.skip(reason="needs a GPU and a fastconv built with its CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


_DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items):
    config = items[0].config if items else None
    if config is not None:
        config.stash[_DESELECTED] = config.stash.get(_DESELECTED, 0) + len(items)


def pytest_collection_finish(session):
    """The kernel-coverage test asks what every other test launched: it goes last (after every
    plugin has filtered and ordered the items), and counts only when this session runs every
    test module with nothing deselected (no -k, -m, --lf, or a choice of files or tests)."""
    from test_zz_kernel_coverage import WHOLE_SUITE

    def is_coverage(item):
        return getattr(item, "module", None) is not None and item.module.__name__ == "test_zz_kernel_coverage"

    items = session.items
    items[:] = [i for i in items if not is_coverage(i)] + [i for i in items if is_coverage(i)]
    modules = {Path(item.path).name for item in items}
    every_module = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    options = session.config.option
    unfiltered = not (options.keyword or options.markexpr or options.deselect or getattr(options, "lf", False))
    nothing_deselected = session.config.stash.get(_DESELECTED, 0) == 0
    session.config.stash[WHOLE_SUITE] = unfiltered and nothing_deselected and modules == every_module
