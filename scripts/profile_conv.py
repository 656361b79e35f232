"""One convolution layer's training pass (forward, input and weight gradients) on a GPU, the
last of a few repetitions marked for a profiler: the program scripts/gpu_check.sh runs under
Nsight Compute (``ncu --profile-from-start off``), so that only our kernels of one warm pass
are measured. ``--backend simt`` runs the same pass on the SIMT runtime (a smoke run, at a
size the CPU can take).

    python scripts/profile_conv.py --math float32 tf32 float16   # VGG16's 512->512 @28, batch 32
    python scripts/profile_conv.py --backend simt --batch 1 --channels 8 --size 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastconv  # noqa: E402
import fastconv.functional as FF  # noqa: E402

# math -> (dtype, TF32 allowed): float32 runs the CUDA-core GEMM, tf32 the tensor-core one on
# TF32, float16 and bfloat16 the tensor-core ones.
MATHS = {"float32": (torch.float32, False), "tf32": (torch.float32, True),
         "float16": (torch.float16, False), "bfloat16": (torch.bfloat16, False)}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cuda", "simt"], default="cuda")
    ap.add_argument("--math", nargs="+", choices=list(MATHS), default=["float32", "tf32", "float16"])
    ap.add_argument("--algorithm", default="im2col", choices=["auto", "direct", "im2col"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=512, help="input and output channels (3x3, padding 1)")
    ap.add_argument("--size", type=int, default=28, help="image height and width")
    ap.add_argument("--repeats", type=int, default=3, help="passes before the profiled one")
    return ap.parse_args(argv)


def training_pass(x: torch.Tensor, w: torch.Tensor, algorithm: str) -> None:
    y = FF.conv2d(x, w, padding=1, algorithm=algorithm)
    y.backward(torch.ones_like(y))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backend == "cuda" and not (torch.cuda.is_available() and fastconv.cuda_compiled()):
        print("profile_conv: --backend cuda needs a GPU and a fastconv built with its CUDA kernels",
              file=sys.stderr)
        return 2
    device = "cuda" if args.backend == "cuda" else "cpu"
    for math in args.math:
        dtype, tf32 = MATHS[math]
        x = torch.randn(args.batch, args.channels, args.size, args.size, device=device, dtype=dtype,
                        requires_grad=True)
        w = (torch.randn(args.channels, args.channels, 3, 3, device=device, dtype=dtype)
             / (9 * args.channels) ** 0.5).requires_grad_()
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            with fastconv.backend(args.backend, **({"allow_tf32": tf32} if args.backend == "simt" else {})):
                for _ in range(args.repeats):
                    training_pass(x, w, args.algorithm)
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.profiler.start()
                training_pass(x, w, args.algorithm)
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.profiler.stop()
        finally:
            torch.backends.cudnn.allow_tf32 = saved
        print(f"profile_conv: {math}: {args.channels}->{args.channels} 3x3 @{args.size}, batch {args.batch}, "
              f"{args.algorithm}: gradient norm {x.grad.float().norm():.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
