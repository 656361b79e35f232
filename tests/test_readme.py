"""README.md's code blocks work as written.

Every ```python block runs in a fresh interpreter (its own namespace, the repository's
fastconv first on the path) and must exit cleanly. Without a usable GPU
(``torch.cuda.is_available()`` false), a line that needs one (it mentions ``.cuda()``,
``device="cuda"`` or ``backend("cuda")``) is replaced by ``pass``, and so is the indented
body of such a line when it opens a block; every other line runs. Keep the blocks fast:
small tensors, a few seconds each.

Every ```bash block is checked statically, nothing in it runs: each command that is a path
(``scripts/quickstart.sh``) exists, each ``python FILE`` names an existing file, each
``python -m MODULE`` resolves to a module, and each ``pip install -r FILE`` names an
existing file. Paths are relative to the repository root.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NEEDS_GPU = re.compile(r"""\.cuda\(|device\s*=\s*["']cuda|backend\(\s*["']cuda""")


def blocks(language: str, text: str | None = None) -> List[Tuple[int, str]]:
    """(line number, source) of each fenced block of ``language`` in the README."""
    text = README.read_text() if text is None else text
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _FENCE.finditer(text)
            if m.group(1) == language]


def without_gpu_lines(source: str) -> str:
    """``source`` with each line that needs a GPU, and the block such a line opens, as ``pass``."""
    out: List[str] = []
    skip_deeper_than = None
    for line in source.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if _NEEDS_GPU.search(line):
            out.append(" " * indent + "pass")
            if line.split("#")[0].rstrip().endswith(":"):
                skip_deeper_than = indent
            continue
        out.append(line)
    return "\n".join(out) + "\n"


PYTHON_BLOCKS = blocks("python")
BASH_BLOCKS = blocks("bash")


def test_readme_has_blocks():
    assert PYTHON_BLOCKS and BASH_BLOCKS


def test_gpu_lines_are_skipped():
    source = 'a = 1\nb = a.cuda()\nwith fastconv.backend("cuda"):\n    c = 2\n    d = 3\ne = 4\n'
    assert without_gpu_lines(source) == "a = 1\npass\npass\ne = 4\n"
    inner = 'if a:\n    x = torch.ones(2, device="cuda")\n'
    assert without_gpu_lines(inner) == "if a:\n    pass\n"


@pytest.mark.parametrize("line,source", PYTHON_BLOCKS, ids=[f"README.md:{n}" for n, _ in PYTHON_BLOCKS])
def test_python_block_runs(line, source, tmp_path):
    if not torch.cuda.is_available():
        source = without_gpu_lines(source)
    script = tmp_path / f"README_line{line}.py"
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"the python block at README.md:{line} failed:\n{run.stderr[-4000:]}"


def _commands(source: str) -> List[List[str]]:
    """The simple commands of a bash block, split at ``&&``, ``||``, ``;`` and ``|``."""
    commands: List[List[str]] = []
    for line in source.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: List[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def named_files(source: str) -> List[Tuple[str, str]]:
    """(kind, name) of every script, file and module the commands of a bash block name."""
    named: List[Tuple[str, str]] = []
    for words in _commands(source):
        program, args = words[0], words[1:]
        if "/" in program:
            named.append(("path", program))
        elif re.fullmatch(r"python[0-9.]*", program) and args:
            if args[0] == "-m" and len(args) > 1:
                named.append(("module", args[1]))
            elif not args[0].startswith("-"):
                named.append(("path", args[0]))
        elif program in ("pip", "pip3"):
            named += [("path", args[i + 1]) for i, a in enumerate(args[:-1]) if a in ("-r", "--requirement")]
    return named


def test_named_files_parses_commands():
    source = ("a/b.sh x  # c/d.sh\npython -m pkg.mod [--x y]\npip install -r req.txt && pip install -e .\n"
              "python tool.py --flag\n")
    assert named_files(source) == [("path", "a/b.sh"), ("module", "pkg.mod"), ("path", "req.txt"),
                                   ("path", "tool.py")]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.mark.parametrize("line,source", BASH_BLOCKS, ids=[f"README.md:{n}" for n, _ in BASH_BLOCKS])
def test_bash_block_names_existing_files(line, source, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    missing = []
    for kind, name in named_files(source):
        if kind == "path" and not (ROOT / name).exists():
            missing.append(name)
        if kind == "module" and not _module_exists(name):
            missing.append(f"-m {name}")
    assert not missing, f"the bash block at README.md:{line} names what does not exist: {missing}"
