"""scripts/gpu_check.sh, the one command for the day a GPU is lent: what can be checked without
one. It must refuse clearly and at once on a machine without a GPU, parse its arguments, and its
sanitizer driver (scripts/sanitizer_ops.py) must run every kernel variant and agree with torch
(here on the SIMT runtime; on the GPU under compute-sanitizer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simt_kernels import kernels_built, record_subprocess_launches

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def no_gpu_path(tmp_path):
    """A PATH without nvidia-smi (the machine may have one; the test must not use it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "tee", "cat", "head", "tr", "timeout", "nproc", "env", "cp", "tar",
                 "gzip"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_without_a_gpu_it_fails_fast_and_says_why(tmp_path, no_gpu_path):
    out = tmp_path / "out"
    result = run_script("--out", str(out), env={"PATH": no_gpu_path})
    assert result.returncode == 3
    assert "no NVIDIA GPU here" in result.stdout
    assert "no NVIDIA GPU here" in (out / "gpu_check.log").read_text()


def test_results_go_under_OUT_as_the_log_and_one_archive(tmp_path, no_gpu_path):
    import tarfile

    result = run_script(env={"PATH": no_gpu_path, "OUT": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")})
    assert result.returncode == 3
    assert sorted(p.name for p in (tmp_path / "gpu_check").iterdir()) == ["gpu_check.log", "gpu_check.tar.gz"]
    assert "no NVIDIA GPU here" in (tmp_path / "gpu_check" / "gpu_check.log").read_text()
    with tarfile.open(tmp_path / "gpu_check" / "gpu_check.tar.gz") as archive:
        assert "./gpu_check.log" in archive.getnames()


def test_arguments(tmp_path):
    assert run_script("--help").returncode == 0
    assert "--skip STEP" in run_script("--help").stdout
    bad = run_script("--frobnicate")
    assert bad.returncode == 2 and "unknown argument '--frobnicate'" in bad.stderr
    assert run_script("--out").returncode == 2


def test_sanitizer_driver_runs_every_kernel_variant_on_simt():
    """Every precision as the runtime's default sm_90, then half and bfloat16 as an sm_75 (the
    CUDA-core GEMMs that GPUs without tensor cores run), then float32 and float64 with their
    im2col columns unfolded (FASTCONV_IM2COL_GATHER=0: the float and double im2col kernels)."""
    launched = {}
    for args in (["--backend", "simt"], ["--backend", "simt", "--sm", "75", "--precision", "float16", "bfloat16"],
                 ["--backend", "simt", "--unfold", "--precision", "float32", "float64"]):
        code = ("import json, sys; sys.path.insert(0, 'scripts'); import sanitizer_ops; from fastconv import _C; "
                f"rc = sanitizer_ops.main({args!r}); "
                "print('launches ' + json.dumps(_C.simt_launch_counts())); sys.exit(rc)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "sanitizer_ops: ok" in result.stdout
        for name, n in record_subprocess_launches(result.stdout).items():
            launched[name] = launched.get(name, 0) + n
    missing = sorted(set(kernels_built().values()) - {name for name, n in launched.items() if n > 0})
    assert not missing, f"scripts/sanitizer_ops.py leaves out: {missing}"


_GPU_TILES = """
import json, sys, torch
sys.path.insert(0, "scripts")
import fastconv, sanitizer_ops
from fastconv.simt import record_launches
ops = torch.ops.fastconv
fastconv._C.simt_set_multiprocessor_count(132)
fastconv._C.simt_set_compute_capability(90)
with record_launches(dry_run=True) as launches:
    for dtype in (torch.float32, torch.float16):
        for _name, xs, ws, kw in sanitizer_ops.convs(dtype, gpu=True):
            s, p = kw.get("stride", 1), kw.get("padding", 0)
            geo = ([s, s], [p] * 4, [kw.get("dilation", 1)] * 2, kw.get("groups", 1))
            x, w = torch.empty(xs, dtype=dtype), torch.empty(ws, dtype=dtype)
            y = ops.conv2d(x, w, None, *geo, "im2col", "simt")
            ops.conv2d_backward_input(torch.empty(y.shape, dtype=dtype), w, list(xs), *geo, "im2col", "simt")
            ops.conv2d_backward_weight(torch.empty(y.shape, dtype=dtype), x, list(ws), *geo, "im2col", "simt")
print(json.dumps(sorted({l.kernel for l in launches if l.kernel.startswith("gemm_")})))
"""


def test_sanitizer_driver_reaches_every_gemm_tile_on_a_gpu():
    """On a GPU's 132 SMs the driver's small problems take the 64 x 64 tile; its GPU-only cases
    reach the 128 x 128 and 64 x 256 ones, gathering or not, and in float16 the 64 x 128
    tensor-core tile beside the 64 x 64 one (a dry run on SIMT standing in for an H100: shapes
    only, no kernel runs; a subprocess, as the driver shrinks the column buffer)."""
    import json

    result = subprocess.run([sys.executable, "-c", _GPU_TILES], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    kernels = json.loads(result.stdout.splitlines()[-1])
    for tile in ("gemm_kernel<float, float, GemmTile<64, 64", "GemmTile<128, 128", "GemmTile<64, 256",
                 "GemmTile<128, 128, 8, 8, 8>, Im2colGatherForward", "GemmTile<128, 128, 8, 8, 8>, Im2colGatherWgrad",
                 "GemmTile<64, 256, 4, 8, 8>, Im2colGatherForward",
                 "gemm_tensor_core_kernel<half_t, half_t, TensorCoreTile<64, 64, 32",
                 "gemm_tensor_core_kernel<half_t, half_t, TensorCoreTile<64, 128, 16"):
        assert any(tile in k for k in kernels), (tile, kernels)


def test_sanitizer_driver_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = subprocess.run([sys.executable, "scripts/sanitizer_ops.py", "--backend", "cuda"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "needs a GPU" in result.stderr


def test_the_step_budgets_fit_in_one_device_call():
    import re

    text = SCRIPT.read_text()
    budgets = {name: int(seconds) for name, seconds in re.findall(r"\bstep (\w+) (\d+) ", text)}
    assert set(budgets) == {"build", "tests", "bench", "kernels", "profile"}
    tools = [(tool, int(seconds)) for tool, seconds in re.findall(r"^\s*sanitize (\w+) (\d+)", text, re.M)]
    # The last memcheck runs float32 and float64 with their im2col columns unfolded.
    assert [tool for tool, _ in tools] == ["memcheck", "racecheck", "synccheck", "memcheck"]
    total = sum(budgets.values()) + sum(seconds for _, seconds in tools)
    # A lent machine runs one command for at most 10 minutes.
    assert total <= 10 * 60 - 15, f"{total} s of step budgets leave no room under 10 minutes"

def test_profile_driver_runs_each_math_on_simt():
    """scripts/profile_conv.py, the program the profile step runs under ncu: every math on a
    small layer through the SIMT runtime, and a clear refusal of cuda without a GPU."""
    import torch

    result = subprocess.run([sys.executable, "scripts/profile_conv.py", "--backend", "simt", "--batch", "1",
                             "--channels", "4", "--size", "5", "--repeats", "1", "--math", "float32", "tf32",
                             "float16", "bfloat16"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["float32", "tf32", "float16",
                                                                                  "bfloat16"]
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, "scripts/profile_conv.py"], capture_output=True, text=True,
                                 cwd=ROOT, timeout=120)
        assert refused.returncode == 2 and "needs a GPU" in refused.stderr


def test_kernel_times_runs_on_simt_and_refuses_cuda_without_a_gpu(tmp_path):
    """scripts/kernel_times.py, the kernels step: a smoke run on the SIMT runtime (there the
    profiler sees operators, not kernels) writes both files with a row per layer and math, our
    side through fastconv's ops and the reference through torch's convolution."""
    import json

    import torch

    result = subprocess.run([sys.executable, "scripts/kernel_times.py", "--backend", "simt", "--batch", "1",
                             "--net", "convnet4", "--math", "float32", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "kernel-times.json").read_text())
    assert [row["layer"] for row in doc["rows"]] == ["3->32 3x3 @150", "32->64 3x3 @74", "64->128 3x3 @36",
                                                    "128->128 3x3 @17"]
    for row in doc["rows"]:
        assert any(k["kernel"].startswith("fastconv::conv2d") for k in row["fastconv"]), row["fastconv"]
        assert not any(k["kernel"].startswith("fastconv::") for k in row["cudnn"]), row["cudnn"]
        assert any(k["kernel"].startswith("aten::convolution") for k in row["cudnn"]), row["cudnn"]
    assert "| 32->64 3x3 @74 |" in (tmp_path / "kernel-times.md").read_text()
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, "scripts/kernel_times.py", "--out", str(tmp_path / "no")],
                                 capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert refused.returncode == 2 and "needs a GPU" in refused.stderr


def test_past_the_gpu_check_it_names_missing_packages_and_refuses_a_build_without_cuda(tmp_path):
    """With a stand-in nvidia-smi and the build step skipped, the script gets as far as the
    extension checks: this build has no CUDA kernels, or torch finds no GPU, so it stops there
    with exit 1, after naming any package the steps would miss (none in the test environment)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run every step")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Stand-in GPU, 9.0'\n")
    smi.chmod(0o755)
    out = tmp_path / "out"
    result = run_script("--out", str(out), "--skip", "build",
                        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable})
    log = (out / "gpu_check.log").read_text()
    assert "GPU: Stand-in GPU (compute capability 9.0)" in log
    assert "missing Python packages" not in log
    assert result.returncode == 1
    assert "built without its CUDA kernels" in result.stdout or "finds no usable CUDA device" in result.stdout
