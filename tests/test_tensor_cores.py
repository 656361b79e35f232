"""The im2col convolutions on tensor cores (mma.sync, emulated by the SIMT runtime here).

float16 and bfloat16 convolutions always multiply on tensor cores; float32 ones do when TF32 is
allowed (torch.backends.cudnn.allow_tf32 for CUDA tensors, ``fastconv.backend("simt",
allow_tf32=True)`` on the SIMT runtime), else on CUDA cores at full precision; float64 never.

Every result is compared with torch in float64, element by element, against a bound made of the
two errors the kernels may make: rounding the stored result once to its dtype (unit roundoff u
times the value) and accumulating K products in float32 (at most K * 2^-24 times the sum of the
products' magnitudes, computed by the same convolution on absolute values). The products
themselves are exact in float32: f16 and bf16 operands have 11 and 8 significant bits, tf32 ones
11, so each product fits in float32's 24. For TF32 the reference sees the inputs rounded to tf32
(round to nearest, ties away, as cvt.rna) and the bound is as tight as for float32, so a kernel
that truncated, or did not round at all, fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from conftest import device_of, kernels_on
import simt_kernels
from simt_kernels import expect_no_kernels

TENSOR_CORE_GEMM = "gemm_tensor_core_kernel"
BACKENDS = [b for b in fastconv.available_backends() if b in ("simt", "cuda")]
KERNEL_TYPE = {torch.float16: "half_t", torch.bfloat16: "bfloat16_t"}
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}

# Awkward on purpose: no GEMM dimension a multiple of the 64 x 64 x 32 tile, batch 1, groups,
# stride 2, dilation, a 1x1 convolution (its column matrix is the input itself), and one output
# channel count past a whole tile.
SHAPES = [
    dict(n=1, cin=5, cout=7, h=9, w=11, k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(n=2, cin=6, cout=10, h=13, w=10, k=3, stride=2, padding=1, dilation=2, groups=2),
    dict(n=1, cin=33, cout=65, h=10, w=9, k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(n=3, cin=8, cout=9, h=6, w=7, k=1, stride=1, padding=0, dilation=1, groups=1),
    dict(n=2, cin=9, cout=6, h=11, w=11, k=5, stride=2, padding=2, dilation=1, groups=3),
]
SHAPE_IDS = ["odd-batch1", "stride2-dilation2-groups2", "two-tiles-of-M", "1x1", "5x5-stride2-groups3"]


@pytest.fixture(params=BACKENDS)
def tc_backend(request):
    if request.param == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("tensor-core mma.sync needs sm_80 or newer")
    return request.param


@contextlib.contextmanager
def tf32_allowed(backend: str, allowed: bool):
    """The TF32 switch of each backend: torch's own flag for CUDA tensors, fastconv's for simt."""
    if backend == "simt":
        with fastconv.backend("simt", allow_tf32=allowed):
            yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        with fastconv.backend("cuda"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32 on finite float32 values: add half a tf32 unit to the magnitude bits, truncate."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _geometry(s):
    return dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"], groups=s["groups"])


def _reference(x, w, b, g, s):
    """conv2d and its three gradients in float64, on the given values."""
    x, w, b = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = F.conv2d(x, w, b, **_geometry(s))
    return (y.detach(), *torch.autograd.grad(y, (x, w, b), g.detach().double()))


def _terms(s, y_shape):
    """The most products any output element sums (the forward's patch, the gradients' pixels)."""
    n, _, p, q = y_shape
    patch = s["cin"] // s["groups"] * s["k"] ** 2
    return max(patch + 1, s["cout"] // s["groups"] * s["k"] ** 2, n * p * q)


def _assert_within_bound(name, ours, exact, magnitude, dtype, terms):
    acc = UNIT_ROUNDOFF[torch.float64 if dtype == torch.float64 else torch.float32]  # the accumulators'
    bound = UNIT_ROUNDOFF[dtype] * exact.abs() + terms * acc * magnitude + acc
    err = (ours.double() - exact).abs()
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{name}: error {err.max().item():.3g} exceeds its bound by {worst:.3g}x"


def _inputs(s, dtype, backend):
    device = device_of(backend)
    x = torch.randn(s["n"], s["cin"], s["h"], s["w"], device=device).to(dtype)
    w = torch.randn(s["cout"], s["cin"] // s["groups"], s["k"], s["k"], device=device).to(dtype)
    b = torch.randn(s["cout"], device=device).to(dtype)
    return x, w, b


def _check_half(backend, dtype, shape, kernels):
    """conv2d and its three gradients in dtype on tensor cores, within the bound, launching a
    kernel matching each of `kernels` (on simt)."""
    x, w, b = _inputs(shape, dtype, backend)
    with fastconv.backend(backend), kernels_on(backend, *kernels):
        x_, w_, b_ = (t.detach().requires_grad_() for t in (x, w, b))
        y = FF.conv2d(x_, w_, b_, **_geometry(shape), algorithm="im2col")
        g = torch.randn(y.shape, device=y.device).to(dtype)
        ours = (y.detach(), *torch.autograd.grad(y, (x_, w_, b_), g))
    exact = _reference(x, w, b, g, shape)
    magnitude = _reference(x.abs(), w.abs(), b.abs(), g.abs(), shape)
    terms = _terms(shape, y.shape)
    for name, o, e, m in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, exact, magnitude):
        assert o.dtype == dtype
        _assert_within_bound(name, o, e, m, dtype, terms)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_half_and_bfloat16_convolutions_run_on_tensor_cores(tc_backend, dtype, shape):
    _check_half(tc_backend, dtype, shape, [TENSOR_CORE_GEMM])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_on_the_wide_tensor_core_tile(dtype):
    # One multiprocessor (two blocks at a time). The forward (M = 70 channels by N = 156 pixels)
    # and the input gradient (M = 45 by 156; 5 input channels are too few to gather) fill four
    # and two 64 x 128 tiles in 2 and 1 rounds, where six and three 64 x 64 ones take 3 and 2,
    # at 22 against 32 shared-memory wavefronts an mma (gemm_tensor_core_wide). Nothing is a
    # whole tile: 70 and 45 rows, 156 columns, a 45-deep reduction on 16-deep slices. Both
    # operands arrive as quads along rows in the input gradient, so both are staged transposed
    # and read with ldmatrix.trans.
    shape = dict(n=2, cin=5, cout=70, h=13, w=12, k=3, stride=1, padding=1, dilation=1, groups=1)
    with simt_kernels.multiprocessors(1):
        _check_half("simt", dtype, shape, [f"{TENSOR_CORE_GEMM}<{KERNEL_TYPE[dtype]}, {KERNEL_TYPE[dtype]}, "
                                           "TensorCoreTile<64, 128, 16"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_small_half_problems_keep_the_narrow_tensor_core_tile(dtype):
    # The same convolution on 132 multiprocessors: every GEMM fits one round of either tile, and
    # a 64 x 128 block is estimated slower than a 64 x 64 one (8192 elements at 22 wavefronts an
    # mma against 4096 at 32).
    shape = dict(n=2, cin=5, cout=70, h=13, w=12, k=3, stride=1, padding=1, dilation=1, groups=1)
    with simt_kernels.multiprocessors(132), simt_kernels.expect_no_kernels("TensorCoreTile<64, 128"):
        _check_half("simt", dtype, shape, [f"{TENSOR_CORE_GEMM}<{KERNEL_TYPE[dtype]}, {KERNEL_TYPE[dtype]}, "
                                           "TensorCoreTile<64, 64, 32"])


@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_with_tf32_matches_float64_on_tf32_rounded_inputs(tc_backend, fused, shape):
    x, w, b = _inputs(shape, torch.float32, tc_backend)
    conv = FF.conv2d_relu if fused else FF.conv2d
    with tf32_allowed(tc_backend, True), kernels_on(tc_backend, TENSOR_CORE_GEMM):
        x_, w_, b_ = (t.detach().requires_grad_() for t in (x, w, b))
        y = conv(x_, w_, b_, **_geometry(shape), algorithm="im2col")
        g = torch.randn(y.shape, device=y.device)
        if fused:
            g = g * (y > 0)
        ours = (y.detach(), *torch.autograd.grad(y, (x_, w_, b_), g))
    # The GEMMs see tf32 operands: x and w forward, g and w for grad_input, g and x for
    # grad_weight. The bias and its gradient (a plain sum of g) stay float32.
    xr, wr, gr = round_to_tf32(x), round_to_tf32(w), round_to_tf32(g)
    y_exact, dx_exact, dw_exact, _ = _reference(xr, wr, b, gr, shape)
    db_exact = g.double().sum(dim=(0, 2, 3))
    if fused:
        y_exact = y_exact.relu()
    magnitude = _reference(x.abs(), w.abs(), b.abs(), g.abs(), shape)
    terms = _terms(shape, y.shape)
    exact = (y_exact, dx_exact, dw_exact, db_exact)
    for name, o, e, m in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, exact, magnitude):
        _assert_within_bound(name, o, e, m, torch.float32, terms)
    # And TF32 did happen: against the unrounded inputs the forward is off by far more than
    # float32 accumulation could explain.
    y_full = _reference(x, w, b, g, shape)[0]
    y_full = y_full.relu() if fused else y_full
    assert (ours[0].double() - y_full).abs().max() > 100 * (ours[0].double() - y_exact).abs().max()


@pytest.mark.parametrize("shape", SHAPES[:3], ids=SHAPE_IDS[:3])
def test_float32_without_tf32_stays_on_cuda_cores_at_full_precision(tc_backend, shape):
    x, w, b = _inputs(shape, torch.float32, tc_backend)
    no_tensor_cores = expect_no_kernels(TENSOR_CORE_GEMM) if tc_backend == "simt" else contextlib.nullcontext()
    with tf32_allowed(tc_backend, False), kernels_on(tc_backend, "gemm_kernel"), no_tensor_cores:
        x_, w_, b_ = (t.detach().requires_grad_() for t in (x, w, b))
        y = FF.conv2d(x_, w_, b_, **_geometry(shape), algorithm="im2col")
        g = torch.randn(y.shape, device=y.device)
        ours = (y.detach(), *torch.autograd.grad(y, (x_, w_, b_), g))
    exact = _reference(x, w, b, g, shape)
    magnitude = _reference(x.abs(), w.abs(), b.abs(), g.abs(), shape)
    terms = _terms(shape, y.shape)
    for name, o, e, m in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, exact, magnitude):
        _assert_within_bound(name, o, e, m, torch.float32, terms)


def test_float64_never_runs_on_tensor_cores():
    s = SHAPES[0]
    x, w, b = (t.double() for t in _inputs(s, torch.float32, "simt"))
    with fastconv.backend("simt", allow_tf32=True), expect_no_kernels(TENSOR_CORE_GEMM):
        y = FF.conv2d(x, w, b, **_geometry(s), algorithm="im2col")
    torch.testing.assert_close(y, F.conv2d(x, w, b, **_geometry(s)), rtol=1e-12, atol=1e-12)


def test_the_tf32_switch_belongs_to_the_simt_backend():
    with pytest.raises(ValueError, match="allow_tf32 is a switch of the 'simt' backend"):
        with fastconv.backend("cpu", allow_tf32=True):
            pass
    with fastconv.backend("simt", allow_tf32=True):
        assert fastconv.current_backend() == "simt:tf32"
    assert fastconv.current_backend() == "auto"


def test_tf32_choice_reaches_the_backward_pass_after_the_block_closes():
    s = SHAPES[0]
    x, w, b = (t.requires_grad_() for t in _inputs(s, torch.float32, "simt"))
    with fastconv.backend("simt", allow_tf32=True):
        y = FF.conv2d(x, w, b, **_geometry(s), algorithm="im2col")
    with kernels_on("simt", TENSOR_CORE_GEMM):
        y.sum().backward()


def test_opcheck_and_compile_with_tf32():
    ops = torch.ops.fastconv
    s = SHAPES[1]
    x, w, b = _inputs(s, torch.float32, "simt")
    geometry = ([2, 2], [1, 1, 1, 1], [2, 2], 2, "im2col", "simt:tf32")
    y = ops.conv2d(x, w, b, *geometry)
    g = torch.randn_like(y)
    with kernels_on("simt", TENSOR_CORE_GEMM):
        torch.library.opcheck(ops.conv2d.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(),
                                                   *geometry))
        torch.library.opcheck(ops.conv2d_backward_input.default, (g, w.detach(), list(x.shape), *geometry))
        torch.library.opcheck(ops.conv2d_backward_weight.default, (g, x.detach(), list(w.shape), *geometry))

    def fn(x_, w_, b_):
        return FF.conv2d(x_, w_, b_, **_geometry(s), algorithm="im2col")

    with fastconv.backend("simt", allow_tf32=True), kernels_on("simt", TENSOR_CORE_GEMM):
        eager = fn(x.detach(), w.detach(), b.detach())
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(x.detach(), w.detach(), b.detach())
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


def test_half_and_bfloat16_use_the_cuda_core_gemm_before_sm80():
    # The float16/bfloat16 tests of the CUDA-core GEMM, rerun as on a GPU without tensor cores (a
    # switch read once per process, hence a subprocess).
    launches = simt_kernels.run_tests_in_subprocess(
        ["-k", "simt or large_tile", "tests/test_simt_kernel_variants.py::test_im2col_gemm_large_tile",
         "tests/test_half_precision.py::test_conv2d_forward_and_gradients"], FASTCONV_SIMT_ARCH="75")
    for t in ("half_t", "bfloat16_t"):
        for tile in ("GemmTile<64, 64", "GemmTile<128, 128"):
            assert simt_kernels.launched(launches, f"gemm_kernel<{t}, {t}, {tile}"), (t, tile)
        assert simt_kernels.launched(launches, f"gemm_kernel<{t}, float, GemmTile<64, 64"), t  # grad_input
        # 16-bit GEMMs on CUDA cores unfold their columns (the gathering kernels are float and double).
        assert simt_kernels.launched(launches, f"im2col_kernel<{t}"), t
        assert not any(f"<{t}" in k and GATHER in k for k in launches), t
    assert not simt_kernels.launched(launches, TENSOR_CORE_GEMM)


# --------------------------------------------------------------------------- gathered columns
# On tensor cores, and on CUDA cores in float32 and float64, the im2col forward and weight
# gradient gather their column matrix from the input inside the GEMM's loader
# (csrc/cuda/gemm_im2col_gather.cuh) and unfold nothing; at stride 1 the input gradient gathers
# grad_output the same way and writes grad_input without col2im, where the input channels of a
# group pay for the GEMM's rows (input_gradient_gathers). These geometries aim at the loaders'
# index stepping: output rows of 1, 2 and 3 pixels
# (a quad of 4 pixels wraps across several rows, and in the weight gradient into the next
# image), P*Q and H*W not multiples of 4 (a quad runs past the last pixel), padding wider than
# the kernel's half, stride 3, dilation 3, rectangular kernels and strides, 3 input channels,
# groups, enough pixels and patch for several tiles and slices, and 48 and 64 channels a group
# (the CUDA-core input gradient gathers from 48).
GATHER = "Im2colGather"
GATHER_SHAPES = [
    dict(n=2, cin=8, cout=5, h=7, w=3, k=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
    dict(n=3, cin=9, cout=3, h=5, w=6, k=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 2), groups=1),
    dict(n=1, cin=4, cout=6, h=6, w=5, k=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 1), groups=2),
    dict(n=3, cin=6, cout=9, h=9, w=8, k=(3, 3), stride=(3, 2), padding=(3, 2), dilation=(1, 2), groups=3),
    dict(n=1, cin=40, cout=8, h=11, w=10, k=(3, 1), stride=(1, 1), padding=(4, 0), dilation=(3, 1), groups=1),
    dict(n=2, cin=5, cout=70, h=13, w=12, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(n=2, cin=24, cout=12, h=5, w=7, k=(2, 4), stride=(1, 1), padding=(3, 2), dilation=(2, 1), groups=3),
    dict(n=2, cin=3, cout=7, h=6, w=9, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(n=2, cin=64, cout=6, h=5, w=7, k=(3, 3), stride=(1, 1), padding=(2, 1), dilation=(1, 1), groups=1),
    dict(n=1, cin=96, cout=4, h=4, w=6, k=(3, 2), stride=(1, 1), padding=(1, 1), dilation=(2, 1), groups=2),
]
GATHER_IDS = ["Q1", "Q2-dilation-batch3", "Q3-rect-groups2", "stride3-pad3-groups3", "pad4-dilation3-K120-PQ130",
              "70x156", "even-kernel-pad3-groups3", "rgb", "64-channels", "48-channels-groups2"]
GATHER_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "tf32": torch.float32}


def input_gradient_gathers(s, tensor_cores: bool) -> bool:
    """Mirrors im2col_gathers_input_gradient: at stride 1, with 8 or more input channels a group
    on tensor cores, and on CUDA cores where they fill 3/4 of their 64-row tiles."""
    cg = s["cin"] // s["groups"]
    rows_pay = cg >= 8 if tensor_cores else 4 * cg >= 3 * -(-cg // 64) * 64
    return s["stride"] == (1, 1) and rows_pay


def _gather_passes(s, dtype, relu=False, tf32=True):
    """Our output, input gradient and weight gradient on the simt backend (TF32 allowed unless
    `tf32` is false), their float64 references and magnitudes (the same convolutions on absolute
    values). Under TF32 the references see float32 operands rounded, as the tensor cores round
    them: x and w forward, g and w for dX, g and x for dW."""
    x = torch.randn(s["n"], s["cin"], s["h"], s["w"]).to(dtype)
    w = torch.randn(s["cout"], s["cin"] // s["groups"], *s["k"]).to(dtype)
    b = torch.randn(s["cout"]).to(dtype)
    conv = FF.conv2d_relu if relu else FF.conv2d
    with fastconv.backend("simt", allow_tf32=tf32):
        x_, w_ = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(x_, w_, b, **_geometry(s), algorithm="im2col")
        g = torch.randn(y.shape).to(dtype) * (y > 0) if relu else torch.randn(y.shape).to(dtype)
        dx, dw = torch.autograd.grad(y, (x_, w_), g)
    rounded = round_to_tf32 if dtype == torch.float32 and tf32 else (lambda t: t)

    def reference(x, w, b, g):
        x, w = x.double().requires_grad_(), w.double().requires_grad_()
        out = F.conv2d(x, w, b.double(), **_geometry(s))
        out = out.relu() if relu else out
        return (out.detach(), *torch.autograd.grad(out, (x, w), g.double()))

    exact = (reference(rounded(x), rounded(w), b, g)[0], reference(x, rounded(w), b, rounded(g))[1],
             reference(rounded(x), w, b, rounded(g))[2])
    magnitude = reference(x.abs(), w.abs(), b.abs(), g.abs())
    return (y.detach(), dx, dw), exact, magnitude


def _check_gathered(s, dtype, relu=False, tf32=True):
    ours, exact, magnitude = _gather_passes(s, dtype, relu, tf32)
    kh, kw = s["k"]
    terms = (s["cin"] // s["groups"] * kh * kw + 1, s["cout"] // s["groups"] * kh * kw,
             s["n"] * exact[0].shape[2] * exact[0].shape[3])
    for name, o, e, m, t in zip(("output", "grad_input", "grad_weight"), ours, exact, magnitude, terms):
        assert o.dtype == dtype and o.shape == e.shape
        _assert_within_bound(name, o, e, m, dtype, t)
    return ours


@pytest.mark.parametrize("sms", [1, 132])
@pytest.mark.parametrize("dtype", list(GATHER_DTYPES), ids=list(GATHER_DTYPES))
@pytest.mark.parametrize("shape", GATHER_SHAPES, ids=GATHER_IDS)
def test_simt_tensor_core_passes_gather_their_columns(shape, dtype, sms):
    # Where the input gradient gathers, no pass unfolds or folds a column matrix; elsewhere the
    # input gradient still writes its column gradient and folds it with col2im.
    input_gradient = expect_no_kernels("col2im_kernel") if input_gradient_gathers(shape, True) else \
        simt_kernels.expect_kernels("col2im_kernel")
    t = {"float16": "half_t", "bfloat16": "bfloat16_t", "tf32": "float"}[dtype]
    gemm = f"{TENSOR_CORE_GEMM}<{t}"
    with simt_kernels.multiprocessors(sms), input_gradient, expect_no_kernels("im2col_kernel", "gemm_kernel<"), \
            simt_kernels.expect_kernels(f"{gemm}, {t}, TensorCoreTile", "Im2colGatherForward", "Im2colGatherWgrad"):
        _check_gathered(shape, GATHER_DTYPES[dtype])


@pytest.mark.parametrize("sms", [1, 132])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", GATHER_SHAPES, ids=GATHER_IDS)
def test_simt_cuda_core_passes_gather_their_columns(shape, dtype, sms):
    # float32 with TF32 off and float64 multiply on CUDA cores, gathering as the tensor cores do;
    # their input gradient gathers only where 48 or more channels a group fill its rows.
    input_gradient = expect_no_kernels("col2im_kernel") if input_gradient_gathers(shape, False) else \
        simt_kernels.expect_kernels("col2im_kernel")
    t = "float" if dtype == torch.float32 else "double"
    with simt_kernels.multiprocessors(sms), input_gradient, expect_no_kernels("im2col_kernel", TENSOR_CORE_GEMM), \
            simt_kernels.expect_kernels(f"gemm_kernel<{t}, {t}, GemmTile", "Im2colGatherForward", "Im2colGatherWgrad"):
        _check_gathered(shape, dtype, tf32=False)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "tf32", "float32", "float64"])
def test_simt_gathered_input_gradient_splits_its_reduction_to_fill_the_gpu(dtype, groups):
    # 64 input channels a group @8x7: the gathered input gradient's GEMM (64 x 56 outputs a
    # problem) has one tile a problem for 132 multiprocessors, so its reduction (576 long with
    # 64 output channels, 288 with 32 a group over two images) runs in split ranges whose
    # partials one pass adds into grad_input (in split order); no column gradient, no col2im.
    n, cin, cout, h, w = (1, 64, 64, 8, 7) if groups == 1 else (2, 128, 64, 8, 7)
    real = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}.get(dtype, torch.float32)
    tf32 = dtype == "tf32"
    g = torch.randn(n, cout, h, w).to(real)
    wt = torch.randn(cout, cin // groups, 3, 3).to(real)
    geo = ([1, 1], [1] * 4, [1, 1], groups)
    with simt_kernels.multiprocessors(132), expect_no_kernels("col2im_kernel"), \
            simt_kernels.expect_kernels("Im2colGatherForward", "conv2d_reduce_partials_kernel"):
        dx = torch.ops.fastconv.conv2d_backward_input(g, wt, [n, cin, h, w], *geo, "im2col",
                                                      "simt:tf32" if tf32 else "simt")
    rounded = round_to_tf32 if tf32 else (lambda t: t)
    x0, b0, s = torch.zeros(n, cin, h, w), torch.zeros(cout), dict(stride=1, padding=1, dilation=1, groups=groups)
    exact, magnitude = (_reference(x0, w_, b0, g_, s)[1] for w_, g_ in ((rounded(wt), rounded(g)), (wt.abs(), g.abs())))
    assert dx.dtype == real
    _assert_within_bound("grad_input", dx, exact, magnitude, real, cout // groups * 9)


# On one multiprocessor: 64 output channels over 576 pixels take the 64 x 256 tile (float only),
# 128 channels over 256 pixels and a 252-element patch the 128 x 128 tile; the small shapes
# above take the 64 x 64 one.
_WIDE = dict(n=1, cin=2, cout=64, h=24, w=24, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
_LARGE = dict(n=1, cin=28, cout=128, h=16, w=16, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
_LARGE_KERNELS = ["GemmTile<128, 128, 8, 8, 8>, Im2colGatherForward", "GemmTile<128, 128, 8, 8, 8>, Im2colGatherWgrad"]


@pytest.mark.parametrize("shape, dtype, kernels", [
    (_WIDE, torch.float32, ["GemmTile<64, 256, 4, 8, 8>, Im2colGatherForward"]),
    (_LARGE, torch.float32, _LARGE_KERNELS),
    (_LARGE, torch.float64, _LARGE_KERNELS),
], ids=["wide-float32", "large-float32", "large-float64"])
def test_simt_cuda_core_gathers_on_the_wide_and_large_tiles(shape, dtype, kernels):
    t = "float" if dtype == torch.float32 else "double"
    with simt_kernels.multiprocessors(1), simt_kernels.expect_kernels(*(f"gemm_kernel<{t}, {t}, {k}" for k in kernels)):
        _check_gathered(shape, dtype, tf32=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_simt_gathered_forward_on_the_wide_tile_with_relu(dtype):
    # One multiprocessor puts the 70 x 156 forward on the 64 x 128 tile (see
    # test_half_and_bfloat16_on_the_wide_tensor_core_tile); conv2d_relu clamps in its epilogue.
    with simt_kernels.multiprocessors(1), \
            simt_kernels.expect_kernels("TensorCoreTile<64, 128, 16, 2, 4, 2>, Im2colGatherForward"):
        y, _, _ = _check_gathered(GATHER_SHAPES[5], dtype, relu=True)
    assert (y >= 0).all() and (y == 0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_simt_gathered_weight_gradient_in_split_ranges_over_chunks_of_images(dtype):
    # 4 images of 24 x 24 pixels on 8 multiprocessors: the 2304-long reduction is split into
    # ranges (split-K) whose bounds fall inside images and rows. A 40 KiB column-buffer cap
    # (FASTCONV_COLUMN_BUFFER_BYTES, in a subprocess: it is read once) does not chunk the
    # gathered weight gradient, which has no column buffer; the input gradient still unfolds.
    script = f"""
