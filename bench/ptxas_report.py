"""What ptxas says about every CUDA kernel: registers, shared memory, spills (``nvcc -Xptxas
-v``), and the 64-bit divisions in its PTX. The GPU performance model (bench/cuda_model.py) reads
kernels through ``kernel_resources``; run as a script it regenerates
bench/results/ptxas_conv2d.txt, the convolution kernels' table.

Usage: python bench/ptxas_report.py [--archs 80 90] [--out bench/results/ptxas_conv2d.txt]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
CONV2D_UNITS = ["csrc/cuda/conv2d.cu", "csrc/cuda/conv2d_half.cu"]
FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-Xptxas", "-v", "-I", str(ROOT / "csrc")]


def all_units() -> List[str]:
    """Every nvcc unit of the extension's kernels."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc/cuda").glob("*.cu"))


def compile_unit(unit: str, arch: str) -> Tuple[List[str], str]:
    """Compiles one unit for one arch: ptxas' verbose report (lines) and the unit's PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["nvcc", *FLAGS, f"-arch=sm_{arch}", "--keep", "--keep-dir", tmp, "-c", str(ROOT / unit),
               "-o", str(Path(tmp) / "unit.o")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"nvcc failed for {unit} sm_{arch}:\n{run.stderr}")
        ptx = "\n".join(p.read_text() for p in sorted(Path(tmp).glob("*.ptx")))
    return run.stderr.splitlines(), ptx


def ptxas_lines(unit: str, arch: str) -> List[str]:
    return compile_unit(unit, arch)[0]


def demangle(names: List[str]) -> List[str]:
    if not names or not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines()


def parse(lines: List[str]) -> List[Dict]:
    """One record per kernel: name, registers, smem bytes, stack, spill stores/loads."""
    kernels: List[Dict] = []
    current = None
    for line in lines:
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = {"mangled": m.group(1), "regs": 0, "smem": 0, "stack": 0, "spill_st": 0, "spill_ld": 0}
            kernels.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current["stack"], current["spill_st"], current["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s.group(1)) if s else 0
    for k, name in zip(kernels, demangle([k["mangled"] for k in kernels])):
        k["name"] = re.sub(r"fastconv::cuda::", "", name.split("(")[0])
    return kernels


_ENTRY = re.compile(r"^\.(?:visible|weak)?\s*\.entry\s+(\w+)\(", re.M)
_DIV64 = re.compile(r"\b(?:div|rem)\.[su]64\b")
_LABEL = re.compile(r"^(\$\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$\w+);")


def ptx_entries(ptx: str) -> Dict[str, str]:
    """The body of every kernel (.entry) in a PTX text, by mangled name."""
    bodies = {}
    for m in _ENTRY.finditer(ptx):
        end = ptx.find("\n}\n", m.end())
        bodies[m.group(1)] = ptx[m.end():end if end >= 0 else len(ptx)]
    return bodies


def divisions_64(body: str) -> Dict[str, int]:
    """64-bit integer divisions and remainders (``div``/``rem`` ``.s64``/``.u64``: a software
    routine of dozens of instructions on every GPU) in one kernel's PTX, in all and inside loops.
    A loop is the span from a label to a later branch back to it."""
    lines = body.splitlines()
    labels: Dict[str, int] = {}
    loop_end: Dict[str, int] = {}  # label -> its last backward branch (a `continue` adds another)
    for i, line in enumerate(lines):
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = i
        m = _BRANCH.search(line)
        if m and m.group(1) in labels:  # the label came first: a backward branch
            loop_end[m.group(1)] = i
    loops = [(labels[label], end) for label, end in loop_end.items()]
    at = [i for i, line in enumerate(lines) if _DIV64.search(line)]
    depth = [sum(a <= i <= b for a, b in loops) for i in at]
    # Depth 1 is usually a grid-stride loop (once per element or work item), depth 2 and more a
    # loop inside one (once per reduction step): the deeper, the hotter.
    return {"div64": len(at), "div64_in_loop": sum(d > 0 for d in depth),
            "div64_loop_depth": max(depth, default=0)}


def kernel_resources(arch: str, units: List[str], progress=None) -> List[Dict]:
    """ptxas' record of every kernel in ``units`` for one arch, with its 64-bit divisions. The
    units compile side by side, one nvcc per core; the records keep the order of ``units``."""
    kernels = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(units), os.cpu_count() or 1))) as pool:
        for unit, (lines, ptx) in zip(units, pool.map(lambda unit: compile_unit(unit, arch), units)):
            if progress is not None:
                progress(unit)
            bodies = ptx_entries(ptx)
            for k in parse(lines):
                k.update(divisions_64(bodies.get(k["mangled"], "")), unit=unit, arch=f"sm_{arch}")
                kernels.append(k)
    return kernels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["80", "90"])
    ap.add_argument("--out", default=str(ROOT / "bench/results/ptxas_conv2d.txt"))
    args = ap.parse_args()
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    report = [
        "# ptxas -v for the conv2d kernels (csrc/cuda/conv2d*.cuh), regenerated by bench/ptxas_report.py",
        f"# {version}",
        "# smem: static shared memory only; the direct forward/backward-input kernels add dynamic",
        "# shared memory at launch (at most 48 KiB, chosen from the kernel size).",
        "",
    ]
    total_spills = 0
    for arch in args.archs:
        kernels = [k for unit in CONV2D_UNITS for k in parse(ptxas_lines(unit, arch))]
        kernels.sort(key=lambda k: k["name"])
        report.append(f"== sm_{arch} ({len(kernels)} kernels)")
        report.append(f"{'regs':>5} {'smem':>6} {'stack':>5} {'spill st/ld':>11}  kernel")
        for k in kernels:
            total_spills += k["spill_st"] + k["spill_ld"]
            report.append(
                f"{k['regs']:>5} {k['smem']:>6} {k['stack']:>5} {k['spill_st']:>5}/{k['spill_ld']:<5}  {k['name']}"
            )
        report.append("")
    report.append(f"total spill bytes (stores + loads, all archs): {total_spills}")
    Path(args.out).write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}: total spill bytes {total_spills}")


if __name__ == "__main__":
    main()
