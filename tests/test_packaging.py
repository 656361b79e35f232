"""Packaging: the extension refuses a torch it was not built against, naming both versions and the
rebuild command; pyproject.toml and requirements.txt pin the same torch for building and running.

The import checks run ``import fastconv`` in a fresh interpreter with the build record
(``fastconv._build_config``, written by setup.py) or the extension (``fastconv._C``) replaced in
``sys.modules`` beforehand, so they neither need nor touch the files of the real build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REBUILD = "pip install --no-build-isolation -e ."

_IMPORT = """
import sys, types
import torch
{setup}
try:
    import fastconv
except ImportError as error:
    print("IMPORT-ERROR", type(error.__cause__).__name__)
    print(error)
else:
    print("IMPORTED")
"""


def import_fastconv(setup: str) -> str:
    """stdout of ``import fastconv`` in a fresh interpreter (this checkout's fastconv) after ``setup``."""
    code = _IMPORT.format(setup=textwrap.dedent(setup))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def build_record(torch_version: str | None, cuda_version: str | None = "13.0") -> str:
    """Setup code that makes ``fastconv._build_config`` record the given versions (None: no record)."""
    if torch_version is None:
        return "sys.modules['fastconv._build_config'] = None  # import fails: as if the file were absent\n"
    return (f"record = types.ModuleType('fastconv._build_config')\n"
            f"record.TORCH_VERSION = {torch_version!r}\nrecord.CUDA_VERSION = {cuda_version!r}\n"
            f"sys.modules['fastconv._build_config'] = record\n")


def release(version: str) -> str:
    return version.split("+")[0]


def test_matching_torch_imports_whatever_its_local_tag():
    assert import_fastconv(build_record(release(torch.__version__))).strip() == "IMPORTED"
    assert import_fastconv(build_record(release(torch.__version__) + "+cpu", None)).strip() == "IMPORTED"


def test_missing_build_record_is_tolerated():
    assert import_fastconv(build_record(None)).strip() == "IMPORTED"


def test_other_torch_is_refused_with_both_versions_and_the_rebuild_command():
    out = import_fastconv(build_record("2.0.0", "12.1"))
    assert out.startswith("IMPORT-ERROR")
    assert "does not match the installed torch" in out
    assert "built against torch 2.0.0 (CUDA 12.1)" in out
    assert f"torch {torch.__version__} is installed now" in out
    assert REBUILD in out and "scripts/quickstart.sh test" in out


def test_extension_that_fails_to_load_is_explained():
    # None in sys.modules makes `from . import _C` raise, as an undefined symbol would.
    out = import_fastconv(build_record("2.13.0", None) + "sys.modules['fastconv._C'] = None\n")
    assert out.startswith("IMPORT-ERROR ModuleNotFoundError")  # the original error is the cause
    assert "failed to load: ModuleNotFoundError: import of fastconv._C halted" in out  # and is quoted
    assert "built against torch 2.13.0 (without CUDA)" in out
    assert f"torch {torch.__version__} is installed now" in out
    assert REBUILD in out


def test_extension_that_fails_to_load_without_a_build_record():
    out = import_fastconv(build_record(None) + "sys.modules['fastconv._C'] = None\n")
    assert out.startswith("IMPORT-ERROR")
    assert "fastconv/_build_config.py is missing" in out
    assert f"torch {torch.__version__} is installed now" in out
    assert REBUILD in out


def _torch_pin(requirements) -> str:
    pins = [r for r in requirements if re.match(r"torch\s*[=<>~!]", r)]
    assert len(pins) == 1, requirements
    return pins[0].replace(" ", "")


def test_build_and_run_time_pin_the_same_torch():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    build = _torch_pin(project["build-system"]["requires"])
    assert build.startswith("torch==")
    assert _torch_pin(project["project"]["dependencies"]) == build
    assert _torch_pin([r for r in requirements if r]) == build


def test_license_is_an_spdx_expression():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "BSD-3-Clause"
    # The string form needs setuptools 77; the build and the pinned requirements must ask for it.
    assert "setuptools>=77" in project["build-system"]["requires"]
    assert "setuptools>=77" in (ROOT / "requirements.txt").read_text().split()


def test_extension_links_the_shared_cxx_runtime():
    """_C must use torch's shared libstdc++, never a copy of its own: a static copy's iostreams
    and locale crash beside torch's (setup.py's shared_cxx_runtime)."""
    import fastconv

    ldd = subprocess.run(["ldd", fastconv._C.__file__], capture_output=True, text=True)
    assert ldd.returncode == 0, ldd.stderr
    assert "libstdc++.so.6" in ldd.stdout


def test_an_old_setuptools_is_refused_with_a_clear_message(tmp_path):
    """pyproject.toml's SPDX license string needs setuptools 77; an older one fails inside its
    schema check with a message that never says so, so setup.py says it first."""
    fake = tmp_path / "setuptools"
    fake.mkdir()
    (fake / "__init__.py").write_text('__version__ = "65.5.0"\n\ndef setup(**kwargs):\n    raise AssertionError\n')
    result = subprocess.run([sys.executable, str(ROOT / "setup.py"), "--version"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert result.returncode != 0
    assert "needs setuptools 77 or newer to build (found 65.5.0)" in result.stderr
