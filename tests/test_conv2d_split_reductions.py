"""The convolution's split reductions on the SIMT runtime, against torch: the im2col weight
gradient's split-K (reduction ranges over images and pixels, partials added in a fixed order)
and the bias gradient's (channel, range) partials. Awkward shapes, every dtype, and the same
bits on a rerun (no atomics: the order of the sums is fixed by the launch shape)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from simt_kernels import (expect_kernels, expect_no_kernels, launched, multiprocessors, run_tests_in_subprocess,
                          simt_has_tensor_cores)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KERNEL_TYPE = {torch.float32: "float", torch.float64: "double", torch.float16: "half_t",
               torch.bfloat16: "bfloat16_t"}
ACC_TYPE = {torch.float32: "float", torch.float64: "double", torch.float16: "float", torch.bfloat16: "float"}
# Relative to the largest magnitude of the float64 reference.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 4e-3, torch.bfloat16: 3e-2}

# (input shape, weight shape, geometry); each weight-gradient reduction (batch * P * Q) is long
# enough for several 128-index ranges, and its few output tiles ask for many.
SPLIT_K_CASES = {
    "batch1-odd": ((1, 6, 41, 37), (5, 6, 3, 3), dict(padding=1)),
    "stride2": ((4, 3, 33, 35), (5, 3, 3, 3), dict(stride=2)),
    "groups-dilation": ((2, 8, 25, 23), (6, 4, 3, 3), dict(padding=2, dilation=2, groups=2)),
    "many-ranges": ((8, 2, 32, 32), (3, 2, 3, 3), dict(padding=1)),
}


@pytest.fixture(autouse=True)
def _simt():
    with fastconv.backend("simt"):
        yield


def _close(ours, expected, dtype):
    scale = expected.abs().max().item() + 1e-12
    torch.testing.assert_close(ours.double() / scale, expected.double() / scale, rtol=0, atol=TOLERANCE[dtype])


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _weight_and_bias_grads(x, w, b, g, **geometry):
    y = FF.conv2d(x, w, b, algorithm="im2col", **geometry)
    return torch.autograd.grad(y, (w, b), g)


def _operands(case, dtype):
    """Input, weight, bias and grad_output of a case in `dtype`, and torch's float64 weight and
    bias gradients for the same values."""
    x_shape, w_shape, geometry = case
    x = torch.randn(x_shape).to(dtype)
    w = torch.randn(w_shape).to(dtype).requires_grad_()
    b = torch.randn(w_shape[0]).to(dtype).requires_grad_()
    wide = [t.detach().double().requires_grad_() for t in (x, w, b)]
    expected = F.conv2d(*wide, **geometry)
    g = torch.randn(expected.shape).to(dtype)
    return (x, w, b, g), torch.autograd.grad(expected, wide[1:], g.double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPLIT_K_CASES.values(), ids=SPLIT_K_CASES.keys())
def test_im2col_weight_gradient_split_k(dtype, case):
    operands, (dw_ref, db_ref) = _operands(case, dtype)
    t, acc = KERNEL_TYPE[dtype], ACC_TYPE[dtype]
    # Partials in the accumulation type (the split GEMM's C has it), added into grad_weight by the
    # fixed-order pass; float16 and bfloat16 multiply on tensor cores (where the emulated GPU has
    # them).
    on_tensor_cores = dtype in (torch.float16, torch.bfloat16) and simt_has_tensor_cores()
    gemm = (f"gemm_tensor_core_kernel<{t}, {acc}, TensorCoreTile<64, 64, 32, 2, 4, 2>, Im2colGatherWgrad" if on_tensor_cores
            else f"gemm_kernel<{t}, {acc}, GemmTile<64, 64, 8, 4, 4>, Im2colGatherWgrad")
    with expect_kernels(gemm, f"conv2d_reduce_partials_kernel<{t}, {t}>"):
        dw, db = _weight_and_bias_grads(*operands, **case[2])
    _close(dw, dw_ref, dtype)
    _close(db, db_ref, dtype)


@pytest.mark.parametrize("case", SPLIT_K_CASES.values(), ids=SPLIT_K_CASES.keys())
def test_im2col_weight_gradient_split_k_on_tf32_tensor_cores(case):
    # float32 under TF32: the split ranges run on the tensor-core GEMM. Inputs rounded to a
    # 10-bit mantissa (relative error 2^-11 each) bound the error near 2^-10 of the largest
    # magnitude on these short reductions.
    operands, (dw_ref, _) = _operands(case, torch.float32)
    with fastconv.backend("simt", allow_tf32=True), expect_kernels(
            "gemm_tensor_core_kernel<float, float", "conv2d_reduce_partials_kernel<float, float>"):
        dw, _ = _weight_and_bias_grads(*operands, **case[2])
    scale = dw_ref.abs().max().item()
    torch.testing.assert_close(dw.double() / scale, dw_ref / scale, rtol=0, atol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_reductions_give_the_same_bits_twice(dtype):
    case = SPLIT_K_CASES["many-ranges"]  # 64 weight-gradient ranges, 8 bias ranges
    operands, _ = _operands(case, dtype)
    first = _weight_and_bias_grads(*operands, **case[2])
    second = _weight_and_bias_grads(*operands, **case[2])
    for a, c in zip(first, second):
        assert torch.equal(_bits(a), _bits(c)), "not bit-identical"


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_agrees_with_torch_on_any_device_size(dtype):
    # One multiprocessor asks for one wave of one tile: a range per block the GEMM keeps on it
    # (one or two); 132 ask for as many as the reduction allows (64). Both sum the same terms in
    # different groupings.
    case = SPLIT_K_CASES["many-ranges"]
    operands, (dw_ref, _) = _operands(case, dtype)
    with multiprocessors(1):
        few = _weight_and_bias_grads(*operands, **case[2])[0]
    many = _weight_and_bias_grads(*operands, **case[2])[0]
    _close(few, dw_ref, dtype)
    _close(many, dw_ref, dtype)


# Bias gradients: (grad_output shape); N * P * Q of several 1,024-element ranges, ragged ends,
# ranges that start inside an image.
BIAS_CASES = {"odd-sizes": (3, 5, 47, 61), "batch1": (1, 3, 130, 131),
              "one-channel": (2, 1, 97, 89)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BIAS_CASES.values(), ids=BIAS_CASES.keys())
def test_bias_gradient_in_ranges(dtype, shape):
    dy = torch.randn(shape).to(dtype)
    t = KERNEL_TYPE[dtype]
    with expect_kernels(f"conv2d_backward_bias_kernel<{t}>", f"conv2d_reduce_partials_kernel<{t}, {t}>"):
        db = torch.ops.fastconv.conv2d_backward_bias(dy, "simt")
    _close(db, dy.double().sum(dim=(0, 2, 3)), dtype)
    assert torch.equal(_bits(db), _bits(torch.ops.fastconv.conv2d_backward_bias(dy, "simt"))), "not bit-identical"


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gradient_of_a_short_reduction_in_one_pass(dtype):
    dy = torch.randn(2, 7, 5, 3).to(dtype)
    with expect_kernels(f"conv2d_backward_bias_kernel<{KERNEL_TYPE[dtype]}>"):
        db = torch.ops.fastconv.conv2d_backward_bias(dy, "simt")
    _close(db, dy.double().sum(dim=(0, 2, 3)), dtype)


# Forwards whose GEMM tiles fill under a wave of the 132-multiprocessor default: (input shape,
# weight shape, geometry). Their reductions over Cg*R*S hold two or more 128-index ranges, so
# they are split, and the partials' pass adds the bias (and the ReLU).
SPLIT_FORWARD_CASES = {
    "batch1-odd": ((1, 48, 13, 11), (10, 48, 3, 3), dict(padding=1)),
    "stride2-dilation": ((2, 40, 17, 19), (7, 40, 3, 3), dict(stride=2, padding=3, dilation=2)),
    "groups": ((1, 64, 9, 9), (12, 32, 3, 3), dict(padding=1, groups=2)),
    "1x1": ((3, 256, 5, 6), (9, 256, 1, 1), dict()),
    "5x5": ((1, 12, 12, 10), (4, 12, 5, 5), dict(padding=2)),
    # 1x1 at stride 2 unfolds 4 KiB of float columns an image: in an 8 KiB column buffer with the
    # gathers off (test_im2col_forward_split_k_over_chunks_of_images) it runs chunks of 2 and 1.
    "chunks": ((3, 256, 3, 3), (5, 256, 1, 1), dict(stride=2)),
}


def _forward_operands(case, dtype):
    x_shape, w_shape, geometry = case
    x, w, b = torch.randn(x_shape).to(dtype), torch.randn(w_shape).to(dtype), torch.randn(w_shape[0]).to(dtype)
    return (x, w, b), F.conv2d(x.double(), w.double(), b.double(), **geometry)


def _forward(x, w, b, relu=False, **geometry):
    conv = FF.conv2d_relu if relu else FF.conv2d
    return conv(x, w, b, algorithm="im2col", **geometry)


@pytest.mark.parametrize("relu", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPLIT_FORWARD_CASES.values(), ids=SPLIT_FORWARD_CASES.keys())
def test_im2col_forward_split_k_adds_bias_and_relu_in_its_second_pass(case, dtype, relu):
    (x, w, b), expected = _forward_operands(case, dtype)
    if relu:
        expected = expected.relu()
    with expect_kernels(f"conv2d_reduce_forward_partials_kernel<{KERNEL_TYPE[dtype]}>"):
        y = _forward(x, w, b, relu, **case[2])
    assert y.dtype == dtype and y.shape == expected.shape
    _close(y, expected, dtype)
    if relu:
        assert (y >= 0).all() and (y == 0).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_forward_split_k_without_bias(dtype):
    x_shape, w_shape, geometry = SPLIT_FORWARD_CASES["batch1-odd"]
    x, w = torch.randn(x_shape).to(dtype), torch.randn(w_shape).to(dtype)
    with expect_kernels("conv2d_reduce_forward_partials_kernel"):
        y = _forward(x, w, None, **geometry)
    _close(y, F.conv2d(x.double(), w.double(), **geometry), dtype)


def test_im2col_forward_split_k_on_tf32_tensor_cores():
    (x, w, b), expected = _forward_operands(SPLIT_FORWARD_CASES["batch1-odd"], torch.float32)
    with fastconv.backend("simt", allow_tf32=True), expect_kernels(
            "gemm_tensor_core_kernel<float, float", "conv2d_reduce_forward_partials_kernel<float>"):
        y = _forward(x, w, b, padding=1)
    scale = expected.abs().max().item()
    torch.testing.assert_close(y.double() / scale, expected / scale, rtol=0, atol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_forward_split_k_gives_the_same_bits_twice_and_agrees_unsplit(dtype):
    # One multiprocessor: the tiles fill its two block slots, so the forward runs whole (bias and
    # ReLU in the GEMM's epilogue); 132 split it. Both agree with torch; each rerun is bit-identical.
    case = SPLIT_FORWARD_CASES["stride2-dilation"]
    (x, w, b), expected = _forward_operands(case, dtype)
    with expect_kernels("conv2d_reduce_forward_partials_kernel"):
        first, second = (_forward(x, w, b, True, **case[2]) for _ in range(2))
    assert torch.equal(_bits(first), _bits(second)), "not bit-identical"
    with multiprocessors(1), expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
        whole = _forward(x, w, b, True, **case[2])
    _close(first, expected.relu(), dtype)
    _close(whole, expected.relu(), dtype)


def test_im2col_forward_of_a_short_reduction_stays_whole():
    # 3 input channels, 3x3: a 27-long reduction is shorter than one 128-index range.
    x, w, b = torch.randn(1, 3, 10, 10), torch.randn(8, 3, 3, 3), torch.randn(8)
    with expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
        y = _forward(x, w, b, padding=1)
    _close(y, F.conv2d(x.double(), w.double(), b.double(), padding=1), torch.float32)


def test_im2col_forward_split_k_over_chunks_of_images():
    # Unfolded columns (FASTCONV_IM2COL_GATHER=0) in an 8 KiB buffer (FASTCONV_COLUMN_BUFFER_BYTES;
    # both are read once, so in a subprocess): the "chunks" case runs float chunks of 2 and 1
    # images, each split, its partials in room sized for the larger; every case still matches.
    launches = run_tests_in_subprocess(
        ["tests/test_conv2d_split_reductions.py", "-k", "test_im2col_forward_split_k_adds_bias_and_relu"],
        FASTCONV_IM2COL_GATHER="0", FASTCONV_COLUMN_BUFFER_BYTES=str(8 << 10))
    assert launched(launches, "im2col_kernel<float")
    assert not launched(launches, "Im2colGatherForward")
    assert launched(launches, "conv2d_reduce_forward_partials_kernel<float>")


# GEMMs of per-image problems that fill between one and two waves of block slots: the images of
# the first wave run whole, the others in reduction ranges that fill the second (a tail split).
# One multiprocessor holds two blocks of every GEMM but the double one (one), so these run on
# two block slots: (input shape, weight shape, geometry, multiprocessors for float32). Their
# reductions (128 channels, 3x3: 1152 long) pay for the partials of two ranges.
# "one-tile": 3 images of one tile each, 2 whole and 1 in 2 ranges;
# "groups": 2 tiles an image on 4 slots, 2 images whole and 1 in 2 ranges;
# "stride2-dilation": odd sizes, one tile an image.
TAIL_SPLIT_FORWARD_CASES = {
    "one-tile": ((3, 128, 8, 8), (8, 128, 3, 3), dict(), 1),
    "groups": ((3, 256, 7, 7), (8, 128, 3, 3), dict(groups=2), 2),
    "stride2-dilation": ((3, 128, 13, 11), (7, 128, 3, 3), dict(stride=2, padding=2, dilation=2), 1),
}


# The split images' partials have the result's type, so only float and double results split a tail.
TAIL_DTYPES = [torch.float32, torch.float64]


def _slots(multiprocessors_for_float: int, dtype) -> int:
    """Multiprocessors that give a GEMM of `dtype` the block slots the float32 case has."""
    return multiprocessors_for_float * (2 if dtype == torch.float64 else 1)


@pytest.mark.parametrize("relu", [False, True], ids=["conv2d", "conv2d_relu"])
@pytest.mark.parametrize("dtype", TAIL_DTYPES)
@pytest.mark.parametrize("case", TAIL_SPLIT_FORWARD_CASES.values(), ids=TAIL_SPLIT_FORWARD_CASES.keys())
def test_im2col_forward_tail_split_matches_torch_and_keeps_whole_images_exact(case, dtype, relu):
    x_shape, w_shape, geometry, sms = case
    (x, w, b), expected = _forward_operands(case[:3], dtype)
    if relu:
        expected = expected.relu()
    with multiprocessors(_slots(sms, dtype)):
        with expect_kernels(f"conv2d_reduce_forward_partials_kernel<{KERNEL_TYPE[dtype]}>"):
            y = _forward(x, w, b, relu, **geometry)
        # The first wave's images alone fill it exactly, so they run whole: the split launch
        # computed them the same way, bit for bit.
        with expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
            head = _forward(x[:2], w, b, relu, **geometry)
    _close(y, expected, dtype)
    assert torch.equal(_bits(y[:2]), _bits(head)), "the whole images differ from an unsplit run"
    with multiprocessors(_slots(sms, dtype)):
        again = _forward(x, w, b, relu, **geometry)
    assert torch.equal(_bits(y), _bits(again)), "not bit-identical"


def test_im2col_forward_tail_split_on_tf32_tensor_cores():
    x_shape, w_shape, geometry, sms = TAIL_SPLIT_FORWARD_CASES["groups"]
    (x, w, b), expected = _forward_operands(TAIL_SPLIT_FORWARD_CASES["groups"][:3], torch.float32)
    with fastconv.backend("simt", allow_tf32=True), multiprocessors(sms):
        with expect_kernels("gemm_tensor_core_kernel<float, float", "conv2d_reduce_forward_partials_kernel<float>"):
            y = _forward(x, w, b, **geometry)
        with expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
            head = _forward(x[:2], w, b, **geometry)
    scale = expected.abs().max().item()
    torch.testing.assert_close(y.double() / scale, expected / scale, rtol=0, atol=2e-3)
    assert torch.equal(_bits(y[:2]), _bits(head)), "the whole images differ from an unsplit run"


def test_im2col_forward_tail_split_with_unfolded_columns():
    # The GEMM on unfolded columns (FASTCONV_IM2COL_GATHER=0, read once, so in a subprocess) splits
    # its tail the same way.
    launches = run_tests_in_subprocess(
        ["tests/test_conv2d_split_reductions.py", "-k", "test_im2col_forward_tail_split_matches_torch"],
        FASTCONV_IM2COL_GATHER="0")
    assert launched(launches, "im2col_kernel<float")
    assert not launched(launches, "Im2colGatherForward")
    assert launched(launches, "conv2d_reduce_forward_partials_kernel<float>")


# Ranges that do not divide the reduction, and a first-wave slot the whole image leaves free: 2
# images of 3 wide tiles (130 output channels, 153 pixels) on 4 slots (two multiprocessors) run
# 1 whole and 1 in 3 ranges (768, 768 and 714) of a 2250-long reduction.
def test_im2col_forward_tail_split_with_a_free_slot_and_ragged_ranges():
    x, w = torch.randn(2, 250, 17, 9), torch.randn(130, 250, 3, 3)
    with multiprocessors(2), expect_kernels("GemmTile<64, 256", "conv2d_reduce_forward_partials_kernel"):
        y = _forward(x, w, None, padding=1)
    # The first image alone, unsplit on the same tile: on two slots its 3 tiles take two rounds
    # whole, and no image would be left to split.
    with multiprocessors(1), expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
        head = _forward(x[:1], w, None, padding=1)
    _close(y, F.conv2d(x.double(), w.double(), padding=1), torch.float32)
    assert torch.equal(_bits(y[:1]), _bits(head)), "the whole image differs from an unsplit run"


# The gathering input gradient (stride 1, 64 input channels a group fill the GEMM's rows): 3
# images of one tile each, over a 1152-long reduction (128 output channels, 3x3).
TAIL_SPLIT_INPUT_GRADIENT_CASES = {
    "padded": ((3, 64, 6, 6), (128, 64, 3, 3), dict(padding=1), 1),
    "odd-unpadded": ((3, 64, 7, 5), (128, 64, 3, 3), dict(), 1),
}


@pytest.mark.parametrize("math", ["float32", "float64", "tf32"])
@pytest.mark.parametrize("case", TAIL_SPLIT_INPUT_GRADIENT_CASES.values(),
                         ids=TAIL_SPLIT_INPUT_GRADIENT_CASES.keys())
def test_im2col_input_gradient_tail_split_matches_torch(case, math):
    x_shape, w_shape, geometry, sms = case
    dtype = torch.float64 if math == "float64" else torch.float32
    x, w = torch.randn(x_shape), torch.randn(w_shape)
    dy = torch.randn(F.conv2d(x, w, **geometry).shape)
    expected = torch.nn.grad.conv2d_input(x_shape, w.double(), dy.double(), **geometry)
    t = KERNEL_TYPE[dtype]
    pad = geometry.get("padding", 0)
    run = lambda d: torch.ops.fastconv.conv2d_backward_input(  # noqa: E731
        d.to(dtype), w.to(dtype), [len(d), *x_shape[1:]], [1, 1], [pad] * 4, [1, 1], 1, "im2col",
        "simt:tf32" if math == "tf32" else "simt")
    gemm = "gemm_tensor_core_kernel<float, float" if math == "tf32" else f"gemm_kernel<{t}, {t}"
    with multiprocessors(_slots(sms, dtype)):
        with expect_kernels(f"{gemm}", "Im2colGatherForward", f"conv2d_reduce_partials_kernel<{t}, {t}>"):
            dx = run(dy)
        with expect_no_kernels("conv2d_reduce_partials_kernel"):
            head = run(dy[:2])
    if math == "tf32":
        scale = expected.abs().max().item()
        torch.testing.assert_close(dx.double() / scale, expected / scale, rtol=0, atol=2e-3)
    else:
        _close(dx, expected, dtype)
    assert torch.equal(_bits(dx[:2]), _bits(head)), "the whole images differ from an unsplit run"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_results_keep_a_tail_whole(dtype):
    # The same one-to-two-wave forward in 16 bits: no partials of the result's type, so every image
    # runs whole (and agrees with torch).
    x_shape, w_shape, geometry, sms = TAIL_SPLIT_FORWARD_CASES["one-tile"]
    (x, w, b), expected = _forward_operands(TAIL_SPLIT_FORWARD_CASES["one-tile"][:3], dtype)
    with multiprocessors(sms), expect_no_kernels("conv2d_reduce_forward_partials_kernel"):
        y = _forward(x, w, b, **geometry)
    _close(y, expected, dtype)
