"""Which CUDA kernels the SIMT runtime has launched, by name.

The runtime counts launches per kernel address (``fastconv._C.simt_launch_counts``, offsets
into the extension library); the library's symbol table names every kernel variant built for
SIMT: each lies in a code section named after its ``__launch_bounds__`` (``simt_lb_NNNN``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Dict, Iterator, List

from fastconv import _C
from fastconv.simt import kernel_name, kernel_symbols


def kernels_built() -> Dict[int, str]:
    """Every kernel variant compiled for the SIMT runtime: code offset -> short demangled name."""
    return {offset: symbol.name for offset, symbol in kernel_symbols().items()}


def simt_has_tensor_cores() -> bool:
    """Whether the SIMT runtime stands for a GPU with tensor cores: a compute capability
    (FASTCONV_SIMT_ARCH, default 90) from sm_80 on, the rule csrc/ops/conv2d.cpp applies."""
    return _C.build_info()["simt"]["compute_capability"] >= 80


@contextlib.contextmanager
def compute_capability(cc: int) -> Iterator[None]:
    """Makes the SIMT device report compute capability `cc` (major * 10 + minor), then restores the
    default (FASTCONV_SIMT_ARCH, else 90)."""
    _C.simt_set_compute_capability(cc)
    try:
        yield
    finally:
        _C.simt_set_compute_capability(0)


# Launches made by subprocesses of this test run (switches that are read once per process,
# such as FASTCONV_COLUMN_BUFFER_BYTES, need one), by code offset: the same library is loaded there.
_subprocess_launches: Dict[int, int] = {}


def launch_counts() -> Dict[int, int]:
    """Code offset -> launches so far in this process and the subprocesses it recorded."""
    counts = dict(_subprocess_launches)
    for offset, _site, count in _C.simt_launch_counts():
        counts[offset] = counts.get(offset, 0) + count
    return counts


def record_subprocess_launches(output: str) -> Dict[str, int]:
    """Adds the launch counts a subprocess printed (a line 'launches <json of
    fastconv._C.simt_launch_counts()>') to this run's; returns them by kernel name."""
    line = next(line for line in output.splitlines() if line.startswith("launches "))
    by_name: Dict[str, int] = {}
    for offset, _site, count in json.loads(line.removeprefix("launches ")):
        _subprocess_launches[offset] = _subprocess_launches.get(offset, 0) + count
        by_name[name_of(offset)] = by_name.get(name_of(offset), 0) + count
    return by_name


_PYTEST_IN_SUBPROCESS = """
import json, sys, pytest, fastconv
code = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])
print("launches", json.dumps(fastconv._C.simt_launch_counts()))
sys.exit(code)
"""


def run_tests_in_subprocess(pytest_args: List[str], **env: str) -> Dict[str, int]:
    """Runs pytest on `pytest_args` in a subprocess with the environment variables `env` set
    (switches that are read once per process) and asserts that it passed; returns its launches by
    kernel name, which count toward this run's."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _PYTEST_IN_SUBPROCESS, *pytest_args],
                            env=dict(os.environ, **env), capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return record_subprocess_launches(result.stdout)


def launched(by_name: Dict[str, int], fragment: str) -> bool:
    return any(fragment in name and count > 0 for name, count in by_name.items())


name_of = kernel_name


@contextlib.contextmanager
def expect_kernels(*fragments: str) -> Iterator[None]:
    """Asserts that the block launched, on the SIMT runtime, a kernel whose name contains each
    fragment (so a test cannot pass on other kernels than the ones it means to check)."""
    ran = []
    with _kernels_launched(ran):
        yield
    for fragment in fragments:
        assert any(fragment in name for name in ran), f"no SIMT kernel matching {fragment!r} ran; ran: {ran}"


@contextlib.contextmanager
def expect_no_kernels(*fragments: str) -> Iterator[None]:
    """Asserts that the block launched no SIMT kernel whose name contains any fragment (a kernel
    that must not be chosen, such as the tensor-core GEMM for float32 without TF32)."""
    ran = []
    with _kernels_launched(ran):
        yield
    for fragment in fragments:
        assert not any(fragment in name for name in ran), f"a SIMT kernel matching {fragment!r} ran; ran: {ran}"


@contextlib.contextmanager
def _kernels_launched(ran: list) -> Iterator[None]:
    """Fills `ran` with the names of the SIMT kernels the block launched."""
    before = launch_counts()
    yield
    ran.extend(name_of(o) for o, n in launch_counts().items() if n > before.get(o, 0))


@contextlib.contextmanager
def multiprocessors(count: int) -> Iterator[None]:
    """Makes the SIMT device report `count` multiprocessors (the launchers size split reductions
    and pick GEMM tiles from it), then restores the default (FASTCONV_SIMT_SM_COUNT, else 132)."""
    _C.simt_set_multiprocessor_count(count)
    try:
        yield
    finally:
        _C.simt_set_multiprocessor_count(0)