import sys, torch
sys.path.insert(0, "tests")
import simt_kernels, test_tensor_cores as t
s = dict(n=4, cin=2, cout=4, h=24, w=24, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
before = simt_kernels.launch_counts()
with simt_kernels.multiprocessors(8), simt_kernels.expect_kernels("Im2colGatherWgrad", "conv2d_reduce_partials"):
    t._check_gathered(s, torch.{str(dtype).split(".")[1]})
names = simt_kernels.kernels_built()
launches = {{names[o]: n - before.get(o, 0) for o, n in simt_kernels.launch_counts().items() if n > before.get(o, 0)}}
assert sum(n for k, n in launches.items() if "Im2colGatherWgrad" in k) == 1, launches
print("ok")
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
                            env=dict(os.environ, FASTCONV_COLUMN_BUFFER_BYTES=str(40 << 10)))
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["float16", "float32"])
def test_simt_1x1_convolutions_read_the_input_as_their_columns(dtype):
    # A 1x1 stride-1 convolution's columns are the input itself: nothing to gather or unfold, on
    # tensor cores (float16) or CUDA cores (float32 without TF32).
    x1, w1 = torch.randn(2, 8, 5, 7).to(dtype), torch.randn(6, 8, 1, 1).to(dtype).requires_grad_()
    with fastconv.backend("simt"), expect_no_kernels(GATHER, "im2col_kernel"):
        y1 = FF.conv2d(x1, w1, algorithm="im2col")
        y1.sum().backward()
    torch.testing.assert_close(y1.double(), F.conv2d(x1.double(), w1.double()), rtol=2e-3, atol=2e-3)
