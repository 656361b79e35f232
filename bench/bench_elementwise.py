"""ReLU and dropout, forward+backward, fastconv against torch on the seed CNN's activation sizes.

    python -m bench.bench_elementwise [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastconv.functional as FF

from .timing import arg_parser, print_table, versus_torch, write_results

# Activations of convnet4 at batch 16 (after each conv) and its dense layer.
SHAPES = [(16, 32, 148, 148), (16, 64, 72, 72), (16, 128, 34, 34), (16, 128, 15, 15), (16, 6272)]


def fwd_bwd(fn, x):
    def run():
        x.grad = None
        fn(x).sum().backward()
    return run


def main(argv=None):
    p = arg_parser(__doc__)
    args = p.parse_args(argv)
    rows = []
    for shape in SHAPES:
        x = torch.randn(shape, device=args.device, requires_grad=True)
        for op, ours, theirs in (("relu", FF.relu, F.relu),
                                 ("dropout", lambda t: FF.dropout(t, 0.5), lambda t: F.dropout(t, 0.5))):
            rows.append(versus_torch(fwd_bwd(ours, x), fwd_bwd(theirs, x), args.repeats, args.device,
                                     op=op, shape="x".join(map(str, shape))))
    print_table(rows, ["op", "shape", "fastconv_ms", "torch_ms", "speedup"])
    print("wrote", write_results(f"elementwise_{args.device}", rows, {"measure": "fwd+bwd incl. .sum()"}))


if __name__ == "__main__":
    main()
