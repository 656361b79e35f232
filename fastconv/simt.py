"""The SIMT runtime seen from Python: which CUDA kernels it launches, and the launch recorder.

The runtime identifies a kernel by its code address; ``kernel_symbols`` names each one from the
extension's symbol table, where every kernel variant built for SIMT lies in a code section named
after its ``__launch_bounds__`` (``simt_lb_NNNN``).

``record_launches()`` lists every SIMT launch made inside the ``with`` block (kernel, grid, block,
dynamic shared memory). With ``dry_run=True`` the launches are checked and recorded but their
bodies do not run: the real launchers of the real ops then produce the exact launch sequence of
any layer at any batch size in milliseconds, which is what the GPU performance model
(``python -m bench.cuda_model``) reads. **Outputs computed in a dry run are garbage** (whatever
the freshly allocated memory held), and so is anything derived from them.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

from . import _C

_SYMBOL = re.compile(r"^([0-9a-f]+)\s.*\s(simt_lb_\d{4})\s+[0-9a-f]+\s+(\S+)$")
_NAMESPACE = "_ZN8fastconv4simt"


@dataclass(frozen=True)
class KernelSymbol:
    mangled: str   # _ZN8fastconv4simt11gemm_kernelIff...: the CUDA build's name with 4simt for 4cuda
    name: str      # gemm_kernel<float, float, GemmTile<128, 128, 8, 8, 8> >
    launch_bound: int  # its __launch_bounds__ (the section simt_lb_NNNN; 0: none, so 1024)


@functools.lru_cache(maxsize=None)
def kernel_symbols() -> Dict[int, KernelSymbol]:
    """Every kernel variant compiled for the SIMT runtime: code offset in the extension -> symbol."""
    table = subprocess.run(["objdump", "-t", _C.__file__], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in table.splitlines():
        match = _SYMBOL.match(line)
        # Local clones (".constprop.0", ".isra.0") are not kernels of their own.
        if match and match.group(3).startswith(_NAMESPACE) and "." not in match.group(3):
            found[int(match.group(1), 16)] = (match.group(3), int(match.group(2)[len("simt_lb_"):]))
    names = _demangle([mangled for mangled, _bound in found.values()])
    return {offset: KernelSymbol(mangled, short_name(name), bound)
            for (offset, (mangled, bound)), name in zip(found.items(), names)}


def _demangle(names: List[str]) -> List[str]:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def short_name(name: str) -> str:
    """'void fastconv::simt::k<float, 4>(float const*, ...)' -> 'k<float, 4>' (either namespace)."""
    name = name.removeprefix("void ")
    for prefix in ("fastconv::simt::", "fastconv::cuda::", "fastconv::"):
        name = name.replace(prefix, "")
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def kernel_name(offset: int) -> str:
    symbol = kernel_symbols().get(offset)
    return symbol.name if symbol else f"<kernel at +{offset:#x} outside every launch-bounds section>"


@dataclass(frozen=True)
class Launch:
    """One recorded launch."""

    offset: int                     # the kernel's code offset in the extension
    kernel: str                     # its short name (kernel_name)
    mangled: str                    # its mangled SIMT name ("" when unknown)
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    smem: int                       # dynamic shared memory bytes

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]


@contextlib.contextmanager
def record_launches(dry_run: bool = False) -> Iterator[List[Launch]]:
    """Records the SIMT launches of the ``with`` block into the list it yields (filled when the
    block ends). ``dry_run=True``: launches are checked and recorded but do not run, and outputs
    are garbage. Launches of other threads during the block are recorded too."""
    launches: List[Launch] = []
    _C.simt_take_recorded_launches()  # drop what an earlier dry run (FASTCONV_SIMT_DRY_RUN) left
    was_dry = _C.simt_dry_run()
    _C.simt_set_recording(True)
    _C.simt_set_dry_run(dry_run or was_dry)
    try:
        yield launches
    finally:
        _C.simt_set_dry_run(was_dry)
        _C.simt_set_recording(False)
        for offset, _site, grid, block, smem in _C.simt_take_recorded_launches():
            symbol = kernel_symbols().get(offset)
            launches.append(Launch(offset, kernel_name(offset), symbol.mangled if symbol else "",
                                   tuple(grid), tuple(block), int(smem)))
