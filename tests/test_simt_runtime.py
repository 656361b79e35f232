"""The SIMT runtime's own C++ unit tests (tests/cpp), compiled and run from pytest so the
default test run covers them: exact tiled matmuls, barrier and warp semantics, a missing
__syncthreads() caught by reversed/shuffled order, and a divergent barrier that aborts."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")

pytestmark = pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")


COMPILE = [CXX, "-std=c++17", "-O2", "-pthread", f"-I{ROOT / 'csrc'}"]


@pytest.fixture(scope="module")
def runtime_objects(tmp_path_factory):
    """The runtime's units, compiled once for every program of this module."""
    folder = tmp_path_factory.mktemp("simt_runtime")
    objects = []
    for source in sorted((ROOT / "csrc" / "simt").glob("*.cpp")):
        objects.append(folder / f"{source.stem}.o")
        subprocess.run([*COMPILE, "-c", str(source), "-o", str(objects[-1])], check=True)
    return objects


def _build(tmp_path_factory, runtime_objects, source, name):
    out = tmp_path_factory.mktemp("simt") / name
    subprocess.run([*COMPILE, str(ROOT / "tests" / "cpp" / source), *map(str, runtime_objects), "-o", str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def test_simt(tmp_path_factory, runtime_objects):
    return _build(tmp_path_factory, runtime_objects, "test_simt.cpp", "test_simt")


def _cases(binary):
    return subprocess.run([binary, "--list"], capture_output=True, text=True, check=True).stdout.split()


CASES = ["matmul_odd", "matmul_256", "matmul_orders", "index_3d", "block_reduce", "block_1024", "warp",
         "atomics", "missing_sync", "launch_errors", "early_return", "workers", "multiprocessors",
         "compute_capability"]


def test_case_list_is_complete(test_simt):
    assert sorted(_cases(test_simt)) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_runtime_case(test_simt, case):
    result = subprocess.run([test_simt, case], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_divergent_barrier_aborts_with_message(tmp_path_factory, runtime_objects):
    binary = _build(tmp_path_factory, runtime_objects, "divergent_barrier.cpp", "divergent_barrier")
    result = subprocess.run([binary], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "simt: divergent __syncthreads() in kernel 'divergent' block (0,0,0)" in result.stderr


def test_multiprocessor_count_from_the_environment(test_simt):
    env = dict(os.environ, FASTCONV_SIMT_SM_COUNT="7")
    result = subprocess.run([test_simt, "multiprocessors"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and "PASS multiprocessors" in result.stdout, result.stdout + result.stderr


def test_compute_capability_from_the_environment(test_simt):
    env = dict(os.environ, FASTCONV_SIMT_ARCH="75")
    result = subprocess.run([test_simt, "compute_capability"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and "PASS compute_capability" in result.stdout, result.stdout + result.stderr
    env["FASTCONV_SIMT_ARCH"] = "7"
    result = subprocess.run([test_simt, "compute_capability"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ignoring FASTCONV_SIMT_ARCH=7" in result.stderr


def test_compute_capability_setter_refuses_a_bare_major():
    from fastconv import _C

    with pytest.raises(ValueError, match="compute capability 9: give major \\* 10 \\+ minor"):
        _C.simt_set_compute_capability(9)
    assert _C.build_info()["simt"]["compute_capability"] >= 10
