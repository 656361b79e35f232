"""Whole-model rows: convnet4 on fastconv's layers against the same network on torch.nn's.

The torch twin is a deep copy of the fastconv model with each layer's class set back to the
``torch.nn`` class it subclasses, so both hold the same weights and run the same Linear,
Flatten and loss; only the convolution, pooling, ReLU and dropout kernels differ. A third
contender is the fastconv model with Conv2d + ReLU pairs fused (``fastconv.convert(fuse=True)``).

* ``step`` (batch 32): forward and loss (BCE with logits), backward, SGD update with momentum,
  timed as three phases of one repetition; the gradients of the previous step are dropped
  first, untimed.
* ``infer`` (batch 1): ``eval()`` forward under ``no_grad``: latency of one image.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import fastconv
from fastconv import models
from fastconv import nn as fnn

from .cases import Case
from .ops import Context, tf32_twins, torch_conv_impls
from .timing import Candidate, Laps

_TORCH_CLASS = {fnn.Conv2dReLU: None, fnn.Conv2d: nn.Conv2d, fnn.MaxPool2d: nn.MaxPool2d,
                fnn.ReLU: nn.ReLU, fnn.Dropout: nn.Dropout}


def torch_twin(model: nn.Module) -> nn.Module:
    """A copy of a fastconv model on torch.nn's layers, with the same parameters."""
    twin = copy.deepcopy(model)
    for layer in twin.modules():
        if type(layer) in _TORCH_CLASS:
            if _TORCH_CLASS[type(layer)] is None:
                raise ValueError("torch_twin: a fused Conv2dReLU has no single torch.nn twin")
            layer.__class__ = _TORCH_CLASS[type(layer)]
    return twin


def contenders(case: Case, device: str) -> Tuple[Dict[str, nn.Module], Dict[str, nn.Module], Dict[str, Context],
                                                List[Tuple[str, str]]]:
    """(ours, theirs, the settings each runs under, the (ours, theirs) pairs to report): fastconv's
    convnet4, fused and not, and its torch twin; on a GPU each under TF32 off and on."""
    dev = "cuda" if device == "cuda" else "cpu"
    base = models.convnet4(image_size=case.shape[1:]).to(dev)
    ours = {"fastconv": base, "fastconv-fused": fastconv.convert(base, fuse=True)}
    impls = torch_conv_impls(dev)
    twin = torch_twin(base)
    theirs = {name: twin for name in impls}
    if "cudnn-tf32" in impls:
        ours, contexts, pairs = tf32_twins(ours)
        return ours, theirs, {**impls, **contexts}, pairs
    return ours, theirs, dict(impls), [(o, t) for o in ours for t in theirs]


def flops(case: Case) -> Dict[str, float]:
    """Flops of the model's convolutions and matrix products (torch's count, on one image,
    times the batch): the forward pass for ``infer``, forward and backward for ``step``."""
    model = torch_twin(models.convnet4(image_size=case.shape[1:]))
    x = torch.randn(1, *case.shape)
    counter = FlopCounterMode(display=False)
    if case.params["mode"] == "infer":
        model.eval()
        with counter, torch.no_grad():
            model(x)
    else:
        with counter:
            model(x).sum().backward()
    return {case.params["mode"]: float(counter.get_total_flops()) * case.batch}


def candidates(case: Case, device: str, ours: Dict[str, nn.Module], theirs: Dict[str, nn.Module],
               contexts: Dict[str, Context]) -> Dict[str, Candidate]:
    dev = "cuda" if device == "cuda" else "cpu"
    x = torch.randn(case.input_shape, device=dev)
    named = {name: (m, contexts.get(name)) for name, m in {**ours, **theirs}.items()}
    if case.params["mode"] == "infer":
        return {name: _infer(m, x, ctx) for name, (m, ctx) in named.items()}
    y = torch.randint(0, 2, (case.batch, 1), device=dev).float()
    # One optimiser per model: the TF32-off and TF32-on contenders of a side share its model.
    optimizers = {id(m): torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m, _ in named.values()}
    return {name: _step(m, optimizers[id(m)], x, y, ctx) for name, (m, ctx) in named.items()}


def _infer(model: nn.Module, x: torch.Tensor, context: Optional[Context]) -> Candidate:
    def run(laps: Laps) -> None:
        model.eval()
        with (context or contextlib.nullcontext)(), torch.no_grad():
            laps.start()
            out = model(x)
            laps.lap()
        del out
    return run


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          context: Optional[Context]) -> Candidate:
    def run(laps: Laps) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with (context or contextlib.nullcontext)():
            laps.start()
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            laps.lap()
            loss.backward()
            laps.lap()
            optimizer.step()
            laps.lap()
    return run

