"""Swap a model's torch.nn layers for their fastconv twins, in one line."""

from __future__ import annotations

import copy
import warnings
from typing import Dict, Type

import torch
from torch import nn

from . import nn as fnn

# Exact torch.nn types and their fastconv twins. Only exact types are swapped:
# a user's own subclass of nn.Conv2d may override forward, and swapping its
# class would silently drop that.
_TWINS: Dict[Type[nn.Module], Type[nn.Module]] = {
    nn.Conv2d: fnn.Conv2d,
    nn.MaxPool2d: fnn.MaxPool2d,
    nn.ReLU: fnn.ReLU,
    nn.Dropout: fnn.Dropout,
}

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = _CPU_DTYPES + (torch.float16, torch.bfloat16)


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why fastconv cannot serve this layer as it stands, or None when it can."""
    for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        allowed = _CUDA_DTYPES if tensor.is_cuda else _CPU_DTYPES
        if tensor.device.type not in ("cpu", "cuda"):
            return f"its tensors are on {tensor.device}"
        if tensor.dtype not in allowed:
            return f"its dtype is {tensor.dtype}"
    return None


def convert(module: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``module`` with every ``torch.nn`` Conv2d, MaxPool2d, ReLU and Dropout replaced by
    its fastconv twin.

    The twins subclass the originals and keep their parameters, buffers, hooks, train/eval mode
    and ``state_dict`` keys: the swap changes only which kernels ``forward`` runs. Layers are found
    recursively through Sequential, ModuleList, ModuleDict and custom modules. A layer fastconv
    cannot serve (say, a Conv2d in int8) is left as it is, with a warning naming it.

    Args:
        module: the model (or a single layer).
        inplace: convert ``module`` itself instead of a deep copy.
    """
    root = module if inplace else copy.deepcopy(module)
    skipped = []
    for name, layer in root.named_modules():
        twin = _TWINS.get(type(layer))
        if twin is None:
            continue
        reason = _unsupported_reason(layer)
        if reason is not None:
            skipped.append(f"{name or type(layer).__name__} ({reason})")
            continue
        # A twin adds no state beyond defaults (Conv2d's algorithm), so swapping
        # the class keeps every parameter, buffer and hook of the original object.
        layer.__class__ = twin
        if twin is fnn.Conv2d:
            layer.algorithm = "auto"
    if skipped:
        warnings.warn("fastconv.convert left these layers on torch's kernels: " + ", ".join(skipped),
                      stacklevel=2)
    return root
