"""Theoretical occupancy through the CUDA toolkit's calculator (cuda_occupancy.h).

bench/occupancy.cpp wraps ``cudaOccMaxActiveBlocksPerMultiprocessor``; it is compiled with the
host compiler the first time (cached under build/cuda_model/, keyed by its source) and asked for
all queries in one run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from .gpus import Gpu

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(__file__).with_name("occupancy.cpp")
CACHE = ROOT / "build" / "cuda_model"

# cudaOccLimitingFactor bits, by what they mean.
LIMITS = {0x01: "warps", 0x02: "registers", 0x04: "shared memory", 0x08: "blocks", 0x10: "barriers"}


@dataclass(frozen=True)
class Query:
    kernel_max_threads: int     # the kernel's __launch_bounds__ (1024 without one)
    regs: int
    static_smem: int
    block_threads: int
    dynamic_smem: int


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float             # resident warps / the SM's maximum
    limited_by: str             # "registers", "shared memory", ... ("" when nothing limits below the maximum)


def cuda_include() -> Path:
    """The toolkit's include folder (CUDA_HOME, else the one beside nvcc)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(home) / "include"] if home else []
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(subprocess.run(["readlink", "-f", nvcc], capture_output=True, text=True).stdout.strip() or nvcc)
        candidates.append(real.parent.parent / "include")
    candidates += [Path("/usr/local/cuda/include")]
    for folder in candidates:
        if (folder / "cuda_occupancy.h").exists():
            return folder
    raise FileNotFoundError("cuda_occupancy.h not found: set CUDA_HOME to the CUDA toolkit")


def helper() -> Path:
    """The compiled calculator, built once per version of its source."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = CACHE / f"occupancy-{digest}"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        compiler = os.environ.get("CXX", "g++")
        subprocess.run([compiler, "-O1", "-std=c++17", "-I", str(cuda_include()), str(SOURCE), "-o", str(binary)],
                       check=True)
    return binary


def occupancy(gpu: Gpu, queries: Sequence[Query]) -> List[Occupancy]:
    """Resident blocks per SM of each launch configuration on ``gpu``."""
    if not queries:
        return []
    major, minor = gpu.compute_capability.split(".")
    lines = [" ".join(map(str, (major, minor, gpu.max_threads_per_sm, gpu.regs_per_sm, gpu.smem_per_sm,
                                gpu.smem_per_block_optin, gpu.smem_reserved_per_block, gpu.sms,
                                q.kernel_max_threads, q.regs, q.static_smem, q.block_threads, q.dynamic_smem)))
             for q in queries]
    out = subprocess.run([str(helper())], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout.split("\n")
    results = []
    for q, line in zip(queries, out):
        if line.strip() == "error":
            raise ValueError(f"cuda_occupancy.h rejects {q} on {gpu.name}")
        blocks, factors = (int(v) for v in line.split()[:2])
        warps = blocks * ((q.block_threads + 31) // 32)
        limited = ", ".join(name for bit, name in LIMITS.items() if factors & bit)
        results.append(Occupancy(blocks, warps, warps / gpu.max_warps_per_sm, limited))
    return results

