"""The benchmark run: probe the machine, time every case, assemble one results document."""

from __future__ import annotations

import contextlib
import datetime
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from tqdm import tqdm

import fastconv

from . import cases as cases_mod
from . import machine, model, ops, report, schema
from .cases import Case
from .timing import Samples, iqr, interleaved, median

SCHEMA_ID = "fastconv-bench/1"
DEVICES = ("cpu", "cuda", "simt")


@dataclass
class Settings:
    """How hard to measure. ``repeats`` is the most timed repetitions per case and pass group;
    fewer run where a repetition of every contender takes longer than ``budget_s`` / ``repeats``
    (at the warm-up's pace), but never fewer than ``min_repeats``."""

    quick: bool = False
    repeats: int = 15
    min_repeats: int = 3
    warmup: int = 1
    budget_s: float = 4.0
    direct_max_gflop: float = 16.0
    time_limit_s: Optional[float] = None   # no case starts after this many seconds of the run

    @classmethod
    def for_run(cls, quick: bool, **overrides) -> "Settings":
        base = cls(quick=True, repeats=5, min_repeats=3, budget_s=0.6, direct_max_gflop=4.0) if quick else cls()
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        return base


def unavailable(device: str) -> Optional[str]:
    """Why ``device`` cannot run here, or None when it can."""
    if device not in DEVICES:
        return f"unknown device {device!r} (choose from {', '.join(DEVICES)})"
    if device == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        if not fastconv.cuda_compiled():
            return "fastconv was built without its CUDA kernels"
    return None


