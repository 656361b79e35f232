"""Fused conv2d_relu against conv2d followed by relu (both fastconv), forward and forward+backward,
on the seed CNN's 3x3 convolutions at batch 16.

    python -m bench.bench_conv2d_relu [--device cpu|cuda] [--algorithm auto|direct|im2col] [--repeats N]

The unfused baseline is measured twice: with an out-of-place relu, and with ``relu(inplace=True)``
as the seed models use it (no extra allocation, but still a second pass over the activation).
Candidates are timed alternately in one process (bench/timing.py), medians of ``--repeats``.
"""

from __future__ import annotations

import torch

import fastconv.functional as FF

from .timing import SEED_CONV_LAYERS, arg_parser, interleaved, print_table, write_results

BATCH = 16


def candidates(algorithm: str):
    """Each candidate maps (x, w, b) to relu(conv2d(x, w, b))."""
    return {
        "fused": lambda x, w, b: FF.conv2d_relu(x, w, b, algorithm=algorithm),
        "unfused": lambda x, w, b: FF.relu(FF.conv2d(x, w, b, algorithm=algorithm)),
        "unfused_inplace": lambda x, w, b: FF.relu(FF.conv2d(x, w, b, algorithm=algorithm), inplace=True),
    }


def forward(fn, x, w, b):
    def run():
        with torch.no_grad():
            fn(x, w, b)
    return run


def forward_backward(fn, x, w, b):
    grad = torch.randn_like(fn(x.detach(), w.detach(), b.detach()))

    def run():
        x.grad = w.grad = b.grad = None
        fn(x, w, b).backward(grad)
    return run


def main(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--algorithm", default="auto", choices=["auto", "direct", "im2col"])
    args = p.parse_args(argv)
    rows = []
    for cin, cout, size in SEED_CONV_LAYERS:
        x = torch.randn(BATCH, cin, size, size, device=args.device, requires_grad=True)
        w = (torch.randn(cout, cin, 3, 3, device=args.device) / (cin * 9) ** 0.5).requires_grad_()
        b = torch.randn(cout, device=args.device, requires_grad=True)
        for measure, wrap in (("fwd", forward), ("fwd+bwd", forward_backward)):
            t = interleaved({name: wrap(fn, x, w, b) for name, fn in candidates(args.algorithm).items()},
                            repeats=args.repeats, device=args.device)
            rows.append({"measure": measure, "layer": f"{cin}->{cout} @{size}",
                         "fused_ms": t["fused"] * 1e3, "unfused_ms": t["unfused"] * 1e3,
                         "unfused_inplace_ms": t["unfused_inplace"] * 1e3,
                         "gain": t["unfused"] / t["fused"], "gain_vs_inplace": t["unfused_inplace"] / t["fused"]})
    print_table(rows, ["measure", "layer", "fused_ms", "unfused_ms", "unfused_inplace_ms", "gain",
                       "gain_vs_inplace"])
    extra = {"op": f"conv2d_relu vs relu(conv2d), 3x3, batch {BATCH}, algorithm={args.algorithm!r}",
             "measure": "fwd under no_grad; fwd+bwd with a random grad; gain = unfused / fused time"}
    print("wrote", write_results(f"conv2d_relu_{args.device}", rows, extra))


if __name__ == "__main__":
    main()
