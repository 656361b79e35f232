"""Where each seed convolution's training pass spends its GPU time, kernel by kernel, for
fastconv (algorithm="auto") and for cuDNN: one warm forward + backward pass of every convnet4,
convnet3 and VGG16 convolution under torch.profiler, in float32 (TF32 off on both sides), TF32
(on, both sides) and float16. The bench's per-pass times say how far we are from cuDNN; this
says which of our kernels (im2col, GEMM tile, col2im, split-K partials, bias) the gap is in.
scripts/gpu_check.sh runs it; it writes kernel-times.json and kernel-times.md.

    python scripts/kernel_times.py --out gpu_check
    python scripts/kernel_times.py --backend simt --batch 1 --net convnet4 --out /tmp/kt  # smoke run

On the simt backend (CPU tensors) the profiler sees operators, not kernels: a smoke run of the
script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastconv  # noqa: E402
import fastconv.functional as FF  # noqa: E402
from bench import cases  # noqa: E402

# math -> (dtype, TF32 allowed on both sides)
MATHS = {"float32": (torch.float32, False), "tf32": (torch.float32, True), "float16": (torch.float16, False)}
TOP = 4  # kernels named per row of the table


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cuda", "simt"], default="cuda")
    ap.add_argument("--net", nargs="+", default=["convnet4", "convnet3", "vgg16"])
    ap.add_argument("--math", nargs="+", choices=list(MATHS), default=list(MATHS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("."))
    return ap.parse_args(argv)


def _pass(conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, geometry: dict, grad: torch.Tensor) -> None:
    # autograd.grad, not backward: no gradient accumulates into .grad (an extra add kernel per
    # operand, on both sides alike, that would blur the comparison).
    torch.autograd.grad(conv(x, w, b, **geometry), (x, w, b), grad)


def kernel_times(prof, device: str) -> List[Dict]:
    """The profiled kernels (operators on the CPU), by name: total µs and count, longest first."""
    rows = []
    for event in prof.key_averages():
        if device == "cuda":
            us = event.self_device_time_total
            if us <= 0 or event.device_type != torch.autograd.DeviceType.CUDA:
                continue
        else:
            us = event.cpu_time_total
            if not event.key.startswith(("fastconv::", "aten::convolution", "aten::convolution_backward")):
                continue
        rows.append({"kernel": event.key, "us": us, "count": event.count})
    return sorted(rows, key=lambda r: -r["us"])


def profile_pass(conv, x, w, b, geometry: dict, grad: torch.Tensor, device: str) -> List[Dict]:
    _pass(conv, x, w, b, geometry, grad)  # warm: workspaces, cuDNN's algorithm search, caches
    if device == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        _pass(conv, x, w, b, geometry, grad)
        if device == "cuda":
            torch.cuda.synchronize()
    return kernel_times(prof, device)


def ours(x, w, b, **geometry):
    return FF.conv2d(x, w, b, algorithm="auto", **geometry)


def measure(args: argparse.Namespace) -> Iterator[Dict]:
    """One row per math and layer, as each is measured."""
    device = "cuda" if args.backend == "cuda" else "cpu"
    layers = [layer for layer in cases.seed_layers() if layer.kind == "conv" and layer.net in args.net]
    for math in args.math:
        dtype, tf32 = MATHS[math]
        for layer in layers:
            p = layer.params
            geometry = dict(stride=p["stride"], padding=p["padding"], groups=p["groups"])
            x = torch.randn((args.batch,) + tuple(layer.shape), device=device, dtype=dtype, requires_grad=True)
            w = torch.randn(p["out_channels"], layer.shape[0] // p["groups"], p["kernel"], p["kernel"],
                            device=device, dtype=dtype, requires_grad=True)
            b = torch.randn(p["out_channels"], device=device, dtype=dtype, requires_grad=True)
            grad = torch.ones_like(F.conv2d(x.detach(), w.detach(), **geometry))
            row = {"layer": layer.label, "net": layer.net, "batch": args.batch, "math": math}
            # cuDNN picks its algorithms by timing them, as in the bench's runs (bench/runner.py).
            with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=tf32):
                with fastconv.backend(args.backend, **({"allow_tf32": tf32} if args.backend == "simt" else {})):
                    row["fastconv"] = profile_pass(ours, x, w, b, geometry, grad, device)
                row["cudnn"] = profile_pass(F.conv2d, x, w, b, geometry, grad, device)
            print(f"kernel_times: {math} {layer.label}: fastconv {sum(k['us'] for k in row['fastconv']):.0f} µs, "
                  f"cuDNN {sum(k['us'] for k in row['cudnn']):.0f} µs", flush=True)
            yield row


def _short(name: str) -> str:
    """A kernel's name without its template arguments' namespaces, and cut at 60 characters."""
    for prefix in ("void ", "fastconv::cuda::", "fastconv::", "at::native::"):
        name = name.replace(prefix, "")
    return name if len(name) <= 60 else name[:57] + "..."


def _longest(kernels: List[Dict]) -> str:
    return "; ".join(f"{_short(k['kernel'])} {k['us']:.0f}" + (f" x{k['count']}" if k["count"] > 1 else "")
                     for k in kernels[:TOP])


def markdown(doc: Dict) -> str:
    lines = [f"# Kernel times of one training pass (forward + backward), batch {doc['batch']}", "",
             f"{doc['device']}; torch {doc['torch']}. Generated by `{doc['command']}`. µs of GPU time "
             "(the profiler's kernel durations, summed per kernel name); fastconv runs algorithm=\"auto\".", ""]
    by_math: Dict[str, List[Dict]] = defaultdict(list)
    for row in doc["rows"]:
        by_math[row["math"]].append(row)
    for math, rows in by_math.items():
        lines += [f"## {math}", "", "| layer | fastconv µs | cuDNN µs | ratio | fastconv's longest kernels | cuDNN's |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        for row in rows:
            mine, theirs = (sum(k["us"] for k in row[side]) for side in ("fastconv", "cudnn"))
            ratio = f"{mine / theirs:.2f}" if theirs > 0 else "-"
            lines.append(f"| {row['layer']} | {mine:.0f} | {theirs:.0f} | {ratio} | {_longest(row['fastconv'])} "
                         f"| {_longest(row['cudnn'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backend == "cuda" and not (torch.cuda.is_available() and fastconv.cuda_compiled()):
        print("kernel_times: --backend cuda needs a GPU and a fastconv built with its CUDA kernels", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name() if args.backend == "cuda" else "simt (CPU operators, not kernels)"
    torch.manual_seed(0)
    doc = {"command": " ".join(["python scripts/kernel_times.py"] + (argv if argv is not None else sys.argv[1:])),
           "device": device, "torch": torch.__version__, "batch": args.batch, "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for row in measure(args):  # both files rewritten after each row: a run cut short keeps what it measured
        doc["rows"].append(row)
        (args.out / "kernel-times.json").write_text(json.dumps(doc, indent=1))
        (args.out / "kernel-times.md").write_text(markdown(doc))
    print(f"kernel_times: wrote {args.out / 'kernel-times.json'} and kernel-times.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
