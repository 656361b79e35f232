"""How this fastconv was built and what it selected on this machine.

``python -m fastconv.info`` prints it; paste the output into bug reports.
"""

from __future__ import annotations

import json
import platform
from typing import Any, Dict

import torch

from . import _C


def build_info() -> Dict[str, Any]:
    """The build (fastconv and torch versions, CUDA and its architectures, compiler) and the
    choices made here at run time (the CPU GEMM's instruction set, threads, SIMT settings)."""
    from . import __version__

    try:
        from . import _build_config as config
    except ImportError:  # built by something other than setup.py: no record
        config = None
    built_against = getattr(config, "TORCH_VERSION", None)
    archs = getattr(config, "CUDA_ARCHS", "")
    info: Dict[str, Any] = {"fastconv": __version__, "torch_built_against": built_against,
                            "torch": torch.__version__}
    info.update(_C.build_info())
    info["cuda_archs"] = archs.split(";") if info["cuda_compiled"] and archs else []
    info["cuda_runtime"] = torch.version.cuda
    info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    info["python"] = platform.python_version()
    info["machine"] = platform.machine()
    return info


def main() -> None:
    info = build_info()
    width = max(len(key) for key in info)
    for key, value in info.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
