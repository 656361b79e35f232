"""fastconv's benchmark runner: every op against torch's, on the seed CNNs' layers.

    python -m bench                          # every op, CPU (and CUDA when present), batch 1, 16, 32
    python -m bench --quick                  # a representative subset, a couple of minutes
    python -m bench --only conv2d --batch 16 --net convnet4
    python -m bench --device simt --quick    # the CUDA kernels on the CPU, tiny shapes (smoke run)
    python -m bench --out bench/results      # also write <device>-<machine>.json and .png
    python -m bench compare OLD.json NEW.json
    python -m bench report bench/results/cpu-<machine>.json [--op conv2d] [--pass fwd+bwd] [--batch 16]
    python -m bench report bench/results/cpu-<machine>.json --summary   # the README's tables
    python -m bench report bench/results/cpu-<machine>.json --targets   # the CPU targets (bench/cpu_targets.py)

bench/README.md explains the measurements and the results files.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from . import cases, cpu_targets, report, runner, schema
from .cases import OPS
from .report import PASS_ORDER


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", nargs="+", choices=runner.DEVICES, default=None,
                   help="devices to run on (default: cpu, and cuda when available)")
    p.add_argument("--quick", action="store_true", help="a representative subset with few repeats")
    p.add_argument("--only", nargs="+", choices=OPS, metavar="OP", help=f"only these ops: {', '.join(OPS)}")
    p.add_argument("--batch", nargs="+", type=int, help="only these batch sizes")
    p.add_argument("--net", nargs="+", choices=list(cases.NETS) + list(cases.EXTRA_NETS),
                   help="only the layers of these networks")
    p.add_argument("--dtype", nargs="+", choices=cases.DTYPES, default=["float32"], dest="dtypes",
                   help="conv2d in these dtypes (default float32; float16 and bfloat16 on cuda and simt)")
    p.add_argument("--out", type=Path, help="write <device>-<machine>.json and .png into this folder")
    p.add_argument("--repeats", type=int, help="most timed repetitions per case (default 15; quick 5)")
    p.add_argument("--min-repeats", type=int, help="fewest timed repetitions per case (default 3)")
    p.add_argument("--warmup", type=int, help="untimed rounds before timing (default 1, at least 1)")
    p.add_argument("--budget", type=float, dest="budget_s",
                   help="seconds a case's timed loop aims at (default 4; quick 0.6)")
    p.add_argument("--direct-max-gflop", type=float,
                   help="leave conv2d's direct variant out above this many forward GFLOP (default 16; quick 4)")
    p.add_argument("--time-limit", type=float, dest="time_limit_s",
                   help="start no case after this many seconds (the cases left are named in the results)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (ours follow it)")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench report",
                                description="Markdown tables of a results file (what the README quotes)")
    p.add_argument("file", type=Path)
    p.add_argument("--op", nargs="+", choices=OPS)
    p.add_argument("--pass", nargs="+", dest="passes", choices=PASS_ORDER)
    p.add_argument("--batch", nargs="+", type=int)
    p.add_argument("--net", nargs="+")
    p.add_argument("--no-heading", action="store_true")
    p.add_argument("--summary", action="store_true",
                   help="compact tables (times at batch 16, ratios at every batch) as the README quotes them")
    p.add_argument("--targets", action="store_true",
                   help="only the CPU targets (bench/cpu_targets.py): met or not, and the rows that miss")
    p.add_argument("--chart", type=Path, help="also draw the chart into this PNG")
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench compare",
                                description="the change between two results files, row by row")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    return p


def run(argv: List[str]) -> int:
    args = _run_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if runner.unavailable("cuda") is None else ["cpu"])

    def dtypes_on(device: str) -> List[str]:
        if device != "cpu":
            return args.dtypes
        left_out = [d for d in args.dtypes if d != "float32"]
        if left_out:
            print(f"cpu: conv2d in {', '.join(left_out)} left out (the C++ kernels take float32 and float64)",
                  file=sys.stderr)
        return [d for d in args.dtypes if d == "float32"] or ["float32"]

    if args.list:
        for device in devices:
            for c in cases.select(device, args.quick, args.only, args.batch, args.net, dtypes_on(device)):
                print(f"{device}  {c.op:<12} {c.net:<9} {c.layer:<24} N={c.batch}")
        return 0
    settings = runner.Settings.for_run(args.quick, repeats=args.repeats, min_repeats=args.min_repeats,
                                       warmup=args.warmup, budget_s=args.budget_s,
                                       direct_max_gflop=args.direct_max_gflop, time_limit_s=args.time_limit_s)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    for device in devices:
        why = runner.unavailable(device)
        if why:
            print(f"{device}: skipped ({why})", file=sys.stderr)
            continue
        began = time.perf_counter()
        doc = runner.run_device(device, settings, args.only, args.batch, args.net,
                                progress=not args.no_progress, command=command, dtypes=dtypes_on(device))
        print(report.markdown(doc))
        print(f"{device}: {len(doc['rows'])} rows in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        if args.out:
            for path in runner.write(doc, args.out):
                print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:
        args = _report_parser().parse_args(argv[1:])
        doc = schema.load(args.file)
        if args.targets:
            if doc["device"] != "cpu":
                print(f"report --targets: the targets are the CPU kernels'; {args.file} holds {doc['device']} rows",
                      file=sys.stderr)
                return 2
            print(cpu_targets.markdown(doc), end="")
        elif args.summary:
            print(report.summary(doc), end="")
        else:
            print(report.markdown(doc, args.op, args.passes, args.batch, args.net,
                                  with_heading=not args.no_heading))
        if args.chart:
            report.chart(doc, args.chart)
        return 0
    if argv[:1] == ["compare"]:
        args = _compare_parser().parse_args(argv[1:])
        print(report.compare(schema.load(args.before), schema.load(args.after)), end="")
        return 0
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
