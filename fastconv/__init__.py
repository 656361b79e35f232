"""fastconv: hand-written CUDA and C++ kernels for convolution, max pooling,
ReLU and dropout, bound as PyTorch custom ops with autograd.

    import fastconv
    import fastconv.nn as fnn
    import fastconv.functional as FF

    y = FF.relu(x)
    with fastconv.backend("simt"):      # CPU tensors through the CUDA kernels
        y = FF.relu(x)
"""

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from . import _C  # noqa: F401  (loads the kernels and registers torch.ops.fastconv)
from . import _ops  # noqa: F401  (fake kernels and autograd formulas)
from . import functional, models, nn
from ._backend import available_backends, backend, cuda_compiled, current_backend
from .convert import convert
from .summary import summary

__version__ = "0.1.0"

__all__ = [
    "available_backends",
    "backend",
    "convert",
    "cuda_compiled",
    "current_backend",
    "functional",
    "models",
    "nn",
    "summary",
]
