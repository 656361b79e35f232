"""The GPU performance model: what our CUDA kernels should do on a GPU we do not have.

    python -m bench.cuda_model --gpu h100            # or a100; writes bench/results/cuda_model_h100.{json,md}
    python -m bench.cuda_model --gpu h100 --batch 32 --out /tmp/model

For every CUDA kernel of the build, ``ptxas -v`` gives registers, static shared memory and spills,
and the PTX its 64-bit divisions (bench/ptxas_report.py). For every launch of the seed layers
(convnet4, convnet3, VGG16, the 1x1 and grouped layers of bench/cases.py) at batch 1 and 32 --
forward, input gradient, weight gradient and bias gradient of each convolution with both
algorithms, forward and backward of pooling, ReLU and dropout -- the real launchers run on the
SIMT runtime in a dry run (fastconv.simt.record_launches), which yields the exact grid, block and
dynamic shared memory without running a kernel. Per launch the model adds the theoretical
occupancy (the toolkit's cuda_occupancy.h, bench/occupancy.py), waves on the GPU's SMs, the
analytic FLOPs and minimum DRAM bytes (bench/kernel_work.py), the roofline lower bound and a
rough estimate that ranks the two convolution algorithms; then flags and a summary of targets.
bench/README.md ("The GPU model") documents every column.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import heapq
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

import fastconv
from fastconv.simt import kernel_symbols, record_launches, short_name

from . import cases, ptxas_report
from .gpus import GPUS, Gpu
from .kernel_work import (Conv, Work, conv_pass_work, elementwise_work, gemm_split_ranges, inner_loop_ceiling,
                          is_tensor_core, outputs_per_thread, tensor_peak_tflops)
from .occupancy import Occupancy, Query, occupancy

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "cuda_model"
SCHEMA_ID = "fastconv-cuda-model/1"
BATCHES = (1, 32)
SEED_NETS = ("convnet4", "convnet3", "vgg16")
OP_OF_KIND = {"conv": "conv2d", "pool": "max_pool2d", "relu": "relu", "dropout": "dropout"}
TWO_WAVES = 2.0
LOW_OCCUPANCY = 0.25


# --------------------------------------------------------------------------- kernels (ptxas)
def _source_digest(arch: str) -> str:
    """What the ptxas record of an arch depends on: the kernels' sources, nvcc, the flags."""
    h = hashlib.sha256()
    for folder in ("csrc/cuda", "csrc/common", "csrc/simt"):
        for path in sorted((ROOT / folder).glob("*")):
            if path.suffix in (".cu", ".cuh", ".h"):
                h.update(path.name.encode() + path.read_bytes())
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    flags = [f for f in ptxas_report.FLAGS if f != str(ROOT / "csrc")]  # where the checkout lies does not matter
    h.update((nvcc + " ".join(flags) + arch).encode())
    return h.hexdigest()[:16]


def kernel_table(arch: str, progress: bool = True) -> Dict[str, Dict]:
    """ptxas' record of every kernel in the build for ``sm_<arch>``, by mangled CUDA name; cached
    under build/cuda_model/ until a kernel source or nvcc changes."""
    cached = CACHE / f"ptxas-sm_{arch}-{_source_digest(arch)}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    units = ptxas_report.all_units()
    with tqdm(total=len(units), desc=f"ptxas sm_{arch}", unit="unit", file=sys.stderr, disable=not progress) as bar:
        kernels = ptxas_report.kernel_resources(arch, units, progress=lambda _unit: bar.update())
    table = {k["mangled"]: k for k in kernels}
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")  # renamed into place: a concurrent run never reads half a file
    partial.write_text(json.dumps(table, indent=1))
    partial.replace(cached)
    return table


def cuda_name(simt_mangled: str) -> str:
    """The CUDA build's mangled name of a SIMT kernel: the namespace fastconv::simt is fastconv::cuda."""
    return simt_mangled.replace("8fastconv4simt", "8fastconv4cuda")


# --------------------------------------------------------------------------- launches (dry run)
@dataclass(frozen=True)
class PassRun:
    """The recorded launches of one pass of one layer at one batch size."""

    layer: object                   # bench.cases.Layer
    batch: int
    algorithm: Optional[str]        # convolutions: "direct" or "im2col"
    auto: Optional[bool]            # convolutions: whether algorithm="auto" runs this algorithm
    pass_: str
    launches: tuple                 # fastconv.simt.Launch


