"""Calls every fastconv op once per kernel variant on tiny tensors, forward and backward, in
every dtype, and checks the results against torch: the program scripts/gpu_check.sh runs under
``compute-sanitizer --tool memcheck|racecheck|synccheck`` (small, so that the sanitizers finish
in seconds). ``--backend simt`` runs the same calls on CPU tensors through the SIMT runtime.

    python scripts/sanitizer_ops.py --backend cuda
    python scripts/sanitizer_ops.py --backend simt --precision float32 tf32
    python scripts/sanitizer_ops.py --backend simt --sm 75 --precision float16 bfloat16
    python scripts/sanitizer_ops.py --backend simt --unfold --precision float32 float64
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastconv  # noqa: E402
import fastconv.functional as FF  # noqa: E402

# Each precision reaches its own GEMM kernels: float32 the CUDA-core one, tf32 (float32 with
# TF32 allowed) the tensor-core one, float16 and bfloat16 the tensor-core ones from sm_80 (the
# CUDA-core ones below it: --sm 75 on SIMT), float64 the CUDA-core one.
PRECISIONS = {"float32": (torch.float32, False), "tf32": (torch.float32, True), "float64": (torch.float64, False),
              "float16": (torch.float16, False), "bfloat16": (torch.bfloat16, False)}

# A small column buffer, so that the im2col paths run in several chunks (and half precision's
# fp32 weight-gradient accumulator runs); read once, at the first convolution.
os.environ.setdefault("FASTCONV_COLUMN_BUFFER_BYTES", "8192")

# (name, input shape, weight shape, conv2d keyword arguments): together they reach every kernel
# variant: the wide, narrow and single-channel direct tiles, the unstaged direct kernels (a
# footprint over 48 KiB: dilation 60), the direct weight gradient's split reduction (N*P*Q of
# 2048 and more), the three GEMM tiles (on the default 4 SMs, 8 blocks at a time: 256 x 512 takes
# the 128 x 128 tile forward and backward, as an sm_75 too; 64 x 2304 float32 the 64 x 256 one;
# smaller problems the 64 x 64 one), im2col's identity path (1x1), strides and groups.
CONVS = [
    ("3x3", (2, 3, 34, 34), (20, 3, 3, 3), dict(padding=1)),
    ("large_tiles", (1, 256, 16, 32), (256, 256, 1, 1), {}),
    ("wide_tiles", (1, 4, 48, 48), (64, 4, 3, 3), dict(padding=1)),
    ("stride2", (1, 8, 10, 9), (8, 8, 3, 3), dict(stride=2)),
    ("narrow_groups", (2, 6, 7, 7), (6, 2, 3, 3), dict(groups=3, padding=1)),
    ("depthwise", (1, 4, 8, 8), (4, 1, 3, 3), dict(groups=4)),
    ("1x1", (2, 16, 12, 12), (130, 16, 1, 1), {}),
    ("dilated", (1, 2, 122, 122), (4, 2, 3, 3), dict(dilation=60)),
    ("1x1_small", (1, 8, 6, 6), (8, 8, 1, 1), {}),
    # Weight gradients of 1,152 columns: on tensor cores, 64 x 128 tiles, unsplit for one image
    # (16-bit results) and split for eight (float partials).
    ("wide_wgrad", (1, 128, 6, 6), (64, 128, 3, 3), dict(padding=1)),
    ("wide_wgrad_split", (8, 128, 6, 6), (64, 128, 3, 3), dict(padding=1)),
    # On these 4 SMs: gathered columns on the 128 x 128 CUDA-core tile (float and double; 8 tiles
    # of 128 x 1,024 forward, a split 128 x 252 weight gradient), and a gathered input gradient
    # whose 64 x 256 outputs fill under a wave, split over its 576-long reduction (on tensor cores
    # the 64 x 128 tile, writing float partials; a GPU's many SMs keep the 64 x 64 one).
    ("gather_large_tiles", (1, 28, 32, 32), (128, 28, 3, 3), dict(padding=1)),
    ("gather_split_dgrad", (1, 64, 16, 16), (64, 64, 3, 3), dict(padding=1)),
]
# On a GPU's hundred-odd SMs the small problems above take the 64 x 64 tile; the 128 x 128 and
# 64 x 256 ones need a few hundred tiles in one image (the column buffer above holds one at a
# time; the SIMT device reports a handful of SMs instead, --sms): 144 wide tiles of 64 x 36,864
# take one round of an H100's 264 slots, 576 small ones three. In float16 and bfloat16 the large
# grid's GEMMs also take the 64 x 128 tensor-core tile (tests/test_gpu_check.py checks all five).
GPU_CONVS = [("large_grid", (2, 16, 96, 96), (256, 16, 1, 1), {}),
             ("wide_grid", (1, 1, 192, 192), (64, 1, 3, 3), dict(padding=1))]
# The gathering CUDA-core GEMM's 128 x 128 tile on a GPU's SMs (float32 and float64 only: 16-bit
# operands multiply on tensor cores): 136 tiles of 128 x 17,408 forward, one round where the
# 64 x 64 tile takes three; the weight gradient's 128 x 72 split 136 ways likewise.
GPU_CUDA_CORE_CONVS = [("gather_large_grid", (1, 8, 136, 128), (128, 8, 3, 3), dict(padding=1))]


def convs(dtype: torch.dtype, gpu: bool) -> List[Tuple[str, tuple, tuple, dict]]:
    """The convolutions run in `dtype`: CONVS, and on a GPU the GPU-only cases that dtype needs."""
    if not gpu:
        return CONVS
    return CONVS + GPU_CONVS + (GPU_CUDA_CORE_CONVS if dtype in (torch.float32, torch.float64) else [])


def tolerance(dtype: torch.dtype) -> dict:
    # float32 at TF32's 10-bit mantissa: inputs rounded to 2^-11 relative, sums of up to 144 terms.
    return {torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=8e-2, atol=8e-2),
            torch.float32: dict(rtol=1e-2, atol=1e-2), torch.float64: dict(rtol=1e-9, atol=1e-9)}[dtype]


def precision(backend: str, tf32: bool) -> contextlib.AbstractContextManager:
    """The backend, with float32 convolutions on TF32 tensor cores or not: on CUDA through torch's
    cuDNN switch (which fastconv follows), on SIMT through the backend's own."""
    if backend == "simt":
        return fastconv.backend("simt", allow_tf32=tf32)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32))
    stack.enter_context(fastconv.backend(backend))
    return stack


