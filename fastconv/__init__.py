"""fastconv: hand-written CUDA and C++ kernels for convolution, max pooling,
ReLU and dropout, bound as PyTorch custom ops with autograd.

    import fastconv
    import fastconv.nn as fnn
    import fastconv.functional as FF

    y = FF.relu(x)
    with fastconv.backend("simt"):      # CPU tensors through the CUDA kernels
        y = FF.relu(x)
"""

import torch  # libtorch must be loaded before the extension

_REBUILD = "pip install --no-build-isolation -e .  (or: scripts/quickstart.sh test)"


def _built_against():
    """(torch version, CUDA version or None) the extension was built against, as setup.py
    records them in fastconv/_build_config.py; (None, None) where that file is absent."""
    try:
        from . import _build_config
    except ImportError:
        return None, None
    return getattr(_build_config, "TORCH_VERSION", None), getattr(_build_config, "CUDA_VERSION", None)


def _torch_mismatch(problem: str, built_torch, built_cuda) -> ImportError:
    """The ImportError for an extension that cannot serve the installed torch: what went wrong,
    the torch it was built against, the torch installed, and how to rebuild."""
    if built_torch is None:
        built = "The torch it was built against is not recorded (fastconv/_build_config.py is missing)"
    else:
        cuda = f"CUDA {built_cuda}" if built_cuda else "without CUDA"
        built = f"It was built against torch {built_torch} ({cuda})"
    why = ""
    if built_torch is None or _release(built_torch) != _release(torch.__version__):
        why = " An extension built against one torch version does not work with another."
    return ImportError(
        f"{problem}\n{built}; torch {torch.__version__} is installed now.{why}\n"
        f"Rebuild it in fastconv's source directory: {_REBUILD}"
    )


def _release(version: str) -> str:
    return version.split("+", 1)[0]  # "2.14.1+cu130" -> "2.14.1": the local build tag does not matter


_BUILT_TORCH, _BUILT_CUDA = _built_against()
try:
    from . import _C  # noqa: F401  (loads the kernels and registers torch.ops.fastconv)
except (ImportError, OSError) as error:
    raise _torch_mismatch(f"fastconv's compiled extension (fastconv._C) failed to load: "
                          f"{type(error).__name__}: {error}", _BUILT_TORCH, _BUILT_CUDA) from error
if _BUILT_TORCH is not None and _release(_BUILT_TORCH) != _release(torch.__version__):
    raise _torch_mismatch("fastconv's compiled extension (fastconv._C) does not match the installed torch.",
                          _BUILT_TORCH, _BUILT_CUDA)

from . import _ops  # noqa: F401  (fake kernels; autograd is registered by _C)
from . import functional, models, nn
from ._backend import available_backends, backend, cuda_compiled, current_backend
from .convert import convert
from .info import build_info
from .memory import cpu_output_cache_stats, empty_cpu_output_cache
from .summary import summary

__version__ = "0.1.0"

__all__ = [
    "available_backends",
    "backend",
    "build_info",
    "convert",
    "cpu_output_cache_stats",
    "cuda_compiled",
    "current_backend",
    "empty_cpu_output_cache",
    "functional",
    "models",
    "nn",
    "summary",
]