def conv_of(layer, batch: int) -> Conv:
    c, h, w = layer.shape
    p = layer.params
    return Conv(batch, c, h, w, p["out_channels"], p["kernel"], p["kernel"], p["stride"], p["padding"], p["groups"])


def _record(call) -> tuple:
    with record_launches(dry_run=True) as launches:
        call()
    return tuple(launches)


def record_layer(layer, batch: int, tf32: bool = False, dtype: torch.dtype = torch.float32) -> List[PassRun]:
    """Every pass of one layer at one batch size, in a dry run (shapes only: tensors are
    torch.empty, never touched). ``tf32``: float32 convolutions on TF32 tensor cores, as CUDA
    tensors run them under torch.backends.cudnn.allow_tf32 (torch's default). ``dtype``
    float16: every op in half precision, the convolutions' GEMMs on tensor cores."""
    ops = torch.ops.fastconv
    be = "simt:tf32" if tf32 else "simt"
    tensor_cores = tf32 or dtype == torch.float16
    x = torch.empty((batch,) + tuple(layer.shape), dtype=dtype)
    p = layer.params
    runs: List[PassRun] = []
    if layer.kind == "conv":
        conv = conv_of(layer, batch)
        w = torch.empty(conv.k, conv.cg, conv.r, conv.s, dtype=dtype)
        b = torch.empty(conv.k, dtype=dtype)
        dy = torch.empty(batch, conv.k, conv.p, conv.q, dtype=dtype)
        geo = ([conv.stride] * 2, [conv.pad] * 4, [1, 1], conv.groups)
        auto = {pass_: fastconv._C.conv2d_auto_algorithm("cuda", pass_, list(x.shape), list(w.shape), geo[0],
                                                         [conv.pad] * 2, [1, 1], conv.groups, tensor_cores)
                for pass_ in ("fwd", "bwd_input", "bwd_weight")}
        for algorithm in ("direct", "im2col"):
            calls = {
                "fwd": lambda: ops.conv2d(x, w, b, *geo, algorithm, be),
                "bwd_input": lambda: ops.conv2d_backward_input(dy, w, list(x.shape), *geo, algorithm, be),
                "bwd_weight": lambda: ops.conv2d_backward_weight(dy, x, list(w.shape), *geo, algorithm, be),
            }
            for pass_, call in calls.items():
                runs.append(PassRun(layer, batch, algorithm, algorithm == auto[pass_], pass_, _record(call)))
        # One kernel whatever the algorithm.
        runs.append(PassRun(layer, batch, None, None, "bwd_bias", _record(lambda: ops.conv2d_backward_bias(dy, be))))
        return runs
    if layer.kind == "pool":
        k, s = [p["kernel"]] * 2, [p["stride"]] * 2
        fwd = _record(lambda: ops.max_pool2d(x, k, s, [0, 0], [1, 1], False, be))
        c, h, w = layer.shape
        out_shape = (batch, c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)
        dy, idx = torch.empty(out_shape, dtype=dtype), torch.empty(out_shape, dtype=torch.int64)
        bwd = _record(lambda: ops.max_pool2d_backward(dy, idx, list(x.shape), k, s, [0, 0], [1, 1], False, be))
    elif layer.kind == "relu":
        fwd = _record(lambda: ops.relu(x, be))
        bwd = _record(lambda: ops.relu_backward(torch.empty_like(x), torch.empty_like(x), be))
    else:
        seed = torch.zeros(2, dtype=torch.int64)
        fwd = _record(lambda: ops.dropout(x, float(p["p"]), seed, be))
        bwd = _record(lambda: ops.dropout_backward(torch.empty_like(x), float(p["p"]), seed, be))
    return [PassRun(layer, batch, None, None, "fwd", fwd), PassRun(layer, batch, None, None, "bwd", bwd)]