def check(name: str, ours: torch.Tensor, theirs: torch.Tensor, dtype: torch.dtype) -> None:
    # float32 relative to the largest magnitude where it passes 1: a weight gradient summing a
    # thousand pixels carries a thousand roundings of TF32 operands.
    scale = max(1.0, theirs.abs().max().item()) if dtype == torch.float32 and theirs.numel() else 1.0
    torch.testing.assert_close(ours.float() / scale, theirs.float() / scale, **tolerance(dtype),
                               msg=lambda m: f"{name}: {m}")


def grads(fn: Callable, inputs: List[torch.Tensor], grad: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad)
    return (out.detach(),) + tuple(t.grad for t in leaves)


def run(device: str, dtype: torch.dtype) -> int:
    """Every op once per variant on ``device``; returns the number of checks."""
    checks = 0
    rand = lambda *shape: torch.randn(*shape, device=device, dtype=torch.float64).to(dtype)  # noqa: E731
    for name, xs, ws, kw in convs(dtype, gpu=device == "cuda"):
        x, w, b = rand(*xs), rand(*ws) / ws[1], rand(ws[0])
        torch_conv = lambda x, w, b: F.conv2d(x.double(), w.double(), b.double(), **kw)  # noqa: E731
        dy = torch.ones(torch_conv(x, w, b).shape, device=device, dtype=dtype)
        reference = grads(torch_conv, [x, w, b], dy.double())
        for algorithm in ("direct", "im2col"):
            ours = grads(lambda x, w, b: FF.conv2d(x, w, b, algorithm=algorithm, **kw), [x, w, b], dy)
            for what, o, t in zip(("out", "dx", "dw", "db"), ours, reference):
                check(f"conv2d {name} {algorithm} {what}", o, t, dtype)
                checks += 1
        fused = FF.conv2d_relu(x, w, b, **kw)
        check(f"conv2d_relu {name}", fused, F.relu(reference[0]), dtype)
        checks += 1
    # No input channels and no bias: the output is zero, filled by a kernel.
    empty = FF.conv2d(rand(1, 0, 5, 5), rand(4, 0, 3, 3))
    check("conv2d without input channels", empty, torch.zeros_like(empty), dtype)
    checks += 1
    # 2x2/2 on widths 8 (two outputs per thread), 6 (one) and 7 (the general kernel), and 3x3/2.
    for kernel, stride, padding, shape in ((2, 2, 0, (2, 3, 8, 8)), (2, 2, 0, (1, 2, 6, 6)),
                                           (2, 2, 0, (1, 2, 6, 7)), (3, 2, 1, (1, 3, 9, 9))):
        x = rand(*shape)
        ours = grads(lambda t: FF.max_pool2d(t, kernel, stride, padding), [x],
                     torch.ones_like(F.max_pool2d(x, kernel, stride, padding)))
        theirs = grads(lambda t: F.max_pool2d(t.double(), kernel, stride, padding), [x],
                       torch.ones_like(F.max_pool2d(x.double(), kernel, stride, padding)))
        for what, o, t in zip(("out", "dx"), ours, theirs):
            check(f"max_pool2d {kernel}x{kernel}/{stride} {shape} {what}", o, t, dtype)
            checks += 1
    # Aligned (vectorized kernels) and one element off (the scalar kernels): the op reads a view
    # that starts `offset` elements into its buffer.
    for offset in (0, 1):
        n = 3 * 5 * 7
        base = rand(n + offset)
        dy = torch.ones(n + offset, device=device, dtype=dtype)[offset:]
        ours = grads(lambda t: FF.relu(t[offset:]), [base], dy)
        theirs = grads(lambda t: F.relu(t[offset:].double()), [base], dy)
        for what, o, t in zip(("out", "dx"), ours, theirs):
            check(f"relu {offset} {what}", o, t, dtype)
            checks += 1
        inplace = base.clone()
        FF.relu(inplace[offset:], inplace=True)
        check(f"relu_ {offset}", inplace[offset:], F.relu(base[offset:].double()), dtype)
        base = rand(67 + offset) + 3.0
        out, dx = grads(lambda t: FF.dropout(t[offset:], p=0.5), [base], torch.ones(67, device=device, dtype=dtype))
        kept = out != 0
        check(f"dropout {offset}", out[kept], (base[offset:] * 2)[kept], dtype)
        check(f"dropout {offset} dx", dx[offset:], kept.to(dtype) * 2, dtype)
        checks += 3
    return checks


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("cuda", "simt"), default="cuda")
    ap.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    ap.add_argument("--sm", type=int, help="simt: the compute capability the runtime stands for (FASTCONV_SIMT_ARCH; "
                                           "75 runs half and bfloat16 on the CUDA-core GEMM)")
    ap.add_argument("--unfold", action="store_true",
                    help="FASTCONV_IM2COL_GATHER=0: the im2col passes unfold their columns instead of gathering "
                         "them in the GEMM (reaches im2col's float and double kernels; before the first convolution "
                         "of the process, as it is read once)")
    ap.add_argument("--sms", type=int, default=4,
                    help="simt: the multiprocessor count the device reports (default 4, so that these small "
                         "problems reach the large GEMM tiles and the split reductions a GPU's large ones do)")
    args = ap.parse_args(argv)
    if args.backend == "cuda" and not (torch.cuda.is_available() and fastconv.cuda_compiled()):
        print("sanitizer_ops: the cuda backend needs a GPU and fastconv built with its CUDA kernels", file=sys.stderr)
        return 2
    if args.unfold:
        os.environ["FASTCONV_IM2COL_GATHER"] = "0"
    if args.sm is not None:
        fastconv._C.simt_set_compute_capability(args.sm)
    if args.backend == "simt":
        fastconv._C.simt_set_multiprocessor_count(args.sms)
    device = "cuda" if args.backend == "cuda" else "cpu"
    torch.manual_seed(0)
    checks = 0
    for name in args.precision:
        dtype, tf32 = PRECISIONS[name]
        with precision(args.backend, tf32):
            checks += run(device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    unfolded = ", columns unfolded" if args.unfold else ""
    print(f"sanitizer_ops: ok, {checks} checks on {args.backend} ({', '.join(args.precision)}{unfolded})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
