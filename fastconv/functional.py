"""Functional interface, mirroring ``torch.nn.functional``.

Each function runs fastconv's own kernels through the ``torch.ops.fastconv``
ops, on the backend chosen by :func:`fastconv.backend` (CPU kernels for CPU
tensors and CUDA kernels for CUDA tensors by default).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _ops
from ._backend import current_backend

__all__ = ["relu", "dropout"]

ops = torch.ops.fastconv
_INT64 = torch.iinfo(torch.int64)


def _needs_grad(t: Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """Rectified linear unit ``max(0, x)``, as :func:`torch.nn.functional.relu`.

    NaN propagates, ``relu(-0.0)`` is ``-0.0`` and the gradient at 0 is 0, as in torch.
    """
    backend = current_backend()
    if not inplace:
        return ops.relu(input, backend)
    if _needs_grad(input):
        return _ops.InplaceRelu.apply(input, backend)
    ops.relu_(input, backend)
    return input


def _draw_seed(device: torch.device) -> Tensor:
    """(seed, offset) for Philox, from torch's default generator for ``device``."""
    return torch.randint(_INT64.min, _INT64.max, (2,), dtype=torch.int64, device=device)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zeroes each element with probability ``p`` and scales the rest by ``1 / (1 - p)``.

    As :func:`torch.nn.functional.dropout`: ``training=False`` or ``p=0`` return
    ``input`` itself, ``p=1`` gives ``input * 0``. The mask comes from
    Philox4x32-10 seeded by torch's generator for the input's device, so
    ``torch.manual_seed`` reproduces it, and it is identical on every backend.
    The mask is not stored: backward regenerates it from the seed.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    backend = current_backend()
    seed = _draw_seed(input.device)
    if not inplace:
        return ops.dropout(input, float(p), seed, backend)
    if _needs_grad(input):
        return _ops.InplaceDropout.apply(input, float(p), seed, backend)
    ops.dropout_(input, float(p), seed, backend)
    return input
