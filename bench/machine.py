"""What a run was measured on, and that machine's limits, probed at the start of each run.

``probe(device)`` returns the two limits every row is compared with:

* ``fp32_peak_gflops`` — the best fp32 rate a tuned library reaches here on a large matrix
  product: on the CPU the better of MKL's sgemm (``torch.mm``, 2048x2048) and oneDNN's
  (a 1x1 convolution, which oneDNN runs as a GEMM with its JIT kernels; on AMD CPUs it uses
  AVX-512 where MKL may not); on a GPU cuBLAS's sgemm with TF32 off (8192x8192). It is an
  *achievable* peak, not the data sheet's: percent_of_peak reads as "share of what the best
  library reaches on this machine".
* ``bandwidth_gbps`` — streaming memory bandwidth, bytes read plus bytes written per second,
  of ``y.copy_(x)`` and ``z = x + y`` (``torch.add(..., out=)``) on arrays far larger than the
  caches (256 MiB each on the CPU, 1 GiB on a GPU); the better of the two.

Each limit's ``measurements`` keep every sample; ``theoretical`` records the data-sheet
numbers as far as this machine lets us compute them, and how.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import fastconv

# Instruction sets the CPU kernels (ours and torch's) can use; recorded when the CPU has them.
_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def _cpuinfo() -> Dict[str, object]:
    """Model name, flags of interest, nominal MHz and physical cores, from /proc/cpuinfo."""
    info: Dict[str, object] = {"model": None, "flags": None, "mhz": None, "physical_cores": None}
    cores = set()
    physical_id = core_id = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = value
                elif key == "flags" and info["flags"] is None:
                    present = set(value.split())
                    info["flags"] = [flag for flag in _CPU_FLAGS if flag in present]
                elif key == "cpu MHz" and info["mhz"] is None:
                    info["mhz"] = float(value)
                elif key == "physical id":
                    physical_id = value
                elif key == "core id":
                    core_id = value
                elif not key and physical_id is not None:  # blank line: end of one processor
                    cores.add((physical_id, core_id))
                    physical_id = core_id = None
        if physical_id is not None:
            cores.add((physical_id, core_id))
    except OSError:
        pass
    info["physical_cores"] = len(cores) or None
    return info


def _max_mhz() -> Optional[float]:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        return None


def load_average() -> Optional[float]:
    """The OS's 1-minute load average: runnable threads, ours included (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _memory_gib() -> Optional[float]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_info(device: str) -> Dict[str, object]:
    """The machine the figures come from: CPU, its flags, cores, threads, memory, GPU."""
    cpu = _cpuinfo()
    info: Dict[str, object] = {
        "cpu": cpu["model"] or platform.processor() or platform.machine(),
        "cpu_flags": cpu["flags"],
        "cpu_isa_selected": fastconv.build_info()["cpu_isa"],
        "cpu_mhz_nominal": cpu["mhz"],
        "cpu_mhz_max": _max_mhz(),
        "logical_cores": os.cpu_count(),
        "physical_cores": cpu["physical_cores"],
        "threads": torch.get_num_threads(),
        "memory_gib": round(_memory_gib(), 1) if _memory_gib() else None,
        "os": platform.platform(),
        "gpu": None,
        "load_average_start": load_average(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = props.name
        info["gpu_properties"] = {
            "compute_capability": f"{props.major}.{props.minor}",
            "multi_processor_count": props.multi_processor_count,
            "clock_mhz": getattr(props, "clock_rate", 0) / 1e3 or None,
            "memory_clock_mhz": getattr(props, "memory_clock_rate", 0) / 1e3 or None,
            "memory_bus_width_bits": getattr(props, "memory_bus_width", 0) or None,
            "total_memory_gib": round(props.total_memory / 2**30, 1),
            "l2_cache_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
        }
    return info


def _library_version(pattern: str) -> Optional[str]:
    match = re.search(pattern, torch.__config__.show())
    return match.group(1) if match else None


def _git_commit() -> Optional[str]:
    """This checkout's commit, with "-dirty" when tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # an installed copy, not a checkout
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def versions() -> Dict[str, object]:
    """Software behind the figures: ours, torch's and the libraries torch calls."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "fastconv": fastconv.__version__,
        "fastconv_commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "onednn": _library_version(r"MKL-DNN v([\w.]+)") if torch.backends.mkldnn.is_available() else None,
        "mkl": _library_version(r"Math Kernel Library Version ([\w.]+)"),
        "cuda_runtime": torch.version.cuda,
        "cudnn": cudnn,
    }


def slug(device: str, machine: Dict[str, object]) -> str:
    """A file-name-safe name of the machine: the GPU's on cuda, else the CPU's, the instruction set
    fastconv's CPU kernels selected on it, and its threads ("amd-epyc-avx2-2t"). The instruction
    set is part of the name because one CPU brand string (a cloud's "AMD EPYC") covers machines
    with and without AVX-512, whose figures differ by more than any change we measure."""
    if device == "cuda" and machine.get("gpu"):
        name = str(machine["gpu"])
    else:
        isa = machine.get("cpu_isa_selected")
        name = f"{machine['cpu']}-{isa}-{machine['threads']}t" if isa else f"{machine['cpu']}-{machine['threads']}t"
    name = re.sub(r"\((r|tm|c)\)|\bcpu\b|\bprocessor\b|@.*?ghz", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown"


# ------------------------------------------------------------------------------------ probes

def _best_of(fn, repeats: int, sync) -> Tuple[float, List[float]]:
    """Fastest seconds of ``fn`` over ``repeats`` calls after one untimed call, and all samples."""
    fn()
    samples = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - began)
    return min(samples), samples


def _measurement(name: str, what: str, amount: float, unit: str, seconds: List[float]) -> Dict[str, object]:
    """A probe's record: the best rate (``amount`` / fastest time), the median rate, the samples."""
    rates = sorted(amount / s / 1e9 for s in seconds)
    return {"name": name, "what": what, "unit": unit, "best": rates[-1], "median": rates[len(rates) // 2],
            "samples_s": seconds}


def _cpu_theoretical(machine: Dict[str, object]) -> Dict[str, object]:
    """cores x GHz x FMA lanes x 2 FMA pipes x 2 flops, at the nominal clock (turbo may beat it)."""
    flags = machine.get("cpu_flags") or []
    cores = min(machine.get("physical_cores") or machine["logical_cores"], machine["threads"])
    mhz = machine.get("cpu_mhz_max") or machine.get("cpu_mhz_nominal")
    if not mhz:
        return {"fp32_gflops": None, "how": "clock unknown"}
    per_isa = {}
    for isa, lanes in (("avx512", 16), ("avx2+fma", 8)):
        if isa == "avx512" and "avx512f" not in flags or isa == "avx2+fma" and "fma" not in flags:
            continue
        per_isa[isa] = cores * mhz / 1e3 * lanes * 2 * 2
    widest = max(per_isa.values()) if per_isa else None
    return {"fp32_gflops": widest, "fp32_gflops_per_isa": per_isa, "bandwidth_gbps": None,
            "how": f"{cores} cores x {mhz:.0f} MHz ({'max' if machine.get('cpu_mhz_max') else 'nominal'} "
                   "clock from the OS) x fp32 lanes x 2 FMA pipes (assumed) x 2 flops per FMA; "
                   "turbo clocks can exceed it"}


def _gpu_theoretical(machine: Dict[str, object]) -> Dict[str, object]:
    """SMs x fp32 lanes per SM x 2 x boost clock, and 2 (DDR) x memory clock x bus width."""
    p = machine["gpu_properties"]
    major, minor = (int(v) for v in str(p["compute_capability"]).split("."))
    # fp32 lanes per SM: 64 on Volta, Turing and A100 (sm_80); 128 from sm_86 on.
    lanes = 64 if (major, minor) in ((7, 0), (7, 2), (7, 5), (8, 0)) else 128
    flops = p["multi_processor_count"] * lanes * 2 * p["clock_mhz"] * 1e6 / 1e9 if p["clock_mhz"] else None
    bw = (2 * p["memory_clock_mhz"] * 1e6 * p["memory_bus_width_bits"] / 8 / 1e9
          if p["memory_clock_mhz"] and p["memory_bus_width_bits"] else None)
    return {"fp32_gflops": flops, "bandwidth_gbps": bw,
            "how": f"{p['multi_processor_count']} SMs x {lanes} fp32 lanes x 2 flops x clock_rate; "
                   "2 x memory_clock_rate x memory_bus_width (torch.cuda.get_device_properties)"}


def probe(device: str, machine: Dict[str, object], quick: bool = False) -> Dict[str, object]:
    """Measures this machine's fp32 GEMM rate and streaming bandwidth (see the module doc)."""
    repeats = 3 if quick else 7
    if device == "cuda":
        return _probe_cuda(machine, repeats)
    sync = lambda: None  # noqa: E731
    gemm = []
    n = 2048
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    _, s = _best_of(lambda: torch.mm(a, b, out=c), repeats, sync)
    gemm.append(_measurement("mkl_sgemm", f"torch.mm on {n}x{n} fp32 (MKL sgemm)", 2 * n**3, "GFLOP/s", s))
    del a, b, c
    if torch.backends.mkldnn.is_available():
        ch, hw = 512, 64
        x, w = torch.randn(1, ch, hw, hw), torch.randn(ch, ch, 1, 1)
        with torch.no_grad():
            _, s = _best_of(lambda: F.conv2d(x, w), repeats, sync)
        gemm.append(_measurement("onednn_gemm", f"1x1 convolution {ch}->{ch} @{hw}x{hw} (a {hw * hw}x{ch}x{ch} "
                                 "GEMM in oneDNN)", 2 * ch * ch * hw * hw, "GFLOP/s", s))
        del x, w
    bandwidth = _stream(torch.device("cpu"), 256 << 20, repeats, sync)
    return _limits(gemm, bandwidth, _cpu_theoretical(machine))


def _stream(device: torch.device, nbytes: int, repeats: int, sync) -> List[Dict[str, object]]:
    """copy and add on ``nbytes`` arrays, counted as bytes read + written."""
    n = nbytes // 4
    x = torch.ones(n, device=device)
    y = torch.ones(n, device=device)
    z = torch.zeros(n, device=device)  # every page touched before timing
    _, s = _best_of(lambda: z.copy_(x), repeats, sync)
    out = [_measurement("copy", f"y.copy_(x), {nbytes >> 20} MiB each (read + written)", 2 * nbytes, "GB/s", s)]
    _, s = _best_of(lambda: torch.add(x, y, out=z), repeats, sync)
    out.append(_measurement("add", f"torch.add(x, y, out=z), {nbytes >> 20} MiB each (read + written)",
                            3 * nbytes, "GB/s", s))
    return out


def _probe_cuda(machine: Dict[str, object], repeats: int) -> Dict[str, object]:
    sync = torch.cuda.synchronize
    n = 8192
    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    c = torch.empty(n, n, device="cuda")
    gemm = []
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            _, s = _best_of(lambda: torch.mm(a, b, out=c), repeats, sync)
            name, what = ("cublas_tf32", "TF32 tensor cores") if tf32 else ("cublas_sgemm", "fp32, TF32 off")
            gemm.append(_measurement(name, f"torch.mm on {n}x{n} ({what})", 2 * n**3, "GFLOP/s", s))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    del a, b, c
    bandwidth = _stream(torch.device("cuda"), 1 << 30, repeats, sync)
    torch.cuda.empty_cache()
    # The fp32 limit is the fp32 GEMM: TF32 is another number format, recorded for reference.
    return _limits([m for m in gemm if m["name"] == "cublas_sgemm"], bandwidth, _gpu_theoretical(machine),
                   extra=[m for m in gemm if m["name"] == "cublas_tf32"])


def _limits(gemm, bandwidth, theoretical, extra=()) -> Dict[str, object]:
    best_gemm = max(gemm, key=lambda m: m["best"])
    best_bw = max(bandwidth, key=lambda m: m["best"])
    return {
        "fp32_peak_gflops": best_gemm["best"],
        "fp32_peak_source": best_gemm["name"],
        "bandwidth_gbps": best_bw["best"],
        "bandwidth_source": best_bw["name"],
        "measurements": list(gemm) + list(extra) + list(bandwidth),
        "theoretical": theoretical,
    }
