"""Benchmark fastconv's conv2d algorithms against torch.nn.functional.conv2d.

For each seed-CNN layer and batch size, times forward, and forward+backward
(input, weight and bias gradients) of every fastconv algorithm and of torch,
interleaved in one process (each repetition runs every implementation once,
in turn, so drifting clocks and neighbours affect all alike) and reports the
median. Backward time is the difference of the two medians.

    python bench/bench_conv2d.py                     # CPU backend
    python bench/bench_conv2d.py --backend cuda      # CUDA tensors, CUDA kernels
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF

# (in_channels, out_channels, input size) of the seed CNN's 3x3 convolutions.
SEED_LAYERS = [(3, 32, 150), (32, 64, 74), (64, 128, 36), (128, 128, 17)]
ALGORITHMS = ["direct", "im2col"]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_layer(cin: int, cout: int, size: int, batch: int, backend: str, reps: int) -> Dict:
    device = "cuda" if backend == "cuda" else "cpu"
    x = torch.randn(batch, cin, size, size, device=device, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, device=device, requires_grad=True)
    b = torch.randn(cout, device=device, requires_grad=True)
    grad = torch.randn(batch, cout, size - 2, size - 2, device=device)

    def runner(conv):
        def forward():
            with torch.no_grad():
                conv(x, w, b)

        def forward_backward():
            conv(x, w, b).backward(grad)
            x.grad = w.grad = b.grad = None

        return forward, forward_backward

    impls = {"torch": runner(F.conv2d)}
    for algorithm in ALGORITHMS:
        impls[algorithm] = runner(lambda x_, w_, b_, a=algorithm: FF.conv2d(x_, w_, b_, algorithm=a))

    times: Dict[str, Dict[str, List[float]]] = {name: {"fwd": [], "fwdbwd": []} for name in impls}
    with fastconv.backend(backend):
        for forward, forward_backward in impls.values():  # warm-up: allocators, thread pools
            forward()
            forward_backward()
        for _ in range(reps):
            for name, (forward, forward_backward) in impls.items():
                times[name]["fwd"].append(_timed(forward, device))
                times[name]["fwdbwd"].append(_timed(forward_backward, device))

    flops_fwd = 2.0 * batch * cout * (size - 2) ** 2 * cin * 9
    result = {"layer": f"{cin}->{cout} @{size}", "batch": batch, "impls": {}}
    for name, t in times.items():
        fwd, fwdbwd = statistics.median(t["fwd"]), statistics.median(t["fwdbwd"])
        bwd = max(fwdbwd - fwd, 1e-9)
        result["impls"][name] = {
            "fwd_ms": fwd * 1e3, "bwd_ms": bwd * 1e3, "fwdbwd_ms": fwdbwd * 1e3,
            "fwd_gflops": flops_fwd / fwd / 1e9, "bwd_gflops": 2 * flops_fwd / bwd / 1e9,
            "fwdbwd_gflops": 3 * flops_fwd / fwdbwd / 1e9,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/conv2d_<backend>.json)")
    args = parser.parse_args()

    results = [bench_layer(cin, cout, size, batch, args.backend, args.reps)
               for batch in args.batch for cin, cout, size in SEED_LAYERS]
    print_table(results)
    out = args.out or Path(__file__).parent / "results" / f"conv2d_{args.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": args.backend, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "reps": args.reps,
        "device": torch.cuda.get_device_name() if args.backend == "cuda" else "cpu",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
