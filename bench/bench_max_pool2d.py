"""Max pooling, forward and forward+backward, fastconv against torch on the seed CNN's pooling layers.

    python -m bench.bench_max_pool2d [--device cpu|cuda] [--repeats N]

The layers are convnet4's 2x2 / stride 2 poolings at batch 16. Candidates are
timed alternately in one process (bench/timing.py), medians of ``--repeats``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastconv.functional as FF

from .timing import arg_parser, print_table, versus_torch, write_results

# convnet4's activations entering each MaxPool2d(2), at batch 16.
SHAPES = [(16, 32, 148, 148), (16, 64, 72, 72), (16, 128, 34, 34), (16, 128, 15, 15)]


def forward(pool, x):
    def run():
        with torch.no_grad():
            pool(x, 2)
    return run


def forward_backward(pool, x):
    def run():
        x.grad = None
        pool(x, 2).backward(grad)
    grad = torch.ones_like(pool(x.detach(), 2))
    return run


def main(argv=None):
    p = arg_parser(__doc__)
    args = p.parse_args(argv)
    rows = []
    for shape in SHAPES:
        x = torch.randn(shape, device=args.device, requires_grad=True)
        for measure, wrap in (("fwd", forward), ("fwd+bwd", forward_backward)):
            rows.append(versus_torch(wrap(FF.max_pool2d, x), wrap(F.max_pool2d, x), args.repeats, args.device,
                                     measure=measure, shape="x".join(map(str, shape))))
    print_table(rows, ["measure", "shape", "fastconv_ms", "torch_ms", "speedup"])
    extra = {"op": "max_pool2d(kernel_size=2, stride=2)", "measure": "fwd under no_grad; fwd+bwd with a ones grad"}
    print("wrote", write_results(f"max_pool2d_{args.device}", rows, extra))


if __name__ == "__main__":
    main()