@contextlib.contextmanager
def _device_settings(device: str) -> Iterator[Dict[str, object]]:
    """The backend fastconv runs on, and on a GPU cuDNN's autotuner (torch's best algorithm for
    each shape, chosen during warm-up); returns what was set, for the record."""
    recorded: Dict[str, object] = {"fastconv_backend": device}
    saved = torch.backends.cudnn.benchmark
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        recorded.update(cudnn_benchmark=True, cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    try:
        with fastconv.backend(device):
            yield recorded
    finally:
        torch.backends.cudnn.benchmark = saved


def _rate(work: Optional[float], seconds: float) -> Optional[float]:
    return work / seconds / 1e9 if work else None


def _percent(rate: Optional[float], peak: Optional[float]) -> Optional[float]:
    return 100.0 * rate / peak if rate is not None and peak else None


def make_row(case: Case, device: str, variant: str, torch_impl: str, pass_: str, ours: List[float],
             theirs: List[float], metric: str, work: Optional[float], probes: Dict[str, object],
             auto: Optional[bool] = None) -> Dict[str, object]:
    """One row of the results: ``ours`` and ``theirs`` are the per-repetition seconds."""
    t_ours, t_theirs = median(ours), median(theirs)
    peak_key = "fp32_peak_gflops" if metric == "gflops" else "bandwidth_gbps"
    rate_ours, rate_theirs = _rate(work, t_ours), _rate(work, t_theirs)
    return {
        "op": case.op, "variant": variant, "layer": case.layer, "net": case.net, "batch": case.batch,
        "dtype": case.dtype,
        "pass": pass_, "device": device, "torch_impl": torch_impl,
        "input_shape": list(case.input_shape), "params": dict(case.params),
        "ours_ms": t_ours * 1e3, "torch_ms": t_theirs * 1e3,
        "ours_iqr_ms": iqr(ours) * 1e3, "torch_iqr_ms": iqr(theirs) * 1e3,
        "ratio_to_torch": t_ours / t_theirs, "repeats": len(ours),
        "metric": metric, "work": work,
        "gflops": rate_ours if metric == "gflops" else None,
        "gbps": rate_ours if metric == "gbps" else None,
        "torch_gflops": rate_theirs if metric == "gflops" else None,
        "torch_gbps": rate_theirs if metric == "gbps" else None,
        "peak": peak_key,
        "percent_of_peak": _percent(rate_ours, probes.get(peak_key)),
        "torch_percent_of_peak": _percent(rate_theirs, probes.get(peak_key)),
        "auto": auto,
    }


def run_layer_case(case: Case, device: str, settings: Settings, probes: Dict[str, object]) -> List[Dict]:
    """Times every contender of one layer case: an inference loop, then a training loop."""
    contest = ops.build(case, device, settings.direct_max_gflop)
    names = list(contest.ours) + list(contest.theirs)
    ops_by_name = {**contest.ours, **contest.theirs}
    context = lambda name: contest.contexts.get(name, contextlib.nullcontext)  # noqa: E731
    timing = dict(repeats=settings.repeats, warmup=settings.warmup, device=device,
                  min_repeats=settings.min_repeats, budget_s=settings.budget_s)
    fwd = interleaved({n: ops.forward(ops_by_name[n], contest.inputs, context(n)) for n in names}, **timing)
    train = interleaved({n: ops.forward_backward(ops_by_name[n], contest.inputs, contest.grad, context(n))
                         for n in names}, **timing)
    series = {
        "fwd": lambda s: fwd[s].series(),
        "bwd": lambda s: train[s].series([1]),
        "fwd+bwd": lambda s: train[s].series(),
    }
    rows = []
    for name, impl in contest.rows():
        for pass_, of in series.items():
            row = make_row(case, device, contest.variant(name), impl, pass_, of(name), of(impl), contest.metric,
                           contest.work[pass_], probes, auto=contest.is_auto(name))
            rows.append(row)
    return rows


def run_model_case(case: Case, device: str, settings: Settings, probes: Dict[str, object]) -> List[Dict]:
    """Times convnet4 (fastconv, fused fastconv, torch) on one training step or one inference."""
    ours, theirs, contexts, pairs = model.contenders(case, device)
    work = model.flops(case)[case.params["mode"]]
    samples = interleaved(model.candidates(case, device, ours, theirs, contexts), repeats=settings.repeats,
                          warmup=max(settings.warmup, 2), device=device, min_repeats=settings.min_repeats,
                          budget_s=settings.budget_s * 2)
    rows = []
    for name, impl in pairs:
        row = make_row(case, device, ops.Contest.variant(name), impl, case.params["mode"], samples[name].series(),
                       samples[impl].series(), "gflops", work, probes)
        if case.params["mode"] == "step":
            row["phases_ms"] = {"ours": _phases(samples[name]), "torch": _phases(samples[impl])}
        rows.append(row)
    return rows


def _phases(samples: Samples) -> Dict[str, float]:
    return {name: median(samples.series([i])) * 1e3 for i, name in enumerate(("fwd", "bwd", "update"))}


def run_device(device: str, settings: Settings, only: Optional[Sequence[str]] = None,
               batches: Optional[Sequence[int]] = None, nets: Optional[Sequence[str]] = None,
               progress: bool = True, command: str = "", dtypes: Sequence[str] = ("float32",)) -> Dict[str, object]:
    """Probes the machine, runs every selected case on ``device``; the results document."""
    info = machine.machine_info(device)
    busy = info["load_average_start"]
    if busy is not None and busy > 0.5:
        print(f"{device}: the machine is busy (load average {busy:.1f} before the run): other work shares "
              "the cores, and the figures will be noisy", file=sys.stderr)
    selected = cases_mod.select(device, settings.quick, only, batches, nets, dtypes)
    probes = machine.probe(device, info, quick=settings.quick)
    rows: List[Dict] = []
    left_out: List[str] = []
    began = time.perf_counter()
    with _device_settings(device) as recorded, tqdm(total=len(selected), file=sys.stderr, unit="case",
                                                   disable=not progress, dynamic_ncols=True) as bar:
        for case in selected:
            if settings.time_limit_s is not None and time.perf_counter() - began > settings.time_limit_s:
                left_out.append(f"{case.op} {case.layer} N={case.batch}")
                continue
            bar.set_description(f"{device} {case.op} {case.layer} N={case.batch}")
            run = run_model_case if case.op == "model" else run_layer_case
            rows += run(case, device, settings, probes)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            bar.update()
    info["load_average_end"] = machine.load_average()
    if left_out:
        print(f"{device}: the time limit ({settings.time_limit_s:g} s) left out {len(left_out)} of "
              f"{len(selected)} cases, from {left_out[0]}", file=sys.stderr)
    return {
        "schema": SCHEMA_ID,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": device,
        "settings": {**vars(settings), **recorded, "threads": torch.get_num_threads(),
                     "only": list(only) if only else None, "batches": list(batches) if batches else None,
                     "nets": list(nets) if nets else None, "dtypes": list(dtypes), "cases_left_out": left_out},
        "machine": info,
        "versions": machine.versions(),
        "probes": probes,
        "rows": rows,
    }


def write(doc: Dict[str, object], out: Path) -> List[Path]:
    """``<device>-<machine>.json`` and the chart ``.png`` beside it, in ``out``."""
    schema.check(doc)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['device']}-{machine.slug(str(doc['device']), doc['machine'])}"
    json_path = out / f"{stem}.json"
    json_path.write_text(schema.dumps(doc))
    png_path = out / f"{stem}.png"
    report.chart(doc, png_path)
    return [json_path, png_path]