def pass_work(run: PassRun, gpu: Gpu, elem: int = 4) -> List[Work]:
    """The work of each launch of a pass on ``gpu``, on elements of ``elem`` bytes."""
    kernels = [launch.kernel for launch in run.launches]
    if run.layer.kind == "conv":
        conv = conv_of(run.layer, run.batch)
        tensor_cores = any(is_tensor_core(k) for k in kernels)
        return conv_pass_work(conv, run.pass_, kernels, elem, [launch.blocks for launch in run.launches],
                              lambda images, tile: gemm_split_ranges(conv, run.pass_, images, gpu.sms,
                                                                     gpu.fp32_lanes_per_sm, tensor_cores, elem, tile))
    n_in = run.batch * math.prod(run.layer.shape)
    n_out = n_in
    if run.layer.kind == "pool":
        c, h, w = run.layer.shape
        k, s = run.layer.params["kernel"], run.layer.params["stride"]
        n_out = run.batch * c * ((h - k) // s + 1) * ((w - k) // s + 1)
    work = elementwise_work(OP_OF_KIND[run.layer.kind], run.pass_, n_in, n_out, elem)
    share = 1.0 / max(1, len(kernels))
    return [Work(work.flops * share, work.bytes * share, int(work.outputs * share)) for _ in kernels]


# --------------------------------------------------------------------------- the model of one launch
def launch_rows(gpu: Gpu, runs: Sequence[PassRun], kernels: Dict[str, Dict], elem: int = 4) -> List[Dict]:
    """One row per launch: the recorded configuration, the kernel's resources, occupancy, waves,
    work, the roofline bound, the estimate and flags."""
    pending = []
    for run in runs:
        for seq, (launch, work) in enumerate(zip(run.launches, pass_work(run, gpu, elem))):
            info = kernels.get(cuda_name(launch.mangled))
            if info is None:
                raise KeyError(f"{launch.kernel}: launched on SIMT but ptxas compiled no such CUDA kernel "
                               f"({cuda_name(launch.mangled)})")
            pending.append((run, seq, launch, work, info))
    queries = [Query(launch_bound(launch), info["regs"], info["smem"], launch.threads, launch.smem)
               for _run, _seq, launch, _work, info in pending]
    unique = sorted(set(queries), key=repr)
    occ = dict(zip(unique, occupancy(gpu, unique)))
    return [_row(gpu, run, seq, launch, work, info, occ[q]) for (run, seq, launch, work, info), q in zip(pending, queries)]


def slot_efficiency(items: Sequence[Tuple[int, int]], resident: int, grid: Optional[int] = None) -> float:
    """The busy fraction of a launch's ``resident`` block slots until its last work item ends.
    ``items``: runs of (count, reduction length) in launch order; a block takes items ``grid``
    apart (all of them one each where there are no more items than blocks), its time the sum of
    their lengths, and starts on the first slot to come free. Under one wave of equal items this
    is the waves; between one and two, a second wave's idle tail counts (320 equal tiles on 264
    slots: 0.61), which a split of the last problems into shorter ranges recovers."""
    total = sum(count * length for count, length in items)
    if total == 0:
        return 1.0
    if grid is not None and sum(count for count, _ in items) > grid:
        blocks = [0] * grid
        i = 0
        for count, length in items:
            for _ in range(count):
                blocks[i % grid] += length
                i += 1
        items = [(1, length) for length in blocks]
    slots = [0] * resident  # a heap of the times the slots come free
    for count, length in items:
        if length == 0:
            continue
        # Whole rounds of equal items at once while every slot comes free at the same time.
        rounds, rest = divmod(count, resident) if slots[0] == max(slots) else (0, count)
        if rounds:
            slots = [t + rounds * length for t in slots]
        for _ in range(rest):
            heapq.heapreplace(slots, slots[0] + length)
    return total / (resident * max(slots))


def launch_bound(launch) -> int:
    symbol = kernel_symbols().get(launch.offset)
    return symbol.launch_bound if symbol and symbol.launch_bound else 1024


def _row(gpu: Gpu, run: PassRun, seq: int, launch, work: Work, info: Dict, occ: Occupancy) -> Dict:
    layer = run.layer
    resident = max(1, gpu.sms * occ.blocks_per_sm)
    waves = launch.blocks / resident
    peak = (tensor_peak_tflops(launch.kernel, gpu) if is_tensor_core(launch.kernel) else gpu.fp32_tflops) * 1e12
    bandwidth = gpu.dram_gbps * 1e9
    stride = layer.params.get("stride", 1) if layer.kind == "conv" else 1
    ceiling = inner_loop_ceiling(launch.kernel, gpu, stride)
    roofline_s = max(work.flops / peak, work.bytes / bandwidth)
    compute_s = work.flops / (peak * (ceiling or 1.0) * work.tile_efficiency)
    busy = slot_efficiency(work.items, resident, launch.blocks) if work.items else min(1.0, waves)
    model_s = max(compute_s, work.bytes / bandwidth) / busy
    spill = info["spill_st"] + info["spill_ld"]
    flags = []
    if spill:
        flags.append("spill")
    # Under one (two) waves although the work could fill a whole wave (two) at one piece per thread
    # (an elementwise kernel's thread takes a pack of outputs).
    pieces = work.outputs / outputs_per_thread(launch.kernel)
    if waves < 1 and pieces >= resident * launch.threads:
        flags.append("under 1 wave")
    elif waves < TWO_WAVES and pieces >= TWO_WAVES * resident * launch.threads:
        flags.append("under 2 waves")
    if occ.fraction < LOW_OCCUPANCY:
        flags.append("occupancy < 25%")
    if info["div64_in_loop"]:
        flags.append("div64 in loop")
    return {
        "op": OP_OF_KIND[layer.kind], "net": layer.net, "layer": layer.label, "batch": run.batch,
        "algorithm": run.algorithm, "auto": run.auto, "pass": run.pass_, "seq": seq,
        "kernel": launch.kernel, "grid": list(launch.grid), "block": list(launch.block), "dynamic_smem": launch.smem,
        "blocks": launch.blocks, "threads_per_block": launch.threads,
        "regs": info["regs"], "static_smem": info["smem"], "spill_bytes": spill,
        "div64_in_loop": info["div64_in_loop"],
        "blocks_per_sm": occ.blocks_per_sm, "occupancy": occ.fraction, "occupancy_limited_by": occ.limited_by,
        "waves": waves, "flops": work.flops, "dram_bytes": work.bytes,
        "intensity": work.flops / work.bytes if work.bytes else None,
        "tile_efficiency": work.tile_efficiency, "inner_loop_ceiling": ceiling,
        "roofline_us": roofline_s * 1e6, "model_us": model_s * 1e6, "flags": flags,
    }


# --------------------------------------------------------------------------- summaries
def _key(row: Dict) -> Tuple:
    return (row["op"], row["net"], row["layer"], row["batch"], row["algorithm"], row["pass"])


def pass_totals(rows: Iterable[Dict]) -> List[Dict]:
    """Launches, FLOPs, bytes, bound and estimate summed per pass of each layer and algorithm."""
    totals: Dict[Tuple, Dict] = {}
    for r in rows:
        t = totals.setdefault(_key(r), {"op": r["op"], "net": r["net"], "layer": r["layer"], "batch": r["batch"],
                                        "algorithm": r["algorithm"], "auto": r["auto"], "pass": r["pass"],
                                        "launches": 0, "flops": 0.0, "dram_bytes": 0.0, "roofline_us": 0.0,
                                        "model_us": 0.0, "min_waves": math.inf})
        t["launches"] += 1
        for field in ("flops", "dram_bytes", "roofline_us", "model_us"):
            t[field] += r[field]
        t["min_waves"] = min(t["min_waves"], r["waves"])
    return list(totals.values())


def auto_rule(totals: Sequence[Dict]) -> List[Dict]:
    """Per convolution, batch and pass (forward, input and weight gradient): the estimate with
    each algorithm, the faster one, and the one "auto" runs."""
    entries: Dict[Tuple, Dict] = {}
    for t in totals:
        if t["op"] != "conv2d" or t["algorithm"] is None:
            continue
        entry = entries.setdefault((t["net"], t["layer"], t["batch"], t["pass"]),
                                   {"net": t["net"], "layer": t["layer"], "batch": t["batch"], "pass": t["pass"],
                                    "direct_us": 0.0, "im2col_us": 0.0, "auto": None})
        entry[f"{t['algorithm']}_us"] += t["model_us"]
        if t["auto"]:
            entry["auto"] = t["algorithm"]
    for entry in entries.values():
        entry["faster"] = "direct" if entry["direct_us"] < entry["im2col_us"] else "im2col"
        entry["agrees"] = entry["faster"] == entry["auto"]
    return list(entries.values())


def runs_auto(row: Dict) -> bool:
    """Whether the launch is one that the layer really runs (convolutions: the auto algorithm)."""
    return row["auto"] is None or row["auto"]


def targets(rows: Sequence[Dict], batch: int = 32) -> Dict[str, object]:
    """The checkable targets on the seed layers at ``batch`` (convolutions with the algorithm
    auto runs): launches under two waves, and the kernels launched that spill, run under 25%
    occupancy or divide in 64 bits inside a loop."""
    seed = [r for r in rows if r["net"] in SEED_NETS and r["batch"] == batch and runs_auto(r)]
    kernels = lambda pred: sorted({r["kernel"] for r in seed if pred(r)})  # noqa: E731
    label = lambda r: f"{r['layer']} {r['pass']} {r['kernel'].split('<')[0]} ({r['waves']:.2f})"  # noqa: E731
    under = [label(r) for r in seed if r["waves"] < TWO_WAVES]
    # The actionable part: under one (two) waves although the launch had more pieces of work than
    # one (two) waves of threads.
    starved = [label(r) for r in seed if "under 1 wave" in r["flags"]]
    spreadable = [label(r) for r in seed if {"under 1 wave", "under 2 waves"} & set(r["flags"])]
    spills = kernels(lambda r: r["spill_bytes"] > 0)
    low = kernels(lambda r: r["occupancy"] < LOW_OCCUPANCY)
    div = kernels(lambda r: r["div64_in_loop"] > 0)
    return {"batch": batch, "launches": len(seed),
            "launches_under_2_waves": len(under), "launches_flagged_under_2_waves": len(spreadable),
            "launches_flagged_under_1_wave": len(starved),
            "kernels_with_spills": len(spills),
            "kernels_under_25pct_occupancy": len(low), "kernels_with_div64_in_loops": len(div),
            "lists": {"launches_under_2_waves": sorted(set(under)),
                      "launches_flagged_under_2_waves": sorted(set(spreadable)),
                      "launches_flagged_under_1_wave": sorted(set(starved)), "kernels_with_spills": spills,
                      "kernels_under_25pct_occupancy": low, "kernels_with_div64_in_loops": div}}


# --------------------------------------------------------------------------- the run
def _git_commit() -> str:
    """HEAD, with -dirty where sources differ from it (results files, this run's own output
    among them, do not count)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(git + ["status", "--porcelain", "--", ".", ":(exclude)bench/results"],
                             capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("-dirty" if changed else "")


def layers() -> List:
    return cases.seed_layers()


DTYPES = {"float32": torch.float32, "float16": torch.float16}


def build_model(gpu_key: str, batches: Sequence[int] = BATCHES, progress: bool = True, command: str = "",
                tf32: bool = False, dtype: str = "float32") -> Dict:
    if tf32 and dtype != "float32":
        raise ValueError("tf32 applies to float32 convolutions only")
    gpu = GPUS[gpu_key]
    kernels = kernel_table(gpu.arch, progress)
    work_list = [(layer, batch) for layer in layers() for batch in batches]
    runs: List[PassRun] = []
    # The launchers size split reductions by the device's multiprocessor count and weigh GEMM tiles
    # by its compute capability: the SIMT device reports the modelled GPU's while recording (0
    # restores FASTCONV_SIMT_SM_COUNT and FASTCONV_SIMT_ARCH, else 132 and 90).
    fastconv._C.simt_set_multiprocessor_count(gpu.sms)
    fastconv._C.simt_set_compute_capability(int(gpu.arch))
    try:
        for layer, batch in tqdm(work_list, desc=f"dry runs ({gpu_key})", unit="layer", file=sys.stderr,
                                 disable=not progress):
            runs += record_layer(layer, batch, tf32, DTYPES[dtype])
    finally:
        fastconv._C.simt_set_multiprocessor_count(0)
        fastconv._C.simt_set_compute_capability(0)
    rows = launch_rows(gpu, runs, kernels, DTYPES[dtype].itemsize)
    totals = pass_totals(rows)
    kernel_list = sorted(kernels.values(), key=lambda k: short_name(k["name"]))
    return {
        "schema": SCHEMA_ID,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "commit": _git_commit(),
        "nvcc": subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1],
        "gpu": {"key": gpu_key, **gpu.as_dict()},
        "tf32": tf32,
        "dtype": dtype,
        "kernels": [{"name": short_name(k["name"]), "mangled": k["mangled"], "unit": k["unit"], "arch": k["arch"],
                     "regs": k["regs"], "static_smem": k["smem"], "stack": k["stack"],
                     "spill_bytes": k["spill_st"] + k["spill_ld"], "div64": k["div64"],
                     "div64_in_loop": k["div64_in_loop"], "div64_loop_depth": k["div64_loop_depth"]}
                    for k in kernel_list],
        "targets": {f"seed_layers_batch_{b}": targets(rows, b) for b in batches},
        "auto_rule": auto_rule(totals),
        "passes": totals,
        "launches": rows,
    }


# --------------------------------------------------------------------------- reports
def _fmt_us(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def markdown(doc: Dict, full: bool = True) -> str:
    """The report: targets and the algorithm table, then (``full``) every launch and kernel, or
    (not ``full``, for the terminal) one line per pass of each layer."""
    gpu = doc["gpu"]
    math_note = ("float16 on tensor cores" if doc.get("dtype") == "float16"
                 else "float32 on TF32 tensor cores" if doc["tf32"] else "float32 on CUDA cores (TF32 off)")
    lines = [f"# CUDA kernel model: {gpu['name']} (sm_{gpu['arch']}), {math_note}", "",
             f"{gpu['sms']} SMs, FP32 {gpu['fp32_tflops']} TFLOP/s, DRAM {gpu['dram_gbps']:.0f} GB/s; "
             f"commit {doc['commit']}, {doc['nvcc']}. Generated by `{doc['command']}`.", "",
             "## Targets (seed layers, the algorithm auto runs)", "",
             "| batch | launches | under 2 waves | under 2 waves with more to spread "
             "| under 1 wave with more to spread | kernels with spills "
             "| kernels under 25% occupancy | kernels with 64-bit division in a loop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in doc["targets"].values():
        lines.append(f"| {t['batch']} | {t['launches']} | {t['launches_under_2_waves']} | "
                     f"{t['launches_flagged_under_2_waves']} | "
                     f"{t['launches_flagged_under_1_wave']} | {t['kernels_with_spills']} "
                     f"| {t['kernels_under_25pct_occupancy']} | {t['kernels_with_div64_in_loops']} |")
    for t in doc["targets"].values():
        lists = t["lists"]
        lines += ["", f"Batch {t['batch']}: under 2 waves with more to spread (under 1 wave: the first number "
                  "below 1): " + ("; ".join(lists["launches_flagged_under_2_waves"]) or "none")
                  + ". Under 25% occupancy: "
                  + (", ".join(f"`{k}`" for k in lists["kernels_under_25pct_occupancy"]) or "none")
                  + ". 64-bit division in a loop: "
                  + (", ".join(f"`{k}`" for k in lists["kernels_with_div64_in_loops"]) or "none") + "."]
    lines += ["", "## conv2d: direct (d) or im2col (i), model estimate in µs; the arrow: what auto runs", "",
              "| net | layer | batch | forward | input gradient | weight gradient |", "| --- | --- | --- | --- | --- | --- |"]
    rule: Dict[Tuple, Dict[str, Dict]] = defaultdict(dict)
    for e in doc["auto_rule"]:
        rule[(e["net"], e["layer"], e["batch"])][e["pass"]] = e
    for (net, layer, batch), by_pass in rule.items():
        cells = []
        for pass_ in ("fwd", "bwd_input", "bwd_weight"):
            e = by_pass[pass_]
            cells.append(f"d {_fmt_us(e['direct_us'])} / i {_fmt_us(e['im2col_us'])} -> {e['auto'][0]}"
                         + ("" if e["agrees"] else " (slower)"))
        lines.append(f"| {net} | {layer} | {batch} | " + " | ".join(cells) + " |")
    agree = sum(e["agrees"] for e in doc["auto_rule"])
    lines += ["", f"auto runs the faster algorithm in {agree} of {len(doc['auto_rule'])} passes.", ""]
    if not full:
        return "\n".join(lines + _pass_table(doc)) + "\n"
    lines += ["", "## Launches (the algorithm auto runs; identical consecutive launches merged)", "",
              "| layer | N | pass | kernel | launches | grid x block | smem | occ. | waves | GFLOP | MB "
              "| FLOP/B | bound µs | model µs | flags |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for group in _merged(r for r in doc["launches"] if runs_auto(r)):
        r, n = group[0], len(group)
        flops, mb = sum(g["flops"] for g in group) / 1e9, sum(g["dram_bytes"] for g in group) / 1e6
        ai = f"{r['intensity']:.1f}" if r["intensity"] else "-"
        lines.append(f"| {r['layer']} | {r['batch']} | {r['pass']} | `{r['kernel']}` | {n} | "
                     f"{r['blocks']} x {r['threads_per_block']} | {r['static_smem'] + r['dynamic_smem']} | "
                     f"{r['occupancy']:.0%} | {r['waves']:.2f} | {flops:.3g} | {mb:.3g} | {ai} | "
                     f"{_fmt_us(sum(g['roofline_us'] for g in group))} | {_fmt_us(sum(g['model_us'] for g in group))} "
                     f"| {', '.join(r['flags'])} |")
    lines += ["", "## Kernels (ptxas -v)", "", "| kernel | regs | static smem | spill bytes | 64-bit div (in loops) |",
              "| --- | --- | --- | --- | --- |"]
    for k in doc["kernels"]:
        lines.append(f"| `{k['name']}` | {k['regs']} | {k['static_smem']} | {k['spill_bytes']} | "
                     f"{k['div64']} ({k['div64_in_loop']}) |")
    return "\n".join(lines) + "\n"


def _pass_table(doc: Dict) -> List[str]:
    lines = ["## Passes (the algorithm auto runs)", "",
             "| layer | N | pass | launches | fewest waves | GFLOP | MB | bound µs | model µs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in doc["passes"]:
        if t["auto"] is False:
            continue
        lines.append(f"| {t['layer']} | {t['batch']} | {t['pass']} | {t['launches']} | {t['min_waves']:.2f} | "
                     f"{t['flops'] / 1e9:.3g} | {t['dram_bytes'] / 1e6:.3g} | {_fmt_us(t['roofline_us'])} | "
                     f"{_fmt_us(t['model_us'])} |")
    return lines


def _merged(rows: Iterable[Dict]) -> List[List[Dict]]:
    groups: List[List[Dict]] = []
    same = ("layer", "batch", "pass", "kernel", "grid", "block", "dynamic_smem")
    for r in rows:
        if groups and all(groups[-1][0][f] == r[f] for f in same):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _dumps(doc: Dict) -> str:
    """JSON with one record per line in the long lists, so that a rerun diffs line by line."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            body = ",\n".join("  " + json.dumps(item) for item in value)
            parts.append(f" {json.dumps(key)}: [\n{body}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value, indent=1)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write(doc: Dict, out: Path) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_fp16" if doc.get("dtype") == "float16" else "_tf32" if doc["tf32"] else ""
    stem = out / f"cuda_model_{doc['gpu']['key']}{suffix}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(_dumps(doc))
    md_path.write_text(markdown(doc))
    return [json_path, md_path]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cuda_model", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="the GPU to model (bench/gpus.py)")
    ap.add_argument("--batch", nargs="+", type=int, default=list(BATCHES), help="batch sizes (default 1 32)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                    help="folder for cuda_model_<gpu>.json and .md (default bench/results)")
    ap.add_argument("--tf32", action="store_true",
                    help="float32 convolutions on TF32 tensor cores, as CUDA tensors run them by default "
                         "(torch.backends.cudnn.allow_tf32); writes cuda_model_<gpu>_tf32.*")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                    help="float16: every op in half precision, the convolutions on tensor cores; writes "
                         "cuda_model_<gpu>_fp16.*")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.tf32 and args.dtype != "float32":
        ap.error("--tf32 applies to float32 only")
    command = "python -m bench.cuda_model " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = build_model(args.gpu, args.batch, progress=not args.no_progress, command=command.strip(), tf32=args.tf32,
                      dtype=args.dtype)
    print(markdown(doc, full=False))
    for path in write(doc, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
