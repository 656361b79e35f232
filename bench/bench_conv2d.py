"""Benchmark fastconv's conv2d algorithms against torch.nn.functional.conv2d.

For each seed-CNN layer and batch size, times forward, and forward+backward
(input, weight and bias gradients) of every fastconv algorithm and of torch,
interleaved in one process (each repetition runs every implementation once,
in turn, so drifting clocks and neighbours affect all alike) and reports the
median. Backward time is the difference of the two medians.

    python -m bench.bench_conv2d                     # CPU backend
    python -m bench.bench_conv2d --device cuda       # CUDA tensors, CUDA kernels
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

from .timing import SEED_CONV_LAYERS, arg_parser, interleaved, write_layer_results

ALGORITHMS = ["direct", "im2col"]


def bench_layer(cin: int, cout: int, size: int, batch: int, backend: str, repeats: int) -> Dict:
    device = "cuda" if backend == "cuda" else "cpu"
    x = torch.randn(batch, cin, size, size, device=device, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, device=device, requires_grad=True)
    b = torch.randn(cout, device=device, requires_grad=True)
    grad = torch.randn(batch, cout, size - 2, size - 2, device=device)

    def forward(conv):
        def run():
            with torch.no_grad():
                conv(x, w, b)
        return run

    def forward_backward(conv):
        def run():
            conv(x, w, b).backward(grad)
            x.grad = w.grad = b.grad = None
        return run

    convs = {"torch": F.conv2d}
    for algorithm in ALGORITHMS:
        convs[algorithm] = lambda x_, w_, b_, a=algorithm: FF.conv2d(x_, w_, b_, algorithm=a)
    with fastconv.backend(backend):
        fwd = interleaved({n: forward(c) for n, c in convs.items()}, repeats, device=device)
        fwdbwd = interleaved({n: forward_backward(c) for n, c in convs.items()}, repeats, device=device)

    flops_fwd = 2.0 * batch * cout * (size - 2) ** 2 * cin * 9
    result = {"layer": f"{cin}->{cout} @{size}", "batch": batch, "impls": {}}
    for name in convs:
        bwd = max(fwdbwd[name] - fwd[name], 1e-9)  # backward time is the difference of the medians
        result["impls"][name] = {
            "fwd_ms": fwd[name] * 1e3, "bwd_ms": bwd * 1e3, "fwdbwd_ms": fwdbwd[name] * 1e3,
            "fwd_gflops": flops_fwd / fwd[name] / 1e9, "bwd_gflops": 2 * flops_fwd / bwd / 1e9,
            "fwdbwd_gflops": 3 * flops_fwd / fwdbwd[name] / 1e9,
        }
    return result


def print_table(results: List[Dict]) -> None:
    header = f"{'layer':<16}{'N':>4} {'impl':<8}{'fwd ms':>10}{'bwd ms':>10}{'f+b ms':>10}{'f+b GF/s':>10}{'vs torch':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        torch_total = r["impls"]["torch"]["fwdbwd_ms"]
        for name, m in r["impls"].items():
            print(f"{r['layer']:<16}{r['batch']:>4} {name:<8}{m['fwd_ms']:>10.2f}{m['bwd_ms']:>10.2f}"
                  f"{m['fwdbwd_ms']:>10.2f}{m['fwdbwd_gflops']:>10.1f}{m['fwdbwd_ms'] / torch_total:>9.2f}x")


def main(argv=None) -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/conv2d_<device>.json)")
    parser.set_defaults(repeats=5)
    args = parser.parse_args(argv)

    results = [bench_layer(cin, cout, size, batch, args.device, args.repeats)
               for batch in args.batch for cin, cout, size in SEED_CONV_LAYERS]
    print_table(results)
    out = args.out or Path(__file__).parent / "results" / f"conv2d_{args.device}.json"
    write_layer_results(out, args, results)


if __name__ == "__main__":
    main()
