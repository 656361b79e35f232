"""The measurements behind conv2d's ``algorithm="auto"`` rule.

``auto`` picks im2col unless each group has a single input channel
(depthwise), where it picks direct. This times both algorithms, forward and
backward (input, weight and bias gradients), interleaved in one process, on
depthwise 3x3 layers of the seed CNNs' sizes and on a grouped layer with 8
input channels per group, where the choice flips.

    python -m bench.bench_conv2d_auto      # writes bench/results/conv2d_auto_cpu.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch

import fastconv
import fastconv.functional as FF

from .timing import arg_parser, interleaved, write_layer_results

# (channels, groups, input size): depthwise at convnet4's second and third layer sizes, and 8
# input channels per group.
LAYERS = [(32, 32, 74), (128, 128, 36), (64, 8, 36)]


def bench_layer(channels: int, groups: int, size: int, batch: int, backend: str, repeats: int) -> Dict:
    device = "cuda" if backend == "cuda" else "cpu"
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    w = torch.randn(channels, channels // groups, 3, 3, device=device, requires_grad=True)
    b = torch.randn(channels, device=device, requires_grad=True)
    grad = torch.randn(batch, channels, size - 2, size - 2, device=device)

    def forward_backward(algorithm: str):
        def run():
            FF.conv2d(x, w, b, groups=groups, algorithm=algorithm).backward(grad)
            x.grad = w.grad = b.grad = None
        return run

    with fastconv.backend(backend):
        times = interleaved({a: forward_backward(a) for a in ("direct", "im2col")}, repeats, device=device)
    return {"layer": f"{channels} ch, groups {groups} @{size}", "in_channels_per_group": channels // groups,
            "batch": batch, "fwdbwd_ms": {a: t * 1e3 for a, t in times.items()},
            "faster": min(times, key=times.get)}


def main(argv=None) -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default bench/results/conv2d_auto_<device>.json)")
    parser.set_defaults(repeats=7)
    args = parser.parse_args(argv)

    results: List[Dict] = [bench_layer(c, g, s, args.batch, args.device, args.repeats) for c, g, s in LAYERS]
    print(f"{'layer':<28}{'C/g':>5}{'direct ms':>11}{'im2col ms':>11}  faster")
    for r in results:
        t = r["fwdbwd_ms"]
        print(f"{r['layer']:<28}{r['in_channels_per_group']:>5}{t['direct']:>11.2f}{t['im2col']:>11.2f}  {r['faster']}")
    out = args.out or Path(__file__).parent / "results" / f"conv2d_auto_{args.device}.json"
    write_layer_results(out, args, results)


if __name__ == "__main__":
    main()
