"""Interleaved timing of competing implementations in one process.

Alternating the candidates within every repetition (and reversing the order on odd ones)
exposes them to the same thermal state, frequency scaling and background load, so their
*ratio* is meaningful even on a noisy machine. Medians, not means, resist outliers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

import fastconv


# (in_channels, out_channels, input size) of convnet4's 3x3 convolutions (no padding).
SEED_CONV_LAYERS = [(3, 32, 150), (32, 64, 74), (64, 128, 36), (128, 128, 17)]


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --device and --repeats (its own are added by the caller)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=15, help="timed repetitions (median reported)")
    return p


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(candidates: Mapping[str, Callable[[], object]], repeats: int = 15, warmup: int = 2,
                device: str = "cpu") -> Dict[str, float]:
    """Median seconds of each candidate, timed alternately ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples: Dict[str, list] = {name: [] for name in candidates}
    items = list(candidates.items())
    for rep in range(repeats):
        for name, fn in (items if rep % 2 == 0 else items[::-1]):
            synchronize(device)
            began = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - began)
    return {name: statistics.median(times) for name, times in samples.items()}


def versus_torch(ours: Callable[[], object], theirs: Callable[[], object], repeats: int, device: str,
                 **labels: object) -> Dict[str, object]:
    """One table row: ``labels``, the interleaved medians of fastconv and torch in ms, and
    ``speedup`` = torch's time / fastconv's (above 1: fastconv is faster)."""
    t = interleaved({"fastconv": ours, "torch": theirs}, repeats=repeats, device=device)
    return {**labels, "fastconv_ms": t["fastconv"] * 1e3, "torch_ms": t["torch"] * 1e3,
            "speedup": t["torch"] / t["fastconv"]}


# Instruction sets the CPU kernels can use; machine_info() records which of them the CPU has.
_CPU_FLAGS = ("avx2", "fma", "avx512f")


def _cpuinfo() -> Tuple[Optional[str], Optional[List[str]]]:
    """The CPU's model name and which of _CPU_FLAGS it has, from /proc/cpuinfo (None where unreadable)."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    present = set(value.split())
                    flags = [flag for flag in _CPU_FLAGS if flag in present]
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags


def machine_info() -> Dict[str, object]:
    """What the figures were measured on; every results JSON records it as "machine".

    ``cpu_isa_selected`` is the instruction set fastconv's CPU kernels chose at run time
    (``fastconv.build_info()["cpu_isa"]``).
    """
    model, flags = _cpuinfo()
    info = {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "cpu_isa_selected": fastconv.build_info()["cpu_isa"],
        "logical_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastconv": fastconv.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_layer_results(out: Path, args: argparse.Namespace, results: list) -> None:
    """A layer benchmark's JSON: its results with the machine, backend and repeat count behind them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine_info(), "backend": args.device, "repeats": args.repeats}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


def write_results(name: str, rows: list, extra: Mapping[str, object] | None = None) -> Path:
    """bench/results/<name>.json with the rows and the machine they came from."""
    path = Path(__file__).resolve().parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"machine": machine_info(), **(extra or {}), "rows": rows}, indent=2))
    return path


def print_table(rows: list, columns: list) -> None:
    """Rows of dicts as an aligned text table over ``columns``."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)
