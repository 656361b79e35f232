"""Swap a model's torch.nn layers for their fastconv twins, in one line."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
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


def convert(module: nn.Module, inplace: bool = False, fuse: bool = False) -> nn.Module:
    """Return ``module`` with every ``torch.nn`` Conv2d, MaxPool2d, ReLU and Dropout replaced by
    its fastconv twin.

    The twins subclass the originals and keep their parameters, buffers, hooks, train/eval mode
    and ``state_dict`` keys: the swap changes only which kernels ``forward`` runs. Layers are found
    recursively through Sequential, ModuleList, ModuleDict and custom modules. A layer fastconv
    cannot serve (say, a Conv2d in int8) is left as it is, with a warning naming it.

    With ``fuse=True``, every Conv2d immediately followed by a ReLU inside an ``nn.Sequential``
    (nested ones included) becomes a :class:`fastconv.nn.Conv2dReLU` at the conv's index, and
    the ReLU becomes ``nn.Identity``: bias and ReLU then run in the convolution kernels'
    epilogue, with no separate pass over the activation. Indices and ``state_dict`` keys stay
    as they were (ReLU and Identity hold no state), so checkpoints load either way. Only
    pairs in a Sequential are fused, where the conv's output cannot reach anything but the
    ReLU; pairs with forward hooks on either layer are left apart, since fusing would
    change what those hooks see.

    Args:
        module: the model (or a single layer).
        inplace: convert ``module`` itself instead of a deep copy.
        fuse: also fuse Conv2d + ReLU pairs of Sequentials into Conv2dReLU.
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
    if fuse:
        _fuse_conv_relu(root)
    return root


def _has_hooks(layer: nn.Module) -> bool:
    return bool(layer._forward_hooks or layer._forward_pre_hooks)


def _fuse_conv_relu(root: nn.Module) -> None:
    """Turns each (fastconv Conv2d, fastconv ReLU) neighbour pair of every Sequential into
    (Conv2dReLU, Identity), in place. Layers left on torch's kernels are not fused, nor is a
    conv registered in several places (its other uses may not be followed by a ReLU)."""
    uses = Counter(id(child) for parent in root.modules() for child in parent._modules.values())
    for sequential in [m for m in root.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        for i in range(len(layers) - 1):
            conv, relu = layers[i], layers[i + 1]
            if type(conv) is not fnn.Conv2d or type(relu) is not fnn.ReLU or uses[id(conv)] > 1:
                continue
            if _has_hooks(conv) or _has_hooks(relu):
                continue
            conv.__class__ = fnn.Conv2dReLU
            sequential[i + 1] = nn.Identity()
