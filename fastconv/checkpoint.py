"""Checkpoints that carry everything needed to rebuild a model and its preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from .models import MODELS


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    if name == "vgg16":
        return MODELS[name](num_classes=num_classes)
    return MODELS[name](num_classes=num_classes, image_size=image_size)


def save(path: Path, model: nn.Module, meta: Dict[str, Any], **extra: Any) -> None:
    """Write ``model``'s weights with ``meta`` (model name, num_classes, image_size, classes)."""
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    torch.save({"state_dict": module.state_dict(), "meta": meta, **extra}, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Tuple[nn.Module, Dict[str, Any], Dict]:
    """(model in eval mode, meta, the whole checkpoint dict) from a file written by :func:`save`."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt["meta"]
    model = build_model(meta["model"], meta["num_classes"], meta["image_size"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), meta, ckpt


def predict_proba(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes) from a one-logit (sigmoid) or multi-logit (softmax) head."""
    logits = model(images)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)
